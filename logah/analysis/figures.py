"""The report's panels: one plotly figure per question a study asks of its trials.

    for panel in study_panels(load_study("runs/studies/rank-sweep")):
        panel.figure.show() if panel.figure else print(panel.title, panel.note)

Each function takes a loaded ``Study`` and returns ``Panel``s: a title, a caption that says
how to read the figure, and the figure, or a ``note`` saying why the study has no data for it
(a baseline-only study has no GHN curves and no Pareto front). Quality is always the study's
primary objective column (``best`` unless the study says otherwise), in the metric each trial
reports: a study over ViT and GPT-2 targets mixes accuracy and perplexity, so every figure that
shows quality has one subplot per target. Only completed trials enter means; the trial table of
the report is where failures show.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from logah.analysis.labels import direction, metric_label, metric_scale, setting_label, value_label
from logah.analysis.stats import (PANEL_MEAN, aggregate_seeds, at_best_setting_per_target,
                                  pareto_front)
from logah.analysis.tables import Study, is_target_setting, load_optuna_study
from logah.errors import LogahError
from logah.init_kinds import GHN_INITS, INIT_KINDS, PAPER_NAMES

TEMPLATE = "plotly_white"
PANEL_HEIGHT = 420
ROW_HEIGHT = 340          # each further row of subplots
MAX_COLUMNS = 4           # subplots per row: a panel of 8 targets wraps instead of squeezing
GHN_PREFIX = "ghn_training."
NO_GHN = " (no GHN)"
LR = "finetune.lr"


@dataclass
class _Plot:
    """A figure being drawn: the study's colours and the legend entries already shown (a label
    gets one legend entry, however many subplots it appears in)."""

    fig: go.Figure
    colours: dict[str, str]
    shown: set[str] = field(default_factory=set)

    def first(self, name: str) -> bool:
        """Whether ``name`` still needs its legend entry (and mark it as given)."""
        new = name not in self.shown
        self.shown.add(name)
        return new


@dataclass
class Panel:
    """One block of the report: what the figure shows and how to read it, or why it is absent."""

    key: str                          # HTML anchor, unique within a study
    title: str
    caption: str
    figure: go.Figure | None = None
    note: str | None = None           # set instead of ``figure`` when the data has no such panel
    table: pd.DataFrame | None = None  # a table of display strings, shown instead of a figure
    highlight: set[tuple[int, str]] = field(default_factory=set)   # (row position, column): bold

    @property
    def shown(self) -> bool:
        """Whether the panel has something to show (a figure or a table), else its ``note``."""
        return self.figure is not None or self.table is not None


def study_panels(study: Study) -> list[Panel]:
    """All panels of one study, in the report's order."""
    return [*swept_vs_quality(study), *best_setting_tables(study), finetune_curves(study),
            ghn_curves(study), *parallel_coordinates(study), pareto(study), importances(study)]


# -- the swept setting against quality ------------------------------------------------------------

def swept_vs_quality(study: Study, settings: list[str] | None = None) -> list[Panel]:
    """One panel per swept setting (or per one of ``settings``): mean quality over seeds with
    error bars, a subplot per target. A panel of targets that share a metric gets one more
    subplot, the mean over the panel (``at_best_setting_per_target``). A setting of the target
    itself (``finetune.target``, ``finetune.target.hidden_dim``) has a subplot per metric
    instead, its targets along x, so that they can be compared."""
    done = study.completed
    title = "Swept settings against quality"
    if not study.settings:
        return [Panel("swept", title, "", note="the study sweeps no setting besides seeds")]
    if done.empty:
        return [Panel("swept", title, "", note="no trial completed")]
    unknown = [s for s in settings or [] if s not in study.trials]
    if unknown:
        raise LogahError(f"study {study.name!r} has no setting(s) {unknown}; it sweeps {study.settings}")
    panels = []
    for setting in settings or study.settings:
        x_column = "init_label" if _is_init_setting(setting, study.trials) else setting
        tried = done[x_column].nunique()
        if tried < 2:   # the other values failed (or the study was cut short): nothing to compare
            values = [_fmt(v) for v in study.trials[x_column].dropna().drop_duplicates().sort_values()]
            panels.append(Panel(f"swept-{_slug(setting)}", _title_case(_x_label(setting, x_column)), "",
                                note=f"only {tried} of its values ({', '.join(values)}) has completed "
                                     f"trials"))
            continue
        panels.append(_swept_panel(study, setting, x_column))
    return panels


