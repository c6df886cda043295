"""What a finished study prints: its trial table and the swept settings against the metric,
averaged over seeds (each at its own best fine-tuning lr when the lr is swept), then where
its folder is."""

from __future__ import annotations

import pandas as pd

from logah.analysis.stats import aggregate_seeds, at_best_setting

from logah.study.spec import StudyPlan


LR = "finetune.lr"


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def seed_summary(table: pd.DataFrame, swept: list[str], column: str = "best") -> pd.DataFrame:
    """Mean, spread and count of ``column`` over the seeds of every swept setting (complete
    trials only); seeds are the swept settings whose name ends in ``seed``."""
    done = table[table["status"] == "COMPLETE"]
    keys = [s for s in swept if not s.endswith("seed") and s in done.columns]
    if done.empty or not keys:
        return pd.DataFrame()
    return aggregate_seeds(done, by=keys, value=column).rename(columns={k: _short(k) for k in keys})


def best_lr_summary(table: pd.DataFrame, swept: list[str], mode: str) -> pd.DataFrame:
    """When the fine-tuning lr is swept beside other settings (the init comparison's grid):
    every combination of those settings at its own best lr (the paper's protocol), with the
    test metric over seeds there."""
    done = table[table["status"] == "COMPLETE"]
    keys = [s for s in swept if s != LR and not s.endswith("seed") and s in done.columns]
    if done.empty or LR not in swept or not keys:
        return pd.DataFrame()
    best = at_best_setting(done, by=keys, setting=LR, choose_on="final", mode=mode,
                           report=["zero_shot", "final", "test"])
    return best.rename(columns={k: _short(k) for k in keys + [LR]})


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
        at_best_lr = best_lr_summary(table, swept, plan.mode)
        if not at_best_lr.empty:
            print(f"\neach at its own best fine-tuning lr (chosen on the final {plan.metric}, mean "
                  f"over seeds; test never chooses):")
            print(at_best_lr.to_string(index=False))
        failed = table[table["status"] == "FAILED"]
        for _, row in failed.iterrows():
            print(f"failed {row['trial_id']}: {row['error']}")
    print(f"\nstudy folder: {plan.study_dir}")
