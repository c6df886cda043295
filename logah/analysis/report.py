"""``logah report``: one self-contained HTML dashboard of one or more study folders.

    logah report runs/studies/rank-sweep -o report.html
    write_report(["runs/studies/rank-sweep"], "report.html")   # the same from Python

The file embeds plotly.js (about 4.6 MB), so it opens anywhere without a network, e.g. on a
laptop after copying it off a cluster. Per study it shows a header (the question, the data, how
many trials, how long, which code on which machine), the panels of ``logah.analysis.figures``
and the trial table, sortable by clicking a column, failed trials included with their error. It
is written atomically, refuses an existing output unless asked to overwrite it, and never
replaces a study's own files.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from plotly.offline import get_plotlyjs

from logah.analysis.figures import Panel, study_panels
from logah.analysis.labels import direction, metric_scale, setting_label, value_label
from logah.analysis.tables import (GHNS_DIR, STATUS_COMPLETE, STATUS_FAILED, STEPS_FILE, STUDY_FILE,
                                   TRIALS_FILE, Study, load_studies)
from logah.errors import LogahError
from logah.init_kinds import GHN_INITS
from logah.io import atomic_file, check_replaceable

REPORT_FILE = "report.html"
_TABLE_VALUES = ("zero_shot", "best", "final", "test")
_TABLE_TIMES = ("ghn_params", "ghn_train_s", "finetune_wall_s", "wall_s")
_GHN_SETTING = "ghn_training."
# what a study folder holds besides its report (``logah.study``): never an output of the report
_STUDY_OWN = {STUDY_FILE, TRIALS_FILE, "trials.csv", STEPS_FILE, "optuna.db", "trials", GHNS_DIR,
              "tune"}


def write_report(study_dirs: Iterable[str | Path], out: str | Path | None = None,
                 overwrite: bool = False) -> Path:
    """Write the dashboard of the given study folders to ``out`` (default: ``report.html`` in
    the first study folder) and return its path.

    An existing ``out`` is refused unless ``overwrite`` (``logah report --overwrite``). Even
    with it, ``out`` may not be a folder, nor one of a study folder's own files (``study.json``,
    the tables, ``trials/``, ``ghns/``, ...; any study folder, given or not): a report written
    there would destroy the study. Its ``report.html`` is the one file of a study folder a
    report may replace. Both are checked before anything is rendered."""
    studies = load_studies(study_dirs)
    out = Path(out) if out is not None else studies[0].path / REPORT_FILE
    _check_output(out, studies)
    check_replaceable(out, "file", overwrite)
    if out.is_file() and not _is_html(out):   # --overwrite replaces a report, not any file
        raise LogahError(f"--overwrite would replace {out}, which is not an HTML report; remove it "
                         f"yourself or write the report elsewhere")
    text = render_report(studies)
    atomic_file(out, lambda tmp: tmp.write_text(text), overwrite=overwrite)
    return out


def _is_html(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(64).lstrip().lower().startswith((b"<!doctype html", b"<html"))


def _check_output(out: Path, studies: list[Study]) -> None:
    """Refuse an output that is a study's own file (see ``write_report``)."""
    resolved = out.resolve()
    stores = {Path(s.meta["ghn_store"]).resolve() for s in studies
              if isinstance(s.meta.get("ghn_store"), str) and s.meta["ghn_store"]}
    for store in stores:   # a GHN store shared through --ghn-store lives outside the study
        if resolved == store or store in resolved.parents:
            raise LogahError(f"output {out} is inside the GHN store {store} of a study; write the "
                             f"report elsewhere")
    for folder in [resolved, *resolved.parents]:
        if not (folder / STUDY_FILE).is_file():
            continue
        if resolved == folder:
            break   # a folder: check_replaceable says so
        own = resolved.relative_to(folder).parts[0]
        if own in _STUDY_OWN or own.startswith("."):
            raise LogahError(f"output {out} is a file of the study folder {folder} ({own}); a "
                             f"report may replace only {folder / REPORT_FILE}, or go elsewhere")


def render_report(studies: list[Study]) -> str:
    names = ", ".join(s.name for s in studies)
    body = "\n".join(_study_section(s) for s in studies)
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<li><a href="#{_anchor(s, "")}">{html.escape(s.name)}</a></li>' for s in studies)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LoGAH study report: {html.escape(names)}</title>
<style>{_CSS}</style>
<script>{get_plotlyjs()}</script>
</head><body>
<h1>LoGAH study report</h1>
<p class="meta">Generated {generated} by <code>logah report</code>.
{"Studies: <ul class='toc'>" + nav + "</ul>" if len(studies) > 1 else ""}</p>
{body}
<script>{_SORT_JS}</script>
</body></html>
"""


def _study_section(study: Study) -> str:
    panels = study_panels(study)
    shown = [p for p in panels if p.shown]
    missing = [p for p in panels if not p.shown]
    toc = "".join(f'<li><a href="#{_anchor(study, p.key)}">{html.escape(p.title)}</a></li>'
                  for p in shown)
    toc += f'<li><a href="#{_anchor(study, "trials")}">Trial table</a></li>'
    notes = "".join(f"<li>{html.escape(p.title)}: {html.escape(p.note or '')}</li>" for p in missing)
    return f"""<section class="study" id="{_anchor(study, '')}">
