"""What a finished study prints: its trial table and the swept settings against the metric,
averaged over seeds (each at its own best fine-tuning lr when the lr is swept, per target, and
as the mean over a panel of targets when the study has several), then where its folder is."""

from __future__ import annotations

import pandas as pd

from logah.analysis.stats import PANEL_MEAN, aggregate_seeds, at_best_setting_per_target
from logah.analysis.tables import is_seed_column, is_target_setting, tidy_trials

from logah.study.spec import StudyPlan


LR = "finetune.lr"
REPORTED = ("zero_shot", "final", "test")


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def seed_summary(table: pd.DataFrame, swept: list[str], column: str = "best") -> pd.DataFrame:
    """Mean, spread and count of ``column`` over the seeds of every swept setting (complete
    trials only); seeds are the swept settings ``is_seed_column`` names."""
    done = table[table["status"] == "COMPLETE"]
    keys = [s for s in swept if not is_seed_column(s) and s in done.columns]
    if done.empty or not keys:
        return pd.DataFrame()
    return aggregate_seeds(done, by=keys, value=column).rename(columns={k: _short(k) for k in keys})


def best_lr_summary(table: pd.DataFrame, swept: list[str], mode: str,
                    meta: dict | None = None) -> pd.DataFrame:
    """Every combination of the swept settings (the init comparison's inits) at its own best
    fine-tuning lr per target (the paper's protocol: chosen on the final validation metric,
    never on test), with the zero-shot, final and test metrics over seeds there; and, when the
    study has a panel of several targets, the mean over the panel (``target`` is
    ``PANEL_MEAN``; ``left_out``: replicates missing a target). Empty when the lr is not swept
    beside another setting and there is one target. ``meta`` is study.json, for the target's
    name when ``table`` is a raw trial table (no ``target`` column)."""
    done = table[table["status"] == "COMPLETE"]
    if done.empty:
        return pd.DataFrame()
    if "target" not in done:
        done = tidy_trials(done, {"name": "", **(meta or {})})
    keys = [s for s in swept if s != LR and not is_seed_column(s) and not is_target_setting(s)
            and s in done.columns]
    seeds = [s for s in swept if is_seed_column(s) and s in done.columns]
    panel = done["target"].nunique() > 1
    if not (LR in swept and keys) and not panel:
        return pd.DataFrame()
    data = done if LR in done else done.assign(**{LR: float("nan")})
    report = [c for c in REPORTED if c in data]
    parts = []
    for _, rows in (data.groupby("metric") if "metric" in data else [(None, data)]):
        result = at_best_setting_per_target(rows, by=keys, setting=LR, choose_on="final", mode=mode,
                                            report=report, replicates=seeds)
        if rows["target"].nunique() < 2:
            result = result[result["target"] != PANEL_MEAN]
        parts.append(result)
    result = pd.concat(parts, ignore_index=True)
    left_out = [f"{c}_left_out" for c in report]
    result["left_out"] = result[left_out].max(axis=1)
    result = result.drop(columns=left_out)
    if not panel:
        result = result.drop(columns=["left_out"])
    return result.rename(columns={k: _short(k) for k in keys + [LR]})


def print_summary(plan: StudyPlan, table: pd.DataFrame) -> None:
    swept = [s for s in sorted(plan.space) if s in table.columns]
    columns = ["trial_id", "status", *swept, "zero_shot", "best", "final", "test", "ghn_params",
               "wall_s"]
    shown = table[[c for c in columns if c in table.columns]].rename(columns=_short)
    with pd.option_context("display.max_rows", 200, "display.width", 160,
                           "display.float_format", "{:.4g}".format):
        print(f"\nStudy {plan.name}: {plan.study.question}")
        print(f"metric: {plan.metric} ({plan.mode}) on validation batches (zero-shot, best, final "
              f"over fine-tuning); test: the final model on the whole test split; "
              f"{(table['status'] == 'COMPLETE').sum()} of {len(table)} trials complete\n")
        print(shown.to_string(index=False))
        summary = seed_summary(table, swept)
        if not summary.empty and len(summary) < len(table):
            print(f"\nbest {plan.metric} over seeds:")
            print(summary.to_string(index=False))
        finetune = plan.base.get("finetune") or {}
        meta = {"name": plan.name, "target": finetune.get("target"),
                "dataset": (finetune.get("data") or {}).get("dataset")}
        at_best_lr = best_lr_summary(table, swept, plan.mode, meta)
        if not at_best_lr.empty:
            chosen = "best fine-tuning lr" if LR in swept else "fine-tuning lr"
            print(f"\neach at its own {chosen} per target (chosen on the final {plan.metric}, mean "
                  f"over seeds; test never chooses):")
            if PANEL_MEAN in set(at_best_lr["target"]):
                print(f"{PANEL_MEAN!r}: per replicate (seed), the metric averaged over the "
                      f"targets, each at its own lr; then mean, std and count over replicates; "
                      f"left_out: replicates missing a target")
            print(at_best_lr.to_string(index=False))
        failed = table[table["status"] == "FAILED"]
        for _, row in failed.iterrows():
            print(f"failed {row['trial_id']}: {row['error']}")
    print(f"\nstudy folder: {plan.study_dir}")
