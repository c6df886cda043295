"""The questions studies ask of a trial table: spread over seeds, best setting, Pareto front.

    agg = aggregate_seeds(study.completed, by=["target", "ghn_training.ghn.rank"], value="best")
    best = best_per_group(study.completed, by=["target", "init_label"], value="best", mode="max")
    front = pareto_front(study.completed, quality="best", mode="max", cost="ghn_params")

All three take any trial table (one study's or several studies' ``combined_trials``) and leave
the statuses to the caller: pass completed trials, since a failed trial's metrics are NaN and
a running one's are partial. Rows whose value is NaN are ignored, never counted as zero.
"""

from __future__ import annotations

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


def pareto_front(trials: pd.DataFrame, quality: str, mode: str, cost: str = "ghn_params") -> pd.DataFrame:
    """The rows no other row beats on both ``quality`` (by ``mode``) and ``cost`` (lower is
    better), sorted by cost. Rows with a NaN in either column take no part."""
    _require(trials, [quality, cost])
    _check_mode(mode)
    valid = trials[trials[quality].notna() & trials[cost].notna()]
    q = valid[quality].to_numpy(dtype=float) * (1 if mode == "max" else -1)
    c = valid[cost].to_numpy(dtype=float)
    # row i is dominated when some j is at least as good on both and strictly better on one
    no_worse = (q[None, :] >= q[:, None]) & (c[None, :] <= c[:, None])
    better = (q[None, :] > q[:, None]) | (c[None, :] < c[:, None])
    dominated = (no_worse & better).any(axis=1)
    front = valid[~dominated] if len(valid) else valid
    return front.sort_values([cost, quality], ascending=[True, mode != "max"]).reset_index(drop=True)


def _require(trials: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in trials.columns]
    if missing:
        raise LogahError(f"the trial table has no column(s) {missing}; it has {sorted(trials.columns)}")


def _check_mode(mode: str) -> None:
    if mode not in ("max", "min"):
        raise LogahError(f"mode must be 'max' or 'min', got {mode!r}")