<h2>Study {html.escape(study.name)}</h2>
{_header(study)}
<nav><ol>{toc}</ol></nav>
{"".join(_panel_html(study, p) for p in shown)}
{f'<div class="notes"><h3>Not shown</h3><ul>{notes}</ul></div>' if notes else ""}
{_trial_table(study)}
</section>"""


def _header(study: Study) -> str:
    meta, trials = study.meta, study.trials
    counts = trials["status"].value_counts()
    statuses = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
    datasets = sorted(trials["dataset"].dropna().astype(str).unique())
    facts = [
        ("Question", meta.get("question")),
        ("Script", f"studies/{meta['script']}.py, preset {meta.get('preset')}" if meta.get("script") else None),
        ("Data", ", ".join(datasets) or meta.get("dataset")),
        ("Targets", ", ".join(sorted(trials["target"].unique()))),
        ("Trials", f"{len(trials)} ({statuses})"),
        ("Swept", ", ".join(setting_label(s) for s in meta.get("swept", [])) or None),
        ("Objectives", "; ".join(_objective(o) for o in study.objectives)),
        ("Search", f"{meta.get('search', '?')}" + (f", scheduler {meta['scheduler']}"
                                                    if meta.get("scheduler") else "")),
        ("Started", meta.get("started_at")),
        ("Finished", meta.get("finished_at") or "still running (or interrupted)"),
        ("Duration", _total_duration(meta)),
        *_provenance(meta),
        ("Folder", str(study.path.resolve())),
    ]
    rows = "".join(f'<dt>{k}</dt><dd{" class=warning" if k == "Warning" else ""}>'
                   f'{html.escape(str(v))}</dd>' for k, v in facts if v is not None)
    return f'<dl class="facts">{rows}</dl>'


def _provenance(meta: dict) -> list[tuple[str, str | None]]:
    """Header lines for the code, the package versions, the machine and the runs (segments) of
    the study, from study.json's ``provenance`` and ``segments`` where the study has them (a
    study run before they were recorded has neither, and shows none of these lines). The
    record is read defensively: a field of the wrong type is left out, never an error."""
    provenance = _dict(meta.get("provenance"))
    code, versions, machine = (_dict(provenance.get(k)) for k in ("code", "versions", "machine"))
    runs = meta.get("segments")
    segments = [s for s in runs if isinstance(s, dict)] if isinstance(runs, list) else []
    lines: list[tuple[str, str | None]] = [("Code", _code(code))]
    commits = list(dict.fromkeys(str(s["commit"]) for s in segments if s.get("commit")))
    if len(commits) > 1:
        lines.append(("Warning", f"the runs of this study used different code: commits "
                                 f"{', '.join(_short_commit(c) for c in commits)}; trials of "
                                 f"different runs may not be comparable"))
    elif len(segments) > 1 and any(s.get("dirty") is True for s in segments):
        lines.append(("Warning", "the study was resumed with uncommitted changes: its runs may "
                                 "have used different code"))
    if len(segments) > 1 or (segments and not code):
        lines.append(("Runs", "; ".join(_segment(i, s) for i, s in enumerate(segments))))
    names = {"python": "Python", "torch": "PyTorch", "ray": "Ray", "optuna": "Optuna",
             "transformers": "Transformers"}
    shown = [f"{names.get(k, k)} {v}" for k, v in versions.items() if isinstance(v, (str, int, float))]
    lines.append(("Versions", ", ".join(shown) or None))
    lines.append(("Machine", _machine(machine)))
    return lines


def _total_duration(meta: dict) -> str | None:
    """The study's wall time: the sum over its runs when it was resumed (``wall_s`` is the total)."""
    total = _duration(meta.get("wall_s"))
    runs = meta.get("segments")
    if total and isinstance(runs, list) and len(runs) > 1:
        return f"{total} in total over {len(runs)} runs"
    return total


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _short_commit(commit) -> str:
    return str(commit)[:12]


def _code(code: dict) -> str | None:
    if not code.get("commit"):
        return None
    text = f"commit {_short_commit(code['commit'])}"
    if code.get("dirty") is True:
        text += " with uncommitted changes"
    elif code.get("dirty") is False:
        text += " (clean)"
    if code.get("snapshot"):
        text += f"; trials ran from {code['snapshot']}"
    return text


