"""The questions studies ask of a trial table: spread over seeds, best setting, Pareto front.

    agg = aggregate_seeds(study.completed, by=["target", "ghn_training.ghn.rank"], value="best")
    best = best_per_group(study.completed, by=["target", "init_label"], value="best", mode="max")
    front = pareto_front(study.completed, quality="best", mode="max", cost="ghn_params")
    table = at_best_setting(study.completed, by=["init_label"], setting="finetune.lr",
                            choose_on="final", mode="max", report=["test"])
    panel = at_best_setting_per_target(study.completed, by=["init_label"], setting="finetune.lr",
                                       choose_on="final", mode="max", report=["test"],
                                       replicates=["seed"])

All of them take any trial table (one study's or several studies' ``combined_trials``) and leave
the statuses to the caller: pass completed trials, since a failed trial's metrics are NaN and
a running one's are partial. Rows whose value is NaN are ignored, never counted as zero.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from logah.errors import LogahError

PANEL_MEAN = "mean over the panel"   # the ``target`` of the rows that average a panel of targets


def aggregate_seeds(trials: pd.DataFrame, by: list[str], value: str | list[str]) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1; NaN for one seed) and count of ``value`` per group.

    ``by`` lists the settings that define a group (everything else, the seeds in particular,
    is averaged over). The result has one row per group: the ``by`` columns, then
    ``VALUE_mean``, ``VALUE_std`` and ``VALUE_count`` for each value column.
    """
    values = [value] if isinstance(value, str) else list(value)
    _require(trials, by + values)
    grouped = trials.groupby(by, dropna=False, sort=True)[values]
    table = grouped.agg(["mean", "std", "count"])
    table.columns = [f"{column}_{stat}" for column, stat in table.columns]
    return table.reset_index()


def best_per_group(trials: pd.DataFrame, by: list[str], value: str, mode: str) -> pd.DataFrame:
    """The best trial (whole row) of each group by ``value``; ``mode`` is ``max`` or ``min``.
    Groups whose values are all NaN are left out."""
    _require(trials, by + [value])
    _check_mode(mode)
    valid = trials[trials[value].notna()]
    if valid.empty:
        return valid.copy()
    pick = valid.groupby(by, dropna=False, sort=True)[value]
    index = pick.idxmax() if mode == "max" else pick.idxmin()
    return valid.loc[index.to_numpy()].reset_index(drop=True)


def at_best_setting(trials: pd.DataFrame, by: list[str], setting: str, choose_on: str, mode: str,
                    report: list[str]) -> pd.DataFrame:
    """Each group at its own best value of ``setting`` (the paper reports every init at its best
    learning rate): per group of ``by``, the value of ``setting`` whose mean ``choose_on`` over
    seeds is best by ``mode``, with the mean, std and count of every ``report`` column there.

    Choose on one column and report another (validation vs test) and no reported figure has
    been chosen on. One row per group: ``by``, ``setting``, then the ``report`` statistics."""
    _require(trials, by + [setting, choose_on] + report)
    _check_mode(mode)
    values = [choose_on] + [c for c in report if c != choose_on]
    keys = list(dict.fromkeys(by + [setting]))   # ``setting`` in ``by``: one value per group
    means = aggregate_seeds(trials, keys, values)
    means = means[means[f"{choose_on}_mean"].notna()]
    if means.empty:
        return means
    if not by:   # one group: the whole table
        index = pd.Index([means[f"{choose_on}_mean"].idxmax() if mode == "max"
                          else means[f"{choose_on}_mean"].idxmin()])
    else:
        pick = means.groupby(by, dropna=False, sort=True)[f"{choose_on}_mean"]
        index = pick.idxmax() if mode == "max" else pick.idxmin()
    keep = keys + [f"{c}_{stat}" for c in report for stat in ("mean", "std", "count")]
    return means.loc[index.to_numpy(), keep].reset_index(drop=True)


