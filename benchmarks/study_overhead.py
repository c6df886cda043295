"""Ray's overhead in a finished study: the study's wall time against the compute its trials did.

    .venv/bin/python benchmarks/study_overhead.py runs/studies/rank_sweep-vit-cpu

Compute is what the trials' work took, each piece counted once: every GHN training in the
study's GHN store (``ghns/*/store.json``) plus every trial's fine-tuning phase. The ideal wall
time with the study's concurrency c is max(compute / c, the longest single trial's compute);
the overhead is the wall time beyond that, as a share of the wall time. It includes Ray's start,
trial scheduling, process start-up and imports, data loading before the first step, and the
idle tail when fewer trials than slots remain. Prints one Markdown line per study.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd


def overhead(study_dir: Path) -> dict:
    info = json.loads((study_dir / "study.json").read_text())
    trials = pd.read_parquet(study_dir / "trials.parquet")
    done = trials[trials["status"] == "COMPLETE"]
    ghn = {p.parent.name: json.loads(p.read_text())["wall_s"]
           for p in (study_dir / "ghns").glob("*/store.json")}
    finetune = done["finetune_wall_s"].fillna(0)
    per_trial = finetune + done["ghn_key"].map(lambda k: ghn.get(k, 0.0) if k else 0.0)
    compute = sum(ghn.values()) + finetune.sum()
    concurrency = info["concurrency"]
    ideal = max(compute / concurrency, per_trial.max())
    return {"study": info["name"], "trials": len(done), "concurrency": concurrency,
            "wall_s": info["wall_s"], "compute_s": compute, "ideal_s": ideal,
            "overhead": 1 - ideal / info["wall_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print("| study | trials | concurrency | wall s | compute s | ideal wall s | overhead |")
    print("|---|---|---|---|---|---|---|")
    for folder in args.studies:
        r = overhead(folder)
        print(f"| {r['study']} | {r['trials']} | {r['concurrency']} | {r['wall_s']:.0f} | "
              f"{r['compute_s']:.0f} | {r['ideal_s']:.0f} | {100 * r['overhead']:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
