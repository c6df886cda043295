"""The questions studies ask of a trial table: spread over seeds, best setting, Pareto front.

    agg = aggregate_seeds(study.completed, by=["target", "ghn_training.ghn.rank"], value="best")
    best = best_per_group(study.completed, by=["target", "init_label"], value="best", mode="max")
    front = pareto_front(study.completed, quality="best", mode="max", cost="ghn_params")
    table = at_best_setting(study.completed, by=["init_label"], setting="finetune.lr",
                            choose_on="final", mode="max", report=["test"])

All of them take any trial table (one study's or several studies' ``combined_trials``) and leave
the statuses to the caller: pass completed trials, since a failed trial's metrics are NaN and
a running one's are partial. Rows whose value is NaN are ignored, never counted as zero.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from logah.errors import LogahError


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
    means = aggregate_seeds(trials, by + [setting], values)
    means = means[means[f"{choose_on}_mean"].notna()]
    if means.empty:
        return means
    pick = means.groupby(by, dropna=False, sort=True)[f"{choose_on}_mean"]
    index = pick.idxmax() if mode == "max" else pick.idxmin()
    keep = by + [setting] + [f"{c}_{stat}" for c in report for stat in ("mean", "std", "count")]
    return means.loc[index.to_numpy(), keep].reset_index(drop=True)


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


def _require(trials: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in trials.columns]
    if missing:
        raise LogahError(f"the trial table has no column(s) {missing}; it has {sorted(trials.columns)}")


def _check_mode(mode: str) -> None:
    if mode not in ("max", "min"):
        raise LogahError(f"mode must be 'max' or 'min', got {mode!r}")