def _swept_panel(study: Study, setting: str, x_column: str) -> Panel:
    done = study.completed
    column = study.primary.column
    series = _init_series(study)
    by_metric = is_target_setting(setting)
    cells = _quality_cells(study, done, by_metric=by_metric, panel_means=not by_metric)
    by_init = x_column == "init_label"   # each init at its own x, in its own colour
    plot = _Plot(_subplots([c.title for c in cells]), _colours(done["init_label" if by_init else series]))
    for cell in cells:
        rows, at = cell.rows, cell.at
        metric, mode = _metric(rows, study)
        scale = metric_scale(metric)
        groups = list(rows.groupby("init_label" if by_init else series))
        if cell.panel:
            _panel_means(plot, rows, groups, setting, x_column, series, column, mode, scale,
                         study.seeds, at)
        else:
            for label, group in groups:
                if setting.startswith(GHN_PREFIX) and not _uses_ghn(group):
                    # a baseline init does not depend on a GHN setting: a reference band
                    _reference_band(plot, group, column, scale, rows[setting], label, at)
                else:
                    _mean_with_spread(plot, group, x_column, column, scale, label, at)
        _x_axis(plot.fig, rows[x_column], _x_label(setting, x_column), at)
        if by_init:   # baselines first, as in the paper's tables
            order = sorted(rows["init_label"].unique(), key=lambda label: _init_order(label, rows))
            plot.fig.update_xaxes(categoryorder="array", categoryarray=order, **_at(at))
        plot.fig.update_yaxes(title_text=value_label(column, metric), **_at(at))
    plot.fig.update_layout(showlegend=len(plot.shown) > 1)
    shown_by_series = {s for s in study.settings if _is_init_setting(s, study.trials)
                       or (series == "init_label" and _in_init_label(s))}
    others = [setting_label(s) for s in study.settings if s != setting and s not in shown_by_series
              and not (by_init and _in_init_label(s))
              and not (is_target_setting(s) and not by_metric)]
    caption = (f"Each point is the mean of the {column} fine-tuning metric over seeds"
               f"{' and over ' + ', '.join(others) if others else ''}; error bars are one "
               f"standard deviation, n is in the hover; faint dots are single trials.")
    if by_metric:
        caption += (" The targets differ in this setting, so targets with the same metric share "
                    "a subplot, this setting along x.")
    if any(c.panel for c in cells):
        caption += (f" {PANEL_MEAN.capitalize()}: for each replicate (the swept seeds), the "
                    f"metric averaged over the targets of one metric, then mean ± one standard "
                    f"deviation over replicates (a replicate missing a target is left out; n and "
                    f"the count left out are in the hover).")
    if any(name.endswith(NO_GHN) for name in plot.shown):
        caption += (" Dashed lines and bands: inits without a GHN (mean ± std), which this "
                    "setting does not affect.")
    return Panel(f"swept-{_slug(setting)}",
                 f"{_title_case(_x_label(setting, x_column))} against fine-tuned quality", caption,
                 _finish(plot.fig, height=_height(len(cells))))


def _x_label(setting: str, x_column: str) -> str:
    """An init setting is drawn by the paper's init names: "initialisation", whatever its name."""
    return setting_label("finetune.init" if x_column == "init_label" else setting)


@dataclass
class _Cell:
    """One subplot of quality: its title, its trials and where it is (row, col); ``panel``:
    the mean over a panel of targets rather than one target."""

    title: str
    rows: pd.DataFrame
    at: tuple[int, int] = (1, 1)
    panel: bool = False


def _quality_cells(study: Study, done: pd.DataFrame, by_metric: bool = False,
                   panel_means: bool = False) -> list[_Cell]:
    """The subplots of a quality figure: one per target, and after the targets of a metric
    that has several, their panel mean (``panel_means``); or one per metric (``by_metric``)."""
    metric_of = {t: _metric(rows, study)[0] for t, rows in done.groupby("target")}
    cells = []
    for metric in sorted(set(metric_of.values())):
        targets = sorted(t for t, m in metric_of.items() if m == metric)
        rows = done[done["target"].isin(targets)]
        direction_ = direction(_metric(rows, study)[1])
        if by_metric:
            cells.append(_Cell(f"{metric_label(metric, unit=False)} ({direction_})", rows))
            continue
        cells.extend(_Cell(f"{t} ({direction_})", done[done["target"] == t]) for t in targets)
        if panel_means and len(targets) > 1:
            cells.append(_Cell(f"{PANEL_MEAN}: {len(targets)} targets ({direction_})", rows,
                               panel=True))
    for i, cell in enumerate(cells):
        cell.at = _position(i, len(cells))
    return cells


