"""Does the method work here? random vs orthogonal vs GHN-3 vs LoGAH inits, same fine-tuning budget.

    .venv/bin/python benchmarks/init_comparison.py --ghns runs/bench5 --out runs/bench5/ft

``--ghns`` holds the trained GHN folders ``ghn-{logah,ghn3,logahgrid}-{vit,gpt}`` (the commands
that train them are in ``results/init_comparison.md``; ``logahgrid`` is the ``logah-cpu-grid``
preset, an option of this project rather than the paper's decoder). For each task (ViT target on Fashion-MNIST,
GPT-2 target on Shakespeare, both wider and deeper than the GHNs' training space), each init and
each seed, one trial (``logah.trial.run_trial`` with the given GHN) fine-tunes the target and
reports the zero-shot and fine-tuned validation metric. Finished trials are skipped, so an
interrupted run continues. Prints a markdown table (mean ± std over seeds) and writes every
trial summary to ``OUT/summaries.json``.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from logah.finetune import FinetuneConfig, finetune_preset  # noqa: E402
from logah.io import write_json  # noqa: E402
from logah.targets import NAMED_TARGETS, arch_to_dict  # noqa: E402
from logah.tasks import DataConfig  # noqa: E402
from logah.trial import TrialConfig, run_trial  # noqa: E402

# table row -> (init kind, GHN folder prefix or None)
VARIANTS = {"random": ("random", None), "orthogonal": ("orthogonal", None),
            "ghn3": ("ghn3", "ghn3"), "logah": ("logah", "logah"),
            "logah-grid": ("logah", "logahgrid")}
TASKS = {
    "vit": dict(target="vit-cpu-target", preset="vit-cpu", metric="val_accuracy",
                data=DataConfig(dataset="fashion-mnist", batch_size=64, eval_split="test",
                                eval_batches=40)),
    "gpt": dict(target="gpt2-cpu-target", preset="gpt2-cpu", metric="val_perplexity",
                data=DataConfig(dataset="shakespeare", batch_size=16, eval_batches=20)),
}


def trial_config(task: str, variant: str, seed: int, steps: int, ghns: Path,
                 lr: float | None = None) -> TrialConfig:
    spec = TASKS[task]
    settings = {**finetune_preset(spec["preset"]), "steps": steps, "eval_every": max(1, steps // 4)}
    if lr is not None:
        settings["lr"] = lr
    init, prefix = VARIANTS[variant]
    ghn = str(ghns / f"ghn-{prefix}-{task}") if prefix else None
    tuning = FinetuneConfig(target=arch_to_dict(NAMED_TARGETS[spec["target"]]), init=init,
                            data=spec["data"], seed=seed, **settings)
    return TrialConfig(finetune=tuning, ghn_checkpoint=ghn)


def mean_std(values: list[float], scale: float) -> str:
    if len(values) < 2:
        return f"{scale * values[0]:.1f}"
    return f"{scale * statistics.mean(values):.1f} ± {scale * statistics.stdev(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ghns", type=Path, required=True, help="folder of the four GHN folders")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--lr", type=float, help="fine-tuning lr (default: the task's CPU preset)")
    args = parser.parse_args()
    summaries = []
    for task in args.tasks:
        for variant in args.variants:
            for seed in args.seeds:
                start = time.perf_counter()
                summary = run_trial(trial_config(task, variant, seed, args.steps, args.ghns, args.lr),
                                    args.out / f"{task}-{variant}-{seed}")
                summaries.append({"task": task, "variant": variant, **summary})
                print(f"{task} {variant} seed {seed}: {json.dumps(summary)} "
                      f"({time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)
    write_json(args.out / "summaries.json", {"steps": args.steps, "seeds": args.seeds,
                                             "trials": summaries})
    print(f"| task | init | zero-shot | after {args.steps} steps | best |")
    print("|---|---|---|---|---|")
    for task in args.tasks:
        metric = TASKS[task]["metric"]
        scale = 100.0 if metric == "val_accuracy" else 1.0
        for variant in args.variants:
            rows = [s for s in summaries if s["task"] == task and s["variant"] == variant]
            cells = [mean_std([r[f"{kind}_{metric}"] for r in rows], scale)
                     for kind in ("zero_shot", "final", "best")]
            print(f"| {task} ({metric}{', %' if scale == 100 else ''}) | {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
