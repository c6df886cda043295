"""Ray's overhead in a finished study: the study's wall time against the compute its trials did.

    .venv/bin/python benchmarks/study_overhead.py runs/studies/rank_sweep-vit-cpu

Compute is what the trials' work took, each piece counted once: every GHN training a trial of
the study did (``store.json`` in its GHN store; GHNs reused from another study's store with
``--ghn-store`` were paid for there) plus every trial's fine-tuning phase. Two ideal wall
times with the study's concurrency c: *split*, max(compute / c, the longest trial), as if work
could be cut anywhere; and *packed*, the trials (each with the GHN training it did itself) laid
longest-first onto c slots, which is what whole trials on c slots can at best do (15 equal trials
on 2 slots need 8 trial times, not 7.5). The overhead is the wall time beyond the ideal, as a
share of the wall time: Ray's start, trial scheduling, process start-up and imports, data loading
before the first step and, against *split* only, the idle tail of the last wave. Prints one Markdown line per study.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from logah.study.tables import ghn_store_of


def overhead(study_dir: Path) -> dict:
    info = json.loads((study_dir / "study.json").read_text())
    trials = pd.read_parquet(study_dir / "trials.parquet")
    done = trials[trials["status"] == "COMPLETE"]
    store = ghn_store_of(study_dir, info)
    trained_here = set(trials.loc[~trials["ghn_reused"].astype(bool), "ghn_key"]) - {""}
    ghn = {p.parent.name: json.loads(p.read_text())["wall_s"]
           for p in store.glob("*/store.json") if p.parent.name in trained_here}
    finetune = done["finetune_wall_s"].fillna(0)
    per_trial = finetune + done["ghn_key"].map(lambda k: ghn.get(k, 0.0) if k else 0.0)
    compute = sum(ghn.values()) + finetune.sum()
    concurrency = info["concurrency"]
    split = max(compute / concurrency, per_trial.max())
    # each trial with the GHN training it did itself (a reused GHN was paid for once)
    own = finetune + done.apply(lambda r: 0.0 if r.get("ghn_reused") or not r["ghn_key"]
                                else ghn.get(r["ghn_key"], 0.0), axis=1)
    slots = [0.0] * concurrency
    for seconds in sorted(own, reverse=True):
        slots[slots.index(min(slots))] += seconds
    packed = max(slots)
    return {"study": info["name"], "trials": len(done), "concurrency": concurrency,
            "wall_s": info["wall_s"], "compute_s": compute, "split_s": split, "packed_s": packed,
            "overhead_split": 1 - split / info["wall_s"],
            "overhead_packed": 1 - packed / info["wall_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print("| study | trials | concurrency | wall s | compute s | ideal s: split / packed | "
          "overhead: split / packed |")
    print("|---|---|---|---|---|---|---|")
    for folder in args.studies:
        r = overhead(folder)
        print(f"| {r['study']} | {r['trials']} | {r['concurrency']} | {r['wall_s']:.0f} | "
              f"{r['compute_s']:.0f} | {r['split_s']:.0f} / {r['packed_s']:.0f} | "
              f"{100 * r['overhead_split']:.0f}% / {100 * r['overhead_packed']:.0f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
