"""The test metric per target and on the panel mean for init-comparison studies (ViT: accuracy
in %; GPT-2 and Llama: perplexity), one row per init and lever setting (``null_fill``,
``rescale_directions``, ``fill_init``, ``predicted_part``, ``unit_variance``,
``mimetic_attention``, ``init_noise``, the GHN's ``depth_encoding`` and ``hidden`` size, its
training's ``layer_diversity`` and space) and learning rate, then every trial,
and the paired (same replicate) differences of the panel mean between rows — the figures of
init_study.md's "Panel" sections. When the studies ran a row at several learning rates, one more table gives each row
at its best learning rate per target, chosen on the mean final *validation* metric over
replicates (``logah.analysis.stats.at_best_setting_per_target``), and the paired differences
there.

    .venv/bin/python benchmarks/panel_table.py runs/studies/panel-nullfill-vit-cpu \
        runs/studies/panel-random-vit-cpu

A replicate's panel mean is the mean of its targets; it counts only when the replicate has
every target of the table. A cell that two studies ran (a lever study's reference cell) counts
once, and the script says whether the two runs agree.
"""
import itertools
import sys

import numpy as np
import pandas as pd

from logah.analysis.stats import PANEL_MEAN, at_best_setting_per_target
from logah.analysis.tables import combined_trials, load_studies

LEVERS = ("finetune.null_fill", "finetune.rescale_directions", "finetune.init_noise",
          "finetune.fill_init", "finetune.predicted_part", "finetune.unit_variance",
          "finetune.mimetic_attention",
          "ghn_training.ghn.depth_encoding", "ghn_training.ghn.hidden",
          "ghn_training.layer_diversity", "ghn_training.space")
# a lever at its default is not named in a row's label; ``ghn_training.space`` is the swept
# space's name (empty where the study kept its preset's space)
LEVER_DEFAULTS = {"ghn_training.ghn.depth_encoding": "absolute", "ghn_training.ghn.hidden": 32,
                  "finetune.fill_init": "random", "finetune.predicted_part": "all"}
# the GHN's levers are LoGAH's: GHN-3's variant has its own hidden size and sweeps none
GHN_LEVER_INITS = ("logah",)


def row_label(trial: pd.Series) -> str:
    """``logah + null_fill 1 + unit_variance``: the init and each lever it ran with. The init is
    the one that ran (``finetune.init``), not the study's variant name, so that a variant which
    bundles levers (``logah_levers``) and the same levers swept one by one make one row."""
    parts = [str(trial["finetune.init"])]
    for column in LEVERS:
        value = trial.get(column)
        if column.startswith("ghn_training.") and trial["finetune.init"] not in GHN_LEVER_INITS:
            continue
        if value is None or pd.isna(value) or not value or value == LEVER_DEFAULTS.get(column):
            continue
        name = column.split(".")[-1]
        if isinstance(value, (bool, np.bool_)):
            parts.append(name)
        elif isinstance(value, str):
            parts.append(f"{name} {value}")
        else:
            parts.append(f"{name} {value:g}")
    return " + ".join(parts)


studies = load_studies(sys.argv[1:])
primary = studies[0].primary
if {s.primary.metric for s in studies} != {primary.metric}:
    sys.exit("panel_table.py: the studies report different metrics; give studies of one task")
t = combined_trials(studies)
t = t[t.status == "COMPLETE"].copy()
t["init_row"] = t.apply(row_label, axis=1)
lrs = sorted(t["finetune.lr"].unique())
t["row"] = (t.init_row + t["finetune.lr"].map(lambda lr: f" @ lr {lr:g}")) if len(lrs) > 1 else t.init_row
if primary.higher_is_better:     # accuracy, shown in %
    t["test"] *= 100
    t["zero_shot"] *= 100
print(f"test {(primary.metric or primary.column).removeprefix('val_')} after fine-tuning, mean ± "
      f"std over replicates ({'higher' if primary.higher_is_better else 'lower'} is better)")
