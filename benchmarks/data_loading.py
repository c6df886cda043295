"""Data time per training step against step time, at the paper presets' batch shapes, before and
after batches went through ``DataLoader``.

    .venv/bin/python benchmarks/data_loading.py                   # writes results/data_loading.md
    .venv/bin/python benchmarks/data_loading.py --before 1391d7d --steps 20

*Data time* is what the training loop waits for one batch: before, ``task.batch(step)`` building
it item by item on the loop's thread; after, the next batch of ``task.train_batches`` (one
vectorised gather per batch in the loop's process on a CPU; with ``--workers N`` the loader's
worker processes build batches ahead, as on a GPU machine). *Step time* is one optimizer step of
the paper's target at that batch shape (forward, backward, SGD/AdamW step) on this CPU, measured
after the data, in the same process. Shapes: ViT-S/2 (the paper's CIFAR ViT-S) on 32 px
Fashion-MNIST images at batch 64 and 128, with and without augmentation; GPT-2 small on
Shakespeare with the GPT-2 tokenizer at batch 6 x 1024 tokens (its step as 6 micro-batches of
one sequence: one pass does not fit in 24 GiB on a CPU).

*Before* is the code of ``--before`` (a commit), run from a temporary git worktree in a
subprocess; *after* is this tree, in a subprocess too. The two sides of a row run one after the
other in the same invocation, so compare them as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "1391d7d"     # the last commit that built batches by hand (tasks.py, item by item)
SHAPES = {
    "vit-s b64": dict(target="vit-s", dataset="fashion-mnist", batch=64, augment=False),
    "vit-s b64 aug": dict(target="vit-s", dataset="fashion-mnist", batch=64, augment=True),
    "vit-s b128": dict(target="vit-s", dataset="fashion-mnist", batch=128, augment=False),
    "vit-s b128 aug": dict(target="vit-s", dataset="fashion-mnist", batch=128, augment=True),
    "gpt2-s 6x1024": dict(target="gpt2-s", dataset="shakespeare", batch=6, augment=False),
}

# Run in a subprocess against one tree: prints one JSON line. Steps 0..n-1 of rank 0.
CHILD = r"""
import json, sys, time, torch
from logah.targets import resolve_target, build_model
from logah.tasks import DataConfig, make_task
spec, steps, step_steps, workers = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
arch = resolve_target(spec["target"])
data = DataConfig(dataset=spec["dataset"], batch_size=spec["batch"], block_size=1024,
                  tokenizer="gpt2", augment=spec["augment"])
task = make_task(arch, data, seed=0)
arch = task.fit(arch)
if hasattr(task, "train_batches"):
    import os
    os.environ["LOGAH_LOADER_WORKERS"] = str(workers)
    batches = task.train_batches(0, None, "cpu")
    get = lambda step: next(batches)
else:
    get = lambda step: task.batch(step, "cpu")
get(0)                                       # warm-up: first touch, worker start
times = []
for step in range(1, steps + 1):
    start = time.perf_counter()
    x, y = get(step)
    times.append(time.perf_counter() - start)
step_time = None
if step_steps:
    from logah.tasks import LanguageModeling
    model = build_model(arch, "cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    if isinstance(task, LanguageModeling):
        def forward(m, x):
            return m(input_ids=x, use_cache=False).logits
    else:
        def forward(m, x):
            return m(x)
    # GPT-2 small at 6 x 1024 needs more than 24 GiB of activations on a CPU in one pass: the
    # step runs as micro-batches of one sequence, gradients accumulated (the same update)
    micro = 1 if isinstance(task, LanguageModeling) else len(x)
    spent = []
    for _ in range(step_steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad()
        for xs, ys in zip(x.split(micro), y.split(micro)):
            (task.loss(forward(model, xs), ys) * len(xs) / len(x)).backward()
        optimizer.step()
        spent.append(time.perf_counter() - start)
    step_time = sorted(spent[1:])[len(spent[1:]) // 2]
times.sort()
print(json.dumps({"data_ms_median": 1e3 * times[len(times) // 2], "data_ms_mean": 1e3 * sum(times) / len(times),
                  "step_s": step_time, "threads": torch.get_num_threads()}))
"""


def run_child(tree: Path, spec: dict, steps: int, step_steps: int, workers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec), str(steps),
                          str(step_steps), str(workers)], cwd=tree, env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode:
        how = f"killed by signal {-out.returncode}" if out.returncode < 0 else f"exit {out.returncode}"
        raise SystemExit(f"benchmark child failed in {tree} ({how}; a SIGKILL is most often the "
                         f"kernel out of memory):\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load_1min": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="commit of the hand-built batches")
    parser.add_argument("--steps", type=int, default=30, help="batches timed per measurement")
    parser.add_argument("--step-steps", type=int, default=2, help="optimizer steps timed (0: none)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the third column")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_loading.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        before_tree = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before_tree), args.before],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            for name in args.shapes.split(","):
                spec = SHAPES[name]
                print(f"{name} ...", file=sys.stderr, flush=True)
                before = run_child(before_tree, spec, args.steps, 0, 0)
                after = run_child(ROOT, spec, args.steps, args.step_steps, 0)
                workers = run_child(ROOT, spec, args.steps, 0, args.workers)
                rows.append({"shape": name, "before": before, "after": after, "workers": workers})
                lines = write_results(args, rows)   # after every row: a later failure keeps these
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=ROOT,
                           check=False, capture_output=True)
    print("\n".join(lines))


def write_results(args: argparse.Namespace, rows: list[dict]) -> list[str]:
    """The table of ``rows`` (Markdown) and the raw rows (JSON) at ``args.out``."""
    from logah.io import atomic_write_text

    lines = ["# Data time per step vs step time (DataLoader, issue 25)", "",
             f"Command: `.venv/bin/python benchmarks/data_loading.py --before {args.before} "
             f"--steps {args.steps} --step-steps {args.step_steps} --workers {args.workers}`  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, torch threads {rows[0]['after']['threads']}; before = commit "
             f"`{args.before}` (batches item by item), after = this tree.", "",
             "| shape | data ms/step before | after (in process) | after, "
             f"{args.workers} loader workers | ratio before/after | step s (CPU) | data share of "
             "a step, before → after | load |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        b, a, w = row["before"], row["after"], row["workers"]
        step = a["step_s"]
        share = (f"{100 * b['data_ms_median'] / 1e3 / step:.2f}% → "
                 f"{100 * a['data_ms_median'] / 1e3 / step:.2f}%") if step else "–"
        lines.append(f"| {row['shape']} | {b['data_ms_median']:.2f} | {a['data_ms_median']:.2f} | "
                     f"{w['data_ms_median']:.2f} | {b['data_ms_median'] / a['data_ms_median']:.1f}× | "
                     f"{step:.2f} | {share} | {b['load_1min']:.1f} / {a['load_1min']:.1f} |")
    lines += ["", "Medians over the timed batches (the first, with start-up, excluded). GPT-2's "
              "step runs as 6 micro-batches of one 1024-token sequence, gradients accumulated "
              "(one pass needs more than 24 GiB on a CPU). Raw measurements: `data_loading.json`."]
    out = Path(args.out)
    atomic_write_text(out, "\n".join(lines) + "\n")
    atomic_write_text(out.with_suffix(".json"), json.dumps(rows, indent=1) + "\n")
    return lines


if __name__ == "__main__":
    main()