def _panel_means(plot: _Plot, rows, groups, setting, x_column, series, column, mode, scale,
                 replicates, at) -> None:
    """The mean over the panel of targets in ``rows``, per series and x value: per replicate
    the mean over targets (each target's trials averaged as in its own subplot), then mean ±
    std over replicates."""
    xs = rows[x_column]
    for label, group in groups:
        reference = setting.startswith(GHN_PREFIX) and not _uses_ghn(group)
        by = [x_column] if not reference else []
        data = group.assign(__all=0)
        panel = at_best_setting_per_target(data, by=by, setting=x_column if by else "__all",
                                           choose_on=column, mode=mode, report=[column],
                                           replicates=replicates)
        panel = panel[(panel["target"] == PANEL_MEAN) & panel[f"{column}_mean"].notna()]
        if panel.empty:
            continue
        colour = plot.colours.get(label, PALETTE[0])
        mean, std = panel[f"{column}_mean"] * scale, panel[f"{column}_std"].fillna(0) * scale
        counts = np.stack([std, panel[f"{column}_count"], panel[f"{column}_left_out"]], axis=1)
        if reference:
            if xs.dropna().empty or not _is_numeric(xs):
                continue
            lo, hi, m, sd = float(xs.min()), float(xs.max()), float(mean.iloc[0]), float(std.iloc[0])
            name = f"{label}{NO_GHN}"
            plot.fig.add_trace(go.Scatter(
                x=[lo, hi, hi, lo], y=[m + sd, m + sd, m - sd, m - sd], fill="toself", mode="lines",
                fillcolor=colour, opacity=0.12, line={"width": 0}, hoverinfo="skip",
                legendgroup=name, showlegend=False), **_at(at))
            plot.fig.add_trace(go.Scatter(
                x=[lo, hi], y=[m, m], mode="lines", name=name, legendgroup=name,
                line={"color": colour, "dash": "dash"}, showlegend=plot.first(name),
                hovertemplate=f"{name}, {PANEL_MEAN}: {m:.4g} ± {sd:.3g} (n={counts[0, 1]:.0f} "
                              f"replicates, {counts[0, 2]:.0f} left out)<extra></extra>"), **_at(at))
            continue
        numeric = _is_numeric(xs)
        x = panel[x_column] if numeric else panel[x_column].astype(str)
        plot.fig.add_trace(go.Scatter(
            x=x, y=mean, error_y={"type": "data", "array": std.tolist(), "visible": True},
            mode="lines+markers" if numeric else "markers",
            marker={"size": 9, "color": colour, "symbol": "diamond"}, line={"color": colour},
            name=label, legendgroup=label, showlegend=plot.first(label), customdata=counts,
            hovertemplate="%{x}: %{y:.4g} ± %{customdata[0]:.3g} (n=%{customdata[1]} replicates, "
                          "%{customdata[2]} left out)<extra>" + f"{label}, {PANEL_MEAN}</extra>"),
            **_at(at))


def _mean_with_spread(plot: _Plot, rows, x_column, column, scale, label, at) -> None:
    points = rows[rows[column].notna()]
    if points.empty:
        return
    colour = plot.colours.get(label, PALETTE[0])
    agg = aggregate_seeds(points, by=[x_column], value=column)
    numeric = _is_numeric(points[x_column])
    std = agg[f"{column}_std"].fillna(0) * scale
    plot.fig.add_trace(go.Scatter(
        x=agg[x_column] if numeric else agg[x_column].astype(str), y=agg[f"{column}_mean"] * scale,
        error_y={"type": "data", "array": std.tolist(), "visible": True},
        mode="lines+markers" if numeric else "markers", marker={"size": 9, "color": colour},
        line={"color": colour}, name=label, legendgroup=label, showlegend=plot.first(label),
        customdata=np.stack([std, agg[f"{column}_count"]], axis=1),
        hovertemplate="%{x}: %{y:.4g} ± %{customdata[0]:.3g} (n=%{customdata[1]})<extra>" + label
                      + "</extra>"), **_at(at))
    plot.fig.add_trace(go.Scatter(
        x=points[x_column] if numeric else points[x_column].astype(str), y=points[column] * scale,
        mode="markers", marker={"size": 5, "color": colour, "opacity": 0.35}, name=label,
        legendgroup=label, showlegend=False, text=points["trial_id"],
        hovertemplate="trial %{text}: %{y:.4g}<extra></extra>"), **_at(at))


def _reference_band(plot: _Plot, rows, column, scale, xs, label, at) -> None:
    """A horizontal mean ± std band of ``rows`` across the x range of ``xs``."""
    values = rows[column].dropna() * scale
    if values.empty or xs.dropna().empty or not _is_numeric(xs):
        return
    name = f"{label}{NO_GHN}"
    colour = plot.colours.get(label, PALETTE[0])
    lo, hi = float(xs.min()), float(xs.max())
    if lo == hi:   # one x value (one GHN size): a band of no width would not show
        lo, hi = lo - 0.05 * abs(lo or 1), hi + 0.05 * abs(hi or 1)
    mean, std = float(values.mean()), float(values.std()) if len(values) > 1 else 0.0
    plot.fig.add_trace(go.Scatter(
        x=[lo, hi, hi, lo], y=[mean + std, mean + std, mean - std, mean - std], fill="toself", mode="lines",
        fillcolor=colour, opacity=0.12, line={"width": 0}, hoverinfo="skip", legendgroup=name,
        showlegend=False), **_at(at))
    plot.fig.add_trace(go.Scatter(
        x=[lo, hi], y=[mean, mean], mode="lines", name=name, legendgroup=name,
        line={"color": colour, "dash": "dash"}, showlegend=plot.first(name),
        hovertemplate=f"{name}: {mean:.4g} ± {std:.3g} (n={len(values)})<extra></extra>"),
        **_at(at))


# -- each group at its best learning rate, per target and over the panel -------------------------