print()
# the same cell (row, target, replicate) run by two studies, e.g. a lever study's reference: a
# paired study must reproduce it; it counts once
key = ["row", "target", "finetune.seed"]
repeated = t[t.duplicated(key, keep=False)].groupby(key).test.agg(lambda v: sorted(set(v)))
if len(repeated):
    same = repeated.map(len).eq(1)
    print(f"{len(repeated)} cells ran in more than one study: {int(same.sum())} reproduced to the "
          f"last digit" + ("" if same.all() else f"; differing: {repeated[~same].to_dict()}"))
    print()
t = t.drop_duplicates(key)
cells = t.groupby(["row", "target"]).agg(test=("test", "mean"), sd=("test", "std"), n=("test", "size"),
                                         zs=("zero_shot", "mean"))
targets = sorted(t.target.unique())
panel = t.groupby(["row", "finetune.seed"]).test.agg(["mean", "size"])
panel = panel[panel["size"] == len(targets)]["mean"].unstack(0)     # seeds x rows, full replicates
print(f"| init (lr {', '.join(f'{v:g}' for v in lrs)}) | "
      + " | ".join(targets) + " | panel mean | zero-shot (val), panel mean |")
print("|---|" + "---|" * (len(targets) + 2))
for row in sorted(t.row.unique()):
    parts = []
    for tg in targets:
        if (row, tg) in cells.index:
            c = cells.loc[(row, tg)]
            parts.append(f"{c.test:.1f} ± {c.sd:.1f} (n={int(c.n)})" if c.n > 1 else f"{c.test:.1f} (n=1)")
        else:
            parts.append("–")
    full = panel[row].dropna() if row in panel else pd.Series(dtype=float)
    pm = (f"{full.mean():.1f} ± {full.std():.1f} (n={len(full)})" if len(full) > 1 else
          f"{full.mean():.1f} (n=1)" if len(full) else "–")
    print(f"| {row} | " + " | ".join(parts) + f" | {pm} | {t[t.row == row].zero_shot.mean():.1f} |")
print()
trials = t[["row", "target", "finetune.seed", "zero_shot", "best", "test", "wall_s"]]
print(trials.sort_values(["row", "target", "finetune.seed"]).to_string(index=False))
print()


def paired_differences(panel: pd.DataFrame) -> None:
    """Per-replicate panel means (replicates x rows), then each pair of rows' difference."""
    print(panel.round(2).to_string())
    print()
    print("paired differences of the panel mean (row minus column), mean ± std over replicates:")
    for a, b in itertools.permutations(panel.columns, 2):
        d = (panel[a] - panel[b]).dropna()
        if len(d) > 1 and a > b:
            each = ", ".join(f"{v:+.2f}" for v in d)
            print(f"  {a}  minus  {b}: {d.mean():+.2f} ± {d.std():.2f} ({each})")


paired_differences(panel)
if len(lrs) > 1:
    print()
    print("each row at its best lr per target (mean final validation over replicates chooses):")
    print()
    mode = "max" if primary.higher_is_better else "min"
    best = at_best_setting_per_target(t, by=["init_row"], setting="finetune.lr", choose_on="final",
                                      mode=mode, report=["test"], replicates=["finetune.seed"])
    print("| init, each at its best lr | " + " | ".join(targets) + " | panel mean |")
    print("|---|" + "---|" * (len(targets) + 1))
    for row, group in best.groupby("init_row"):
        cells = group.set_index("target")
        parts = []
        for tg in targets:
            if tg not in cells.index:
                parts.append("–")
                continue
            c = cells.loc[tg]
            parts.append(f"{c.test_mean:.1f} ± {c.test_std:.1f} (lr {c['finetune.lr']:g}, "
                         f"n={int(c.test_count)})")
        m = cells.loc[PANEL_MEAN]
        print(f"| {row} | " + " | ".join(parts) + f" | {m.test_mean:.1f} ± {m.test_std:.1f} "
              f"(n={int(m.test_count)}) |")
    print()
    chosen = best[best.target != PANEL_MEAN][["init_row", "target", "finetune.lr"]]
    at_best = t.merge(chosen, on=["init_row", "target", "finetune.lr"])
    per_replicate = at_best.groupby(["init_row", "finetune.seed"]).test.agg(["mean", "size"])
    paired_differences(per_replicate[per_replicate["size"] == len(targets)]["mean"].unstack(0))
