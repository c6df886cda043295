"""``logah report``: one self-contained HTML dashboard of one or more study folders.

    logah report runs/studies/rank-sweep -o report.html
    write_report(["runs/studies/rank-sweep"], "report.html")   # the same from Python

The file embeds plotly.js (about 4.6 MB), so it opens anywhere without a network, e.g. on a
laptop after copying it off a cluster. Per study it shows a header (the question, the data, how
many trials, how long), the panels of ``logah.analysis.figures`` and the trial table, sortable by
clicking a column, failed trials included with their error. It is written atomically.
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
from logah.analysis.tables import STATUS_COMPLETE, STATUS_FAILED, Study, load_studies
from logah.init_kinds import GHN_INITS
from logah.io import atomic_write_text

REPORT_FILE = "report.html"
_TABLE_VALUES = ("zero_shot", "best", "final", "test")
_TABLE_TIMES = ("ghn_params", "ghn_wall_s", "finetune_wall_s", "wall_s")
_GHN_SETTING = "ghn_training."


def write_report(study_dirs: Iterable[str | Path], out: str | Path | None = None) -> Path:
    """Write the dashboard of the given study folders to ``out`` (default: ``report.html`` in
    the first study folder) and return its path."""
    studies = load_studies(study_dirs)
    out = Path(out) if out is not None else studies[0].path / REPORT_FILE
    atomic_write_text(out, render_report(studies))
    return out


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
    shown = [p for p in panels if p.figure is not None]
    missing = [p for p in panels if p.figure is None]
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
    primary = study.primary
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
        ("Duration", _duration(meta.get("wall_s"))),
        ("Folder", str(study.path.resolve())),
    ]
    rows = "".join(f"<dt>{k}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts if v is not None)
    return f'<dl class="facts">{rows}</dl>'


def _objective(objective) -> str:
    what = value_label(objective.column, objective.metric) if objective.metric \
        else setting_label(objective.column)
    return f"{what} ({direction(objective.mode)})"


def _panel_html(study: Study, panel: Panel) -> str:
    div = panel.figure.to_html(full_html=False, include_plotlyjs=False,
                               div_id=_anchor(study, panel.key) + "-plot",
                               config={"displaylogo": False, "responsive": True})
    return f"""<section class="panel" id="{_anchor(study, panel.key)}">
<h3>{html.escape(panel.title)}</h3>
<p class="caption">{html.escape(panel.caption)}</p>
{div}
</section>"""


def _trial_table(study: Study) -> str:
    trials = study.trials
    # the init label says what finetune.init says, and more
    settings = [c for c in study.meta.get("swept", []) if c in trials and c != "finetune.init"]
    columns = ["trial_id", "status", "error", "target", "init_label", *settings,
               *[c for c in ("metric", *_TABLE_VALUES, *_TABLE_TIMES) if c in trials]]
    head = "".join(f'<th title="{html.escape(c)}">{html.escape(_column_title(c))}</th>'
                   for c in columns)
    body = []
    for _, row in trials.iterrows():
        scale = metric_scale(str(row.get("metric", "")))
        unused = _GHN_SETTING if row.get("finetune.init") not in GHN_INITS else "\0"
        cells = "".join('<td data-sort="" class="na" title="not used by this init">–</td>'
                        if c.startswith(unused) else _cell(c, row[c], scale) for c in columns)
        css = {STATUS_COMPLETE: "", STATUS_FAILED: "failed"}.get(row["status"], "other")
        body.append(f'<tr class="{css}">{cells}</tr>')
    return f"""<section class="panel" id="{_anchor(study, 'trials')}">
<h3>Trial table</h3>
<p class="caption">One row per trial; click a column to sort. Accuracies in %, perplexities as
they are; times in seconds; "–" where a value does not apply (a GHN setting of a baseline init)
or was not recorded. Failed trials are shaded red, with their error (click it for the whole
text).</p>
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


def _column_title(column: str) -> str:
    titles = {"trial_id": "trial", "init_label": "init", "zero_shot": "zero-shot",
              "ghn_params": "GHN params", "ghn_wall_s": "GHN s", "finetune_wall_s": "fine-tune s",
              "wall_s": "total s"}
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
                  white-space: nowrap; padding: 0.3rem 0.5rem; border-bottom: 2px solid #ccc; }
table.trials th.asc::after { content: " \\25B2"; } table.trials th.desc::after { content: " \\25BC"; }
table.trials td { padding: 0.2rem 0.5rem; border-bottom: 1px solid #eee; vertical-align: top;
                  white-space: nowrap; }
table.trials td.na { color: #999; text-align: center; }
table.trials td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.trials tr.failed { background: #fde8e8; } table.trials tr.other { background: #fff8e0; }
table.trials td.error { white-space: normal; min-width: 10rem; max-width: 24rem; }
td.error summary { cursor: pointer; color: #a00; } td.error pre { white-space: pre-wrap; max-width: 60rem; }
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