def best_setting_tables(study: Study) -> list[Panel]:
    """When the fine-tuning lr is swept, or a metric has several targets (a panel): per metric,
    a table of each init (and each other compared setting) at its own best lr per target,
    chosen on the final validation metric and reported on test, with the mean over the panel
    (``at_best_setting_per_target``). Nothing when neither holds: the swept-settings figures
    say it all."""
    done = study.completed
    if done.empty or "final" not in done:
        return []
    lr_swept = LR in study.settings
    metric_of = {t: _metric(rows, study)[0] for t, rows in done.groupby("target")}
    panels = []
    for metric in sorted(set(metric_of.values())):
        targets = sorted(t for t, m in metric_of.items() if m == metric)
        if not lr_swept and len(targets) < 2:
            continue
        rows = done[done["target"].isin(targets)]
        panels.append(_best_setting_table(study, rows, metric, targets, lr_swept))
    return panels


def _best_setting_table(study: Study, rows: pd.DataFrame, metric: str, targets: list[str],
                        lr_swept: bool) -> Panel:
    _, mode = _metric(rows, study)
    scale = metric_scale(metric)
    report = "test" if "test" in rows and rows["test"].notna().any() else "final"
    others = [s for s in study.settings if s != LR and not is_target_setting(s)
              and not _is_init_setting(s, study.trials) and not _in_init_label(s)]
    by = ["init_label", *others]
    setting = LR if LR in rows else "__lr"
    data = rows if setting == LR else rows.assign(__lr=np.nan)
    result = at_best_setting_per_target(data, by=by, setting=setting, choose_on="final", mode=mode,
                                        report=[report], replicates=study.seeds)
    panel_column = f"{PANEL_MEAN} ({len(targets)} targets)"
    columns = targets + ([panel_column] if len(targets) > 1 else [])
    cells: dict[tuple, dict[str, str]] = {}
    means: dict[tuple, dict[str, float]] = {}
    for _, row in result.iterrows():
        group = tuple(row[c] for c in by)
        mean, std = row[f"{report}_mean"] * scale, row[f"{report}_std"] * scale
        count = row[f"{report}_count"]
        text = _value_text(mean, metric) + ("" if pd.isna(std) else f" ± {_value_text(std, metric)}")
        if row["target"] == PANEL_MEAN:
            if len(targets) < 2:
                continue
            left_out = int(row[f"{report}_left_out"])
            text += f" (n={int(count)}{f', {left_out} left out' if left_out else ''})"
            column = panel_column
        else:
            text += f" (n={int(count)})" + (f" at lr {_fmt(row[LR])}" if lr_swept else "")
            column = row["target"]
        cells.setdefault(group, {})[column] = text
        means.setdefault(group, {})[column] = mean
    order = sorted(cells, key=lambda g: _init_order(g[0], rows) + tuple(_fmt(v) for v in g[1:]))
    names = {"init_label": "init", **{s: setting_label(s) for s in others}}
    table = pd.DataFrame([{**{names[c]: _fmt(v) for c, v in zip(by, g)},
                           **{c: cells[g].get(c, "–") for c in columns}} for g in order])
    highlight = set()
    for column in columns:
        values = [(i, means[g].get(column, math.nan)) for i, g in enumerate(order)]
        values = [(i, v) for i, v in values if not math.isnan(v)]
        if len(values) > 1:
            best = (max if mode == "max" else min)(v for _, v in values)
            highlight |= {(i, column) for i, v in values if v == best}
    what = value_label(report, metric, unit=False)
    chosen = "its best learning rate" if lr_swept else "its learning rate"
    title = (f"Each init at {chosen}, per target"
             + (" and mean over the panel" if len(targets) > 1 else "")
             + f": {metric_label(metric, unit=False)}")
    caption = (f"Cells: the {what} ({direction(mode)}{', in %' if scale != 1 else ''}), mean ± "
               f"one standard deviation over seeds (n trials)")
    if lr_swept:
        caption += (f", at the fine-tuning learning rate whose mean final validation metric over "
                    f"seeds is best for that init and target (chosen on validation, "
                    f"{'never on test' if report == 'test' else 'so this figure is optimistic'})")
    caption += "."
    if len(targets) > 1:
        caption += (f" {PANEL_MEAN.capitalize()}: for each replicate (seed), the {report} metric "
                    f"averaged over the {len(targets)} targets, each at its own learning rate; "
                    f"then mean ± std over replicates (n replicates; a replicate missing a target "
                    f"is left out, and counted).")
    caption += " Bold: the best of each column."
    return Panel(f"best-lr-{_slug(metric)}", title, caption, table=table, highlight=highlight)


def _value_text(value: float, metric: str) -> str:
    if pd.isna(value):
        return "–"
    return f"{value:.2f}" if "accuracy" in metric else f"{value:.4g}"


_KINDS = [PAPER_NAMES[k] for k in INIT_KINDS]   # baselines, then GHN inits: the paper's row order


def _init_order(label: str, rows: pd.DataFrame) -> tuple:
    kinds = rows.loc[rows["init_label"] == label, "init_kind"]
    kind = kinds.iloc[0] if len(kinds) else ""
    return (_KINDS.index(kind) if kind in _KINDS else len(_KINDS), str(label))