def _segment(index: int, segment: dict) -> str:
    what = "run" if index == 0 else "resumed"
    when = " to ".join(str(segment[k]) for k in ("started_at", "finished_at") if segment.get(k))
    wall_s = segment.get("wall_s")
    details = [d for d in (_duration(wall_s) if isinstance(wall_s, (int, float)) else None,
                           f"commit {_short_commit(segment['commit'])}" if segment.get("commit") else None,
                           "with uncommitted changes" if segment.get("dirty") is True else None) if d]
    return f"{what} {when or '(time not recorded)'}" + (f" ({', '.join(details)})" if details else "")


def _machine(machine: dict) -> str | None:
    parts = []
    if machine.get("hostname"):
        parts.append(str(machine["hostname"]))
    if isinstance(machine.get("cpus"), int):
        model = f" ({machine['cpu']})" if machine.get("cpu") else ""
        parts.append(f"{machine['cpus']} CPU{'s' if machine['cpus'] != 1 else ''}{model}")
    gpus = machine.get("gpus")
    if isinstance(gpus, list):
        if gpus:
            counts: dict[str, int] = {}
            for gpu in gpus:
                counts[str(gpu)] = counts.get(str(gpu), 0) + 1
            parts.append(", ".join(f"{n} × {name}" if n > 1 else name for name, n in counts.items()))
        else:
            parts.append("no GPU")
    if isinstance(machine.get("memory_gib"), (int, float)) and not isinstance(machine["memory_gib"], bool):
        parts.append(f"{machine['memory_gib']:.1f} GiB memory")
    if machine.get("platform"):
        parts.append(str(machine["platform"]))
    return ", ".join(parts) or None


def _objective(objective) -> str:
    what = value_label(objective.column, objective.metric, unit=False) if objective.metric \
        else setting_label(objective.column)
    percent = "%; " if objective.metric and metric_scale(objective.metric) != 1 else ""
    return f"{what} ({percent}{direction(objective.mode)})"


def _panel_html(study: Study, panel: Panel) -> str:
    if panel.figure is None:
        div = _summary_table(panel)
    else:
        div = panel.figure.to_html(full_html=False, include_plotlyjs=False,
                                   div_id=_anchor(study, panel.key) + "-plot",
                                   config={"displaylogo": False, "responsive": True})
    return f"""<section class="panel" id="{_anchor(study, panel.key)}">
<h3>{html.escape(panel.title)}</h3>
<p class="caption">{html.escape(panel.caption)}</p>
{div}
</section>"""


