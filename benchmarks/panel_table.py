"""Test accuracy per target and on the panel mean for ViT init-comparison studies run at one
learning rate, with LoGAH's ``null_fill`` lever as its own row, and the paired (same replicate)
differences between rows — the figures of init_study.md's "Panel, one learning rate" section.

    .venv/bin/python benchmarks/panel_table.py runs/studies/panel-nullfill-vit-cpu \
        runs/studies/panel-random-vit-cpu
"""
import sys

from logah.analysis.tables import load_studies, combined_trials

t = combined_trials(load_studies(sys.argv[1:]))
t = t[t.status == "COMPLETE"].copy()
t["row"] = t["init"].astype(str) + t["finetune.null_fill"].map(lambda v: " + null_fill 1" if v else "")
t["test"] *= 100
t["zero_shot"] *= 100
cells = t.groupby(["row", "target"]).agg(test=("test", "mean"), sd=("test", "std"), n=("test", "size"),
                                         zs=("zero_shot", "mean"))
targets = sorted(t.target.unique())
print("| init (lr 0.05) | " + " | ".join(targets) + " | panel mean | zero-shot (val), panel mean |")
print("|---|" + "---|" * (len(targets) + 2))
for row in sorted(t.row.unique()):
    parts = []
    for tg in targets:
        if (row, tg) in cells.index:
            c = cells.loc[(row, tg)]
            parts.append(f"{c.test:.1f} ± {c.sd:.1f} (n={int(c.n)})" if c.n > 1 else f"{c.test:.1f} (n=1)")
        else:
            parts.append("–")
    sub = t[t.row == row]
    # panel mean per replicate (seed), over the targets that replicate completed
    per_seed = sub.groupby("finetune.seed").agg(m=("test", "mean"), k=("test", "size"))
    full = per_seed[per_seed.k == len(targets)]
    pm = f"{full.m.mean():.1f} ± {full.m.std():.1f} (n={len(full)})" if len(full) > 1 else (
        f"{full.m.mean():.1f} (n=1)" if len(full) else "–")
    print(f"| {row} | " + " | ".join(parts) + f" | {pm} | {sub.zero_shot.mean():.1f} |")
print()
trials = t[["row", "target", "finetune.seed", "zero_shot", "best", "test", "wall_s"]]
print(trials.sort_values(["row", "target", "finetune.seed"]).to_string(index=False))

panel = t.groupby(["row", "finetune.seed"]).test.mean().unstack(0)
print(panel.round(2).to_string())
if {"logah", "logah + null_fill 1"} <= set(panel.columns):
    d = panel["logah + null_fill 1"] - panel["logah"]
    each = ", ".join(f"{v:+.2f}" for v in d)
    print(f"paired null_fill gain on the panel mean: {d.mean():+.2f} ± {d.std():.2f} ({each})")
if {"random", "logah"} <= set(panel.columns):
    for row in ("logah", "logah + null_fill 1"):
        d = panel["random"] - panel[row]
        print(f"random minus {row}, panel mean, paired: {d.mean():+.2f} ± {d.std():.2f}")