# -- learning curves ------------------------------------------------------------------------------

def finetune_curves(study: Study) -> Panel:
    """Validation metric against fine-tuning step, mean over trials of each init, per target."""
    title = "Fine-tuning learning curves by initialisation"
    steps = _phase_steps(study, "finetune")
    done = study.completed
    targets = [t for t in sorted(done["target"].unique())
               if _metric(done[done["target"] == t], study)[0] in steps.columns
               and (steps["target"] == t).any()]
    if not targets:
        return Panel("finetune-curves", title, "", note="no fine-tuning steps were recorded")
    plot = _Plot(_subplots(targets), _colours(done["init_label"]))
    for i, target in enumerate(targets):
        at = _position(i, len(targets))
        metric, _ = _metric(done[done["target"] == target], study)
        for label, group in steps[steps["target"] == target].groupby("init_label"):
            _curve(plot, group, metric, metric_scale(metric), label, at)
        plot.fig.update_xaxes(title_text="fine-tuning step", **_at(at))
        plot.fig.update_yaxes(title_text=metric_label(metric), **_at(at),
                              **(_log_axis(steps.loc[steps["target"] == target, metric])
                                 if "perplexity" in metric else {}))
    caption = ("Validation metric during fine-tuning; step 0 is the initialisation as it is "
               "(zero-shot). Lines: mean over the completed trials of each init (all seeds and "
               "settings); bands: one standard deviation.")
    return Panel("finetune-curves", title, caption, _finish(plot.fig, height=_height(len(targets))))


def ghn_curves(study: Study) -> Panel:
    """GHN training loss (and held-out quality, where recorded) against step."""
    title = "GHN training curves"
    # every trained GHN once, from the trial that trained it, whether or not that trial's
    # fine-tuning completed: trials that reused a shared GHN carry copies of its curve
    trials = study.trials
    if "ghn_reused" in trials:
        trials = trials[~trials["ghn_reused"].fillna(False).astype(bool)]
    steps = _phase_steps(study, "ghn", trials)
    metrics = [m for m in ("loss", *sorted(c for c in steps.columns if c.startswith("heldout_")))
               if m in steps and steps[m].notna().any()]
    if not metrics:
        return Panel("ghn-curves", title, "", note="no trial trained a GHN (baseline inits only)")
    # one line per swept GHN setting (in numeric order: r=4, r=8, r=16), else per init
    by = [s for s in study.settings if s.startswith(GHN_PREFIX)] or ["init_label"]
    groups = [(_short_settings(dict(zip(by, key if isinstance(key, tuple) else (key,)))), group)
              for key, group in steps.groupby(by if len(by) > 1 else by[0])]
    plot = _Plot(_subplots([metric_label(m, unit=False) for m in metrics]),
                 _colours(label for label, _ in groups))
    for i, metric in enumerate(metrics):
        at = _position(i, len(metrics))
        for label, group in groups:
            _curve(plot, group.dropna(subset=[metric]), metric, metric_scale(metric), label, at)
        plot.fig.update_xaxes(title_text="GHN training step", **_at(at))
        log = metric == "loss" or "perplexity" in metric
        plot.fig.update_yaxes(title_text=metric_label(metric), **_at(at),
                              **(_log_axis(steps[metric]) if log else {}))
    caption = ("The GHN's training loss (the task loss of the architectures whose parameters it "
               "predicts) and, where recorded, its quality on architectures held out from "
               "training. Each trained GHN counts once, also when the fine-tuning of its trial "
               "failed. Lines: mean over the GHNs of each setting (seeds); bands: one standard "
               "deviation.")
    return Panel("ghn-curves", title, caption, _finish(plot.fig, height=_height(len(metrics))))


def _curve(plot: _Plot, rows, metric, scale, label, at) -> None:
    if rows.empty or metric not in rows:
        return
    agg = rows.groupby("step")[metric].agg(["mean", "std", "count"]).reset_index()
    x, mean, std = agg["step"], agg["mean"] * scale, agg["std"].fillna(0) * scale
    colour = plot.colours.get(label, PALETTE[0])
    if (agg["count"] > 1).any():
        plot.fig.add_trace(go.Scatter(
            x=pd.concat([x, x[::-1]]), y=pd.concat([mean + std, (mean - std)[::-1]]), fill="toself", mode="lines",
            fillcolor=colour, opacity=0.15, line={"width": 0}, hoverinfo="skip", legendgroup=label,
            showlegend=False), **_at(at))
    plot.fig.add_trace(go.Scatter(
        x=x, y=mean, mode="lines+markers", name=label, legendgroup=label, line={"color": colour},
        marker={"size": 4}, showlegend=plot.first(label), customdata=agg["count"],
        hovertemplate="step %{x}: %{y:.4g} (n=%{customdata})<extra>" + label + "</extra>"),
        **_at(at))


# -- the sweep as a whole -------------------------------------------------------------------------