def _summary_table(panel: Panel) -> str:
    """A table panel (display strings); the best cell of each column in bold."""
    table = panel.table
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=best" if (i, c) in panel.highlight else ""}>'
                         f"{html.escape(str(v))}</td>" for c, v in row.items()) + "</tr>"
        for i, (_, row) in enumerate(table.iterrows()))
    return (f'<div class="scroll"><table class="summary"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _trial_table(study: Study) -> str:
    trials = study.trials
    # the init label says what finetune.init says, and more; the target column what a swept
    # finetune.target (preset names) says
    settings = [c for c in study.meta.get("swept", [])
                if c in trials and c not in ("finetune.init", "finetune.target")]
    columns = ["trial_id", "status", "error", "target", "init_label", *settings,
               *[c for c in ("metric", *_TABLE_VALUES, *_TABLE_TIMES) if c in trials]]
    head = "".join(f'<th title="{html.escape(c)}">{html.escape(_column_title(c))}</th>'
                   for c in columns)
    body = []
    for _, row in trials.iterrows():
        scale = metric_scale(str(row.get("metric", "")))
        unused = _GHN_SETTING if row.get("finetune.init") not in GHN_INITS else "\0"
        cells = "".join('<td data-sort="" class="na" title="not used by this init">–</td>'
                        if c.startswith(unused) else _ghn_time_cell(row) if c == "ghn_train_s"
                        else _cell(c, row[c], scale) for c in columns)
        css = {STATUS_COMPLETE: "", STATUS_FAILED: "failed"}.get(row["status"], "other")
        body.append(f'<tr class="{css}">{cells}</tr>')
    variant = ('; "init variant" is the study\'s own name of the choice'
               if any(_column_title(c) == "init variant" for c in columns) else "")
    return f"""<section class="panel" id="{_anchor(study, 'trials')}">
<h3>Trial table</h3>
<p class="caption">One row per trial; click a column to sort. Accuracies in %, perplexities as
they are; times in seconds; "–" where a value does not apply (a GHN setting of a baseline init)
or was not recorded. "Initialisation" is the paper's name of the init (with the GHN's preset and
meta-batch){variant}. "GHN training s" is the time the trial's GHN took to train, the same for
every trial that used that GHN; "reused" marks trials that loaded it from the GHN store instead
of training it. Failed trials are shaded red, with their error (click it for the whole text).</p>
<div class="scroll"><table class="trials sortable"><thead><tr>{head}</tr></thead>
<tbody>{"".join(body)}</tbody></table></div>
</section>"""


def _cell(column: str, value, scale: float) -> str:
    if column == "error":
        text = str(value or "")
        if not text:
            return '<td data-sort=""></td>'
        summary = text.strip().splitlines()[-1] if text.strip() else text   # a traceback ends with it
        return (f'<td class="error" data-sort="{html.escape(summary)}"><details><summary>'
                f'{html.escape(summary[:120])}</summary><pre>{html.escape(text)}</pre></details></td>')
    if _missing(value):
        return '<td data-sort="" class="na">–</td>'
    if isinstance(value, (bool, np.bool_)):
        return f'<td data-sort="{int(value)}">{"yes" if value else "no"}</td>'
    if isinstance(value, (int, float, np.number)):
        shown = float(value) * scale if column in _TABLE_VALUES else float(value)
        text = f"{shown:,.0f}" if shown.is_integer() and column not in _TABLE_VALUES else f"{shown:.4g}"
        return f'<td class="num" data-sort="{shown!r}">{text}</td>'
    return f'<td data-sort="{html.escape(str(value))}">{html.escape(str(value))}</td>'


def _ghn_time_cell(row) -> str:
    """The GHN's training time, marked when this trial reused the GHN rather than training it."""
    value = row.get("ghn_train_s")
    if _missing(value):
        return '<td data-sort="" class="na">–</td>'
    reused = bool(row.get("ghn_reused")) if not _missing(row.get("ghn_reused")) else False
    mark = (' <span class="reused" title="trained once by another trial; this one loaded it '
            'from the GHN store">reused</span>' if reused else "")
    return f'<td class="num" data-sort="{float(value)!r}">{float(value):,.1f}{mark}</td>'


def _column_title(column: str) -> str:
    titles = {"trial_id": "trial", "init_label": "initialisation", "zero_shot": "zero-shot",
              "ghn_params": "GHN params", "ghn_train_s": "GHN training s",
              "finetune_wall_s": "fine-tune s", "wall_s": "total s"}
    return titles.get(column) or setting_label(column)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _duration(seconds) -> str | None:
    if _missing(seconds):
        return None
    minutes, secs = divmod(int(round(float(seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _anchor(study: Study, key: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in study.name.lower())
    return f"{slug}-{key}" if key else slug


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto;
       max-width: 1400px; padding: 0 1rem; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; }
.meta { color: #666; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
nav ol { columns: 2; color: #444; }
section.panel { margin: 1.5rem 0; } .caption { color: #444; max-width: 75rem; }
.notes { color: #666; }
.scroll { overflow-x: auto; }
table.trials { border-collapse: collapse; font-size: 0.85rem; }
table.trials th { position: sticky; top: 0; background: #f3f3f3; cursor: pointer;
                  padding: 0.3rem 0.4rem; border-bottom: 2px solid #ccc; min-width: 3rem;
                  max-width: 7rem; vertical-align: bottom; }
table.trials th.asc::after { content: " \\25B2"; } table.trials th.desc::after { content: " \\25BC"; }
table.trials td { padding: 0.2rem 0.4rem; border-bottom: 1px solid #eee; vertical-align: top;
                  white-space: nowrap; }
table.trials td.na { color: #999; text-align: center; }
table.trials td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.trials tr.failed { background: #fde8e8; } table.trials tr.other { background: #fff8e0; }
table.trials td.error { white-space: normal; min-width: 10rem; max-width: 18rem; }
td.error summary { cursor: pointer; color: #a00; } td.error pre { white-space: pre-wrap; max-width: 60rem; }
table.trials span.reused { color: #777; font-size: 0.75rem; }
dl.facts dd.warning { color: #a00; font-weight: 600; }
table.summary { border-collapse: collapse; font-size: 0.9rem; }
table.summary th { background: #f3f3f3; padding: 0.3rem 0.6rem; border-bottom: 2px solid #ccc;
                   text-align: left; white-space: nowrap; }
table.summary td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #eee; white-space: nowrap;
                   font-variant-numeric: tabular-nums; }
table.summary td.best { font-weight: 700; }
"""

# Click a header to sort its column: numbers numerically, empty cells last, again to reverse.
_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, index) {
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[index].dataset.sort, y = b.cells[index].dataset.sort;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = Number(x), ny = Number(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""
