"""GHN training throughput: architectures/s and samples/s, 1 vs 2 workers, low-rank vs tiled.

    .venv/bin/python benchmarks/train_throughput.py            # writes results/train_throughput.md

Each configuration trains for ``--steps`` steps on vits-cpu + Fashion-MNIST; the throughput is
the mean of the logged windows after the first (which includes start-up). One worker runs the
plain loop in this process; two workers run on Ray Train (gloo DDP) on a local Ray, so the
2-worker figures include DDP's gradient all-reduce. Rows of one run are comparable with each
other; this 2-core machine is shared, so compare ratios, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from logah.archs import get_space, space_to_dict  # noqa: E402
from logah.io import atomic_write_text  # noqa: E402
from logah.presets import get_preset  # noqa: E402
from logah.tasks import DataConfig  # noqa: E402
from logah.training import TrainConfig, train_ghn  # noqa: E402

GHNS = {  # equal hidden size (32): only the decoder differs between the last two
    "logah-t": get_preset("logah-t"),
    "logah-cpu": get_preset("logah-cpu"),
    "ghn3-cpu (tiled, d=32)": get_preset("ghn3-cpu"),
}


def measure(name: str, workers: int, steps: int) -> dict:
    config = TrainConfig(ghn=GHNS[name], space=space_to_dict(get_space("vits-cpu")),
                         data=DataConfig(dataset="fashion-mnist", eval_batches=1), steps=steps,
                         checkpoint_every=steps, log_every=max(1, steps // 5), heldout_archs=1)
    with tempfile.TemporaryDirectory() as tmp:
        if workers == 1:
            history = train_ghn(config, Path(tmp) / "run", progress=False)
        else:
            from logah.distributed import train_ghn_ray

            train_ghn_ray(config, Path(tmp) / "run", workers=workers)
            history = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").open()]
    windows = history[1:] or history
    mean = {k: sum(m[k] for m in windows) / len(windows) for k in ("archs_per_s", "samples_per_s")}
    return {"ghn": name, "workers": workers, **mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput.md"))
    args = parser.parse_args()
    import ray

    ray.init("local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    for name in GHNS:
        for workers in (1, 2):
            print(f"{name}, {workers} worker(s)...", file=sys.stderr)
            rows.append(measure(name, workers, args.steps))
    ray.shutdown()
    lines = [f"# GHN training throughput ({time.strftime('%Y-%m-%d')}, {platform.processor() or 'cpu'}, "
             f"{os.cpu_count()} cores)", "",
             f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`", "",
             "| GHN | workers | archs/s | samples/s |", "|---|---|---|---|"]
    lines += [f"| {r['ghn']} | {r['workers']} | {r['archs_per_s']:.1f} | {r['samples_per_s']:.0f} |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