def parallel_coordinates(study: Study) -> list[Panel]:
    """Every completed trial as a line through its settings and its quality, one panel per
    target; per metric instead when a setting of the target is swept (so that it is an axis)."""
    title = "Parallel coordinates of the sweep"
    done = study.completed
    settings = study.settings
    if not settings or len(done) < 2:
        return [Panel("parallel", title, "", note="needs a swept setting and two completed trials")]
    panels = []
    column = study.primary.column
    ghn_swept = any(s.startswith(GHN_PREFIX) for s in settings)
    if ghn_swept:   # a baseline's GHN settings are unused: drawn, they would read as its own
        done = done[done["finetune.init"].isin(list(GHN_INITS))] if "finetune.init" in done else done
    by_metric = any(is_target_setting(s) for s in settings)
    for cell in _quality_cells(study, done, by_metric=by_metric):
        rows = cell.rows[cell.rows[column].notna()]
        if len(rows) < 2:
            continue
        metric, mode = _metric(rows, study)
        columns = {s: _init_series(study) if _is_init_setting(s, study.trials) else s
                   for s in settings}
        dimensions = [_dimension(rows[c], "finetune.init" if c != s else s)
                      for s, c in columns.items() if rows[c].nunique() > 1]   # a constant axis says nothing
        if not dimensions:
            continue
        quality = rows[column] * metric_scale(metric)
        dimensions.append({"label": value_label(column, metric), "values": quality,
                           "tickformat": ".3~g"})
        fig = go.Figure(go.Parcoords(
            line={"color": quality, "colorscale": "Viridis", "reversescale": mode == "min",
                  "showscale": True, "colorbar": {"title": {"text": metric_label(metric)}}},
            dimensions=dimensions, labelangle=0, labelside="bottom",
            labelfont={"size": 12}, rangefont={"size": 10}))
        fig.update_layout(margin={"l": 110, "r": 110, "t": 40, "b": 80})
        name = cell.title.rsplit(" (", 1)[0]
        panels.append(Panel(f"parallel-{_slug(name)}", f"{title}: {name}",
                            f"One line per completed trial{' with a GHN init' if ghn_swept else ''}, "
                            f"coloured by quality ({direction(mode)}: yellow is better). Drag "
                            f"along an axis to select a range.",
                            _finish(fig)))
    return panels or [Panel("parallel", title, "", note="no target has two completed trials")]


def _dimension(x: pd.Series, setting: str) -> dict:
    label = setting_label(setting)
    if _is_numeric(x):
        values = x.astype(float)
        if values.min() > 0 and values.max() / values.min() >= 100:   # learning rates and such
            return {"label": f"log10 {label}", "values": np.log10(values), "tickformat": ".3~g"}
        return {"label": label, "values": values, "tickformat": ".4~g"}
    categories = sorted(x.astype(str).unique())
    codes = x.astype(str).map({c: i for i, c in enumerate(categories)})
    return {"label": label, "values": codes, "tickvals": list(range(len(categories))),
            "ticktext": categories}


def pareto(study: Study) -> Panel:
    """Quality against GHN parameters, the non-dominated trials joined, a subplot per target."""
    title = "Pareto front: quality against GHN size"
    done = study.completed
    column = study.primary.column
    if "ghn_params" not in done or not (done["ghn_params"].notna() & done[column].notna()).any():
        return Panel("pareto", title, "", note="no completed trial used a GHN")
    targets = sorted(done.loc[done["ghn_params"].notna(), "target"].unique())
    plot = _Plot(_subplots([_quality_title(done[done["target"] == t], study) for t in targets]),
                 _colours(done["init_label"]))
    for i, target in enumerate(targets):
        at = _position(i, len(targets))
        rows = done[done["target"] == target]
        metric, mode = _metric(rows, study)
        scale = metric_scale(metric)
        ghn_rows = rows[rows["ghn_params"].notna() & rows[column].notna()]
        for label, group in ghn_rows.groupby("init_label"):
            plot.fig.add_trace(go.Scatter(
                x=group["ghn_params"], y=group[column] * scale, mode="markers", name=label,
                legendgroup=label, showlegend=plot.first(label), text=group["trial_id"],
                marker={"size": 8, "color": plot.colours[label], "opacity": 0.6},
                hovertemplate="trial %{text}: %{x:,.0f} params, %{y:.4g}<extra>" + label + "</extra>"),
                **_at(at))
        front = pareto_front(ghn_rows, quality=column, mode=mode)
        plot.fig.add_trace(go.Scatter(
            x=front["ghn_params"], y=front[column] * scale, mode="lines+markers", name="Pareto front",
            legendgroup="front", showlegend=plot.first("Pareto front"),
            line={"color": "black", "shape": "hv"}, text=front["trial_id"],
            marker={"size": 12, "symbol": "circle-open", "color": "black", "line": {"width": 2}},
            hovertemplate="on the front: trial %{text}<extra></extra>"), **_at(at))
        for label, group in rows[rows["ghn_params"].isna()].groupby("init_label"):
            _reference_band(plot, group, column, scale, ghn_rows["ghn_params"], label, at)
        axis = _log_axis(ghn_rows["ghn_params"])   # one GHN size: linear, not a decade of 2..9
        if axis.get("tickvals"):
            axis["ticktext"] = [_count(v) for v in axis["tickvals"]]
        scale_name = " (log scale)" if axis["type"] == "log" else ""
        plot.fig.update_xaxes(title_text=f"GHN parameters{scale_name}", **axis, **_at(at))
        plot.fig.update_yaxes(title_text=value_label(column, metric), **_at(at))
    caption = ("Each dot is a completed trial with a GHN init; the black staircase joins the trials "
               "that no other trial beats on both quality and GHN size. Dashed: inits without a "
               "GHN (mean ± std).")
    return Panel("pareto", title, caption, _finish(plot.fig, height=_height(len(targets))))