def at_best_setting_per_target(trials: pd.DataFrame, by: list[str], setting: str, choose_on: str,
                               mode: str, report: list[str], replicates: list[str],
                               target: str = "target") -> pd.DataFrame:
    """``at_best_setting`` on a panel of targets (one comparison run on several targets of one
    family, e.g. four ViT shapes), per target and as the mean over the panel.

    Per group of ``by`` and per target: the value of ``setting`` whose mean ``choose_on`` over
    seeds is best by ``mode`` (each target has its own best learning rate), with the mean, std
    and count over seeds of every ``report`` column there. Then per group one more row, whose
    ``target`` is ``PANEL_MEAN`` and whose ``setting`` is NaN (each target at its own): for each
    replicate (a value of the ``replicates`` columns, the seeds the study swept), the ``report``
    column averaged over the panel's targets, each at its chosen setting; then the mean, std
    (ddof 1) and count over replicates. The std is over replicates, not over targets: the
    targets are the panel being averaged, the replicates are what would change on a rerun.

    The panel is every target in ``trials``, so a group lacking a target cannot look better by
    averaging fewer of them: a replicate with no value for some target (a failed trial) is left
    out of that mean, and ``COLUMN_left_out`` counts those replicates (NaN on per-target rows).
    Several trials of one replicate at one target and setting (settings not in ``by``) are
    averaged first. Without ``replicates`` the whole table is one replicate (std NaN).

    The targets must share their metric (a ``metric`` column with one value): a mean of an
    accuracy and a perplexity means nothing. Rows: per group, its targets in order, then the
    panel mean; columns ``by``, ``target``, ``setting``, then for each ``report`` column its
    ``_mean``, ``_std``, ``_count`` and ``_left_out``."""
    _require(trials, by + [target, setting, choose_on] + report + replicates)
    _check_mode(mode)
    if target in by or target in replicates:
        raise LogahError(f"the target column {target!r} cannot also be a group or a replicate")
    if "metric" in trials:
        metrics = sorted(trials["metric"].dropna().astype(str).unique())
        if len(metrics) > 1:
            raise LogahError(f"the targets mix metrics ({', '.join(metrics)}); a mean over a panel "
                             f"needs one: pass the trials of one metric")
    targets = sorted(trials[target].dropna().unique())
    per_target = at_best_setting(trials, by + [target], setting, choose_on, mode, report)
    stats = [f"{c}_{stat}" for c in report for stat in ("mean", "std", "count", "left_out")]
    columns = list(dict.fromkeys(by + [target, setting])) + stats
    if per_target.empty:
        return pd.DataFrame(columns=columns)
    for column in report:
        per_target[f"{column}_left_out"] = np.nan
    reps = replicates or ["__replicate"]
    trials = trials if replicates else trials.assign(__replicate=0)
    groups = [((), trials)] if not by else trials.groupby(by, dropna=False, sort=True)
    rows = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        mine = per_target[_same(per_target, by, key)]
        if mine.empty:
            continue
        rows.extend(mine[columns].to_dict("records"))
        # the group's trials, each target at its own chosen setting
        at_chosen = pd.concat([group[(group[target] == row[target]) & _equal(group[setting], row[setting])]
                               for _, row in mine.iterrows()])
        panel = {target: PANEL_MEAN, setting: np.nan, **dict(zip(by, key))}   # by wins
        n_replicates = len(group[reps].drop_duplicates())
        for column in report:
            values = at_chosen.groupby(reps + [target], dropna=False)[column].mean()
            values = values.unstack(target).reindex(columns=targets)
            complete = values[values.notna().all(axis=1)].mean(axis=1)
            panel.update({f"{column}_mean": complete.mean() if len(complete) else np.nan,
                          f"{column}_std": complete.std(ddof=1) if len(complete) > 1 else np.nan,
                          f"{column}_count": len(complete),
                          f"{column}_left_out": n_replicates - len(complete)})
        rows.append(panel)
    return pd.DataFrame(rows, columns=columns)


def pareto_mask(trials: pd.DataFrame, objectives: list[dict]) -> pd.Series:
    """Which rows no other row beats on every objective and strictly on one; ``objectives`` as
    in study.json (``{"column": ..., "mode": "max"|"min"}``). Rows with a NaN in an objective
    take no part (and are not on the front)."""
    _require(trials, [o["column"] for o in objectives])
    for objective in objectives:
        _check_mode(objective["mode"])
    # as minimisation: negate what is maximised
    costs = np.column_stack([trials[o["column"]].to_numpy(dtype=float)
                             * (-1 if o["mode"] == "max" else 1) for o in objectives])
    valid = ~np.isnan(costs).any(axis=1)
    c = costs[valid]
    no_worse = (c[None, :, :] <= c[:, None, :]).all(axis=2)
    better = (c[None, :, :] < c[:, None, :]).any(axis=2)
    mask = np.zeros(len(trials), dtype=bool)
    mask[np.flatnonzero(valid)] = ~(no_worse & better).any(axis=1)
    return pd.Series(mask, index=trials.index)


def pareto_front(trials: pd.DataFrame, quality: str, mode: str, cost: str = "ghn_params") -> pd.DataFrame:
    """The rows no other row beats on both ``quality`` (by ``mode``) and ``cost`` (lower is
    better), sorted by cost. Rows with a NaN in either column take no part."""
    mask = pareto_mask(trials, [{"column": quality, "mode": mode}, {"column": cost, "mode": "min"}])
    front = trials[mask]
    return front.sort_values([cost, quality], ascending=[True, mode != "max"]).reset_index(drop=True)


def _equal(series: pd.Series, value) -> pd.Series:
    """``series == value`` where NaN equals NaN (a baseline's unused GHN settings are NaN)."""
    if _isnan(value):
        return series.isna()
    return series == value


def _isnan(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _same(table: pd.DataFrame, columns: list[str], key: tuple) -> pd.Series:
    mask = pd.Series(True, index=table.index)
    for column, value in zip(columns, key):
        mask &= _equal(table[column], value)
    return mask


def _require(trials: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in trials.columns]
    if missing:
        raise LogahError(f"the trial table has no column(s) {missing}; it has {sorted(trials.columns)}")


def _check_mode(mode: str) -> None:
    if mode not in ("max", "min"):
        raise LogahError(f"mode must be 'max' or 'min', got {mode!r}")