def importances(study: Study) -> Panel:
    """Optuna's parameter importances of the primary objective, from the persisted Optuna study."""
    import optuna
    import optuna.visualization as vis

    title = "Parameter importances (Optuna)"
    try:
        optuna_study = load_optuna_study(study)
    except LogahError as err:
        return Panel("importances", title, "", note=str(err))
    complete = optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    varying = sorted(p for p in {p for t in complete for p in t.params}
                     if len({str(t.params.get(p)) for t in complete}) > 1)
    if len(complete) < 2 or not varying:
        return Panel("importances", title, "",
                     note="needs two completed Optuna trials that differ in a parameter")
    primary = study.primary
    # the metric's name without its unit: the bars are shares of the importance, not percent
    name = value_label(primary.column, primary.metric or primary.column, unit=False)
    # Optuna's default evaluator (PED-ANOVA) asks which parameters lead to *low* values
    sign = -1.0 if optuna_study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    try:
        with warnings.catch_warnings():   # its reminder of the above, which ``sign`` handles
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
            fig = vis.plot_param_importances(optuna_study, params=varying, target_name=name,
                                             target=lambda t: sign * t.values[0])
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        return Panel("importances", title, "", note=f"Optuna could not rank the parameters ({err})")
    for trace in fig.data:
        trace.y = [setting_label(p) for p in trace.y]
    fig.update_layout(title=None, yaxis_title=None,
                      xaxis={"title": {"text": f"share of the importance for {name} "
                                               f"(a fraction: the bars sum to 1)"},
                             "range": [0, 1.08], "tickformat": ".1f"})
    caption = (f"How much each swept parameter explains the variation of {name} across the "
               f"{len(complete)} completed Optuna trials (Optuna's default evaluator; the bars "
               f"sum to 1; parameters that took one value in them are left out). Seeds that are "
               f"swept count as parameters: a large seed share means noise dominates.")
    if len(complete) < 10:
        caption += f" With {len(complete)} trials these shares are rough."
    return Panel("importances", title, caption,
                 _finish(fig, height=max(250, 120 + 50 * len(fig.data[0].y))))


# -- helpers --------------------------------------------------------------------------------------

def _metric(rows: pd.DataFrame, study: Study) -> tuple[str, str]:
    """The fine-tuning metric and mode of these trials (from the table, else the study record)."""
    metric = _single(rows, "metric") or study.primary.metric or study.primary.column
    mode = _single(rows, "mode") or study.primary.mode
    return str(metric), str(mode)


def _single(rows: pd.DataFrame, column: str):
    if column not in rows:
        return None
    values = rows[column].dropna().unique()
    return values[0] if len(values) == 1 else None


def _quality_title(rows: pd.DataFrame, study: Study) -> str:
    target = _single(rows, "target") or ""
    _, mode = _metric(rows, study)
    return f"{target} ({direction(mode)})"


def _phase_steps(study: Study, phase: str, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """The steps of one phase of ``trials`` (default: the completed ones), with their trial's
    grouping columns."""
    trials = study.completed if trials is None else trials
    steps = study.steps[study.steps["phase"] == phase] if "phase" in study.steps else study.steps
    keep = ["trial_id", "target", "init_label", *study.settings]
    return steps.merge(trials[[c for c in dict.fromkeys(keep) if c in trials]], on="trial_id")


def _init_series(study: Study) -> str:
    """The column that names a line of inits: the full label (LoGAH-T/m1) unless a swept
    setting is part of that label (a rank sweep), then the kind alone (LoGAH)."""
    return "init_kind" if any(_in_init_label(s) for s in study.settings) else "init_label"


def _is_init_setting(setting: str, trials: pd.DataFrame) -> bool:
    """Whether a swept setting chooses the init: ``finetune.init``, or a ``Variants`` name (no
    dot) whose values and the init labels match one to one (the init comparison's ``init``:
    random, orthogonal, ghn3, logah). Such a setting is drawn by the paper's init names."""
    if setting == "finetune.init":
        return True
    if "." in setting or setting not in trials or "init_label" not in trials:
        return False
    pairs = trials[[setting, "init_label"]].dropna().drop_duplicates()
    return (len(pairs) > 1 and pairs[setting].is_unique and pairs["init_label"].is_unique)


def _in_init_label(setting: str) -> bool:
    """Whether a setting shows in ``init_label`` (the GHN's config and meta-batch do)."""
    return setting.startswith(GHN_PREFIX + "ghn.") or setting == GHN_PREFIX + "meta_batch"


def _title_case(label: str) -> str:
    """A label as a title's start; a dotted name stays as it is, being a name."""
    return label if "." in label else label[:1].upper() + label[1:]


def _uses_ghn(rows: pd.DataFrame) -> bool:
    return "finetune.init" not in rows or rows["finetune.init"].isin(list(GHN_INITS)).any()


_SHORT = {"ghn_training.ghn.rank": "r", "ghn_training.ghn.hidden": "d", "ghn_training.ghn.layers": "L",
          "ghn_training.ghn.heads": "H", "ghn_training.meta_batch": "m"}


def _short_settings(settings: dict) -> str:
    """A GHN's swept settings in the paper's letters, e.g. "r=8, m=1" (an init label as is)."""
    if list(settings) == ["init_label"]:
        return str(settings["init_label"])
    return ", ".join(f"{_SHORT.get(name, name.rsplit('.', 1)[-1])}={_fmt(value)}"
                     for name, value in settings.items())


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) \
        else str(value)


def _subplots(titles: list[str]) -> go.Figure:
    """Subplots with these titles, ``MAX_COLUMNS`` to a row (see ``_position``)."""
    n = max(1, len(titles))
    rows, cols = math.ceil(n / MAX_COLUMNS), min(n, MAX_COLUMNS)
    return make_subplots(rows=rows, cols=cols, subplot_titles=titles,
                         horizontal_spacing=0.12 if cols > 1 else 0.0,
                         vertical_spacing=0.3 / rows if rows > 1 else 0.0)


def _position(index: int, count: int) -> tuple[int, int]:
    """(row, col), from 1, of subplot ``index`` of ``count`` in a ``_subplots`` grid."""
    cols = min(max(1, count), MAX_COLUMNS)
    return index // cols + 1, index % cols + 1


def _at(at: tuple[int, int]) -> dict:
    return {"row": at[0], "col": at[1]}


def _height(count: int) -> int:
    """A figure's height for ``count`` subplots: one more row of ``ROW_HEIGHT`` per wrap."""
    return PANEL_HEIGHT + ROW_HEIGHT * (math.ceil(max(1, count) / MAX_COLUMNS) - 1)


LOG_RATIO = 5      # a range narrower than this factor reads better on a linear axis
MIN_TICKS = 3


def _log_axis(values: pd.Series) -> dict:
    """A log axis with round tick labels (1, 2, 5 per decade, finer for a narrower range):
    plotly's own labels a decade's minor ticks with bare digits, which reads as nonsense. A
    range of less than ``LOG_RATIO`` (a GHN loss from 2.6 to 2.3), or one where no set of
    round values gives ``MIN_TICKS`` labels, gets a linear axis with plotly's ticks instead: on
    a log axis it would show one tick label, or none."""
    values = values[values > 0].dropna().astype(float)
    if values.empty:
        return {"type": "log"}
    lo, hi = float(values.min()), float(values.max())
    if hi / lo < LOG_RATIO:
        return {"type": "linear"}
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** e for e in decades for m in mantissas if lo <= m * 10.0 ** e <= hi]
        if len(ticks) >= MIN_TICKS:
            return {"type": "log", "tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}
    return {"type": "linear"}


def _x_axis(fig: go.Figure, x: pd.Series, title: str, at: tuple[int, int]) -> None:
    values = x.dropna()
    axis = {"title_text": title}
    if _is_numeric(values) and len(values):
        unique = np.sort(values.astype(float).unique())
        if len(unique) <= 12:   # a grid: label exactly the values tried
            axis["tickvals"] = unique.tolist()
            axis["ticktext"] = [f"{v:g}" for v in unique]
        if unique.min() > 0 and unique.max() / unique.min() >= 8:   # ranks 4..64, learning rates
            axis = {**_log_axis(values.astype(float)), **axis}
    else:
        axis["type"] = "category"
    fig.update_xaxes(**_at(at), **axis)


def _count(value: float) -> str:
    """A parameter count as a tick label: 200k, 1.5M."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def _is_numeric(x: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)


def _finish(fig: go.Figure, height: int = PANEL_HEIGHT) -> go.Figure:
    fig.update_layout(template=TEMPLATE, height=height, legend={"orientation": "h", "y": -0.22},
                      margin={"t": 50, "b": 90} | dict(fig.layout.margin.to_plotly_json()))
    return fig


BASELINE_COLOURS = {"RandInit": "#7f7f7f", "OrthInit": "#8c564b"}
PALETTE = [c for c in qualitative.D3 if c not in BASELINE_COLOURS.values()]


def _colours(labels) -> dict[str, str]:
    """A colour per label, the same in every panel of a study: grey and brown for the baseline
    inits, the palette in sorted order for the rest."""
    others = sorted({str(label) for label in labels} - set(BASELINE_COLOURS))
    return {**BASELINE_COLOURS, **{label: PALETTE[i % len(PALETTE)] for i, label in enumerate(others)}}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


