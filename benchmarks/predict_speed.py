"""Wall time and peak memory of ``logah predict`` (untrained ``logah-t``) against the library's
own random initialisation of the same model.

For each target (GPT-2 S/M/L, ViT-S/B/L) two sides are measured, each in a FRESH subprocess, the
subprocesses run one after the other (never in parallel):

* ``init``: ``logah.targets.build_model(arch, "cpu")``, i.e. Hugging Face ``GPT2LMHeadModel`` /
  torchvision ``VisionTransformer`` with their default random initialisation;
* ``predict``: ``logah.predict.predict_params(ghn, arch)`` with ``ghn = resolve_ghn("logah-t")``
  (graph building + GHN forward + decoding + post-processing), then, timed separately,
  ``save_prediction`` into a temporary folder.

Both children import the same modules first (torch, transformers' GPT-2, torchvision's ViT, logah),
so only the measured call is timed. Peak memory is the increase of the process's resident set
during the measured call: the kernel's high-water mark (VmHWM) is reset to the current RSS right
before the call (``/proc/self/clear_refs``) and read right after it, so no sampling thread competes
for the GIL; a 2 ms sampling thread is the fallback where the reset is not allowed. The repeats of
a target are interleaved with the other targets and the side that runs first alternates, so slow
drifts of a shared machine hit both sides alike; the table reports medians.

    python benchmarks/predict_speed.py                       # all targets, 3 repeats (make bench)
    python benchmarks/predict_speed.py --targets gpt2-l --repeats 5
    python benchmarks/predict_speed.py --quick               # 1 repeat

Results: ``benchmarks/results/predict_speed.md`` (table, command, environment) and
``predict_speed.json`` (every raw measurement), both written atomically.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

from logah.provenance import cpu_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = ("gpt2-s", "gpt2-m", "gpt2-l", "vit-s", "vit-b", "vit-l")
SIDES = ("init", "predict")
GHN_NAME = "logah-t"
# The targets, checked on GPT-2-L.
CHECK_TARGET, MAX_TIME_RATIO, MAX_PEAK_RATIO = "gpt2-l", 1 / 3, 1.5


# ----------------------------------------------------------------------------------- child side

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


class PeakRSS:
    """Peak resident set size (bytes) reached inside the ``with`` block."""

    def __init__(self) -> None:
        self.before = self.peak = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self.before = _status_kb("VmRSS") * 1024
        try:   # reset the kernel's high-water mark to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM reset via /proc/self/clear_refs"
        except OSError:
            self.method = "VmRSS sampled every 2 ms"
            self.peak = self.before
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _status_kb("VmRSS") * 1024)

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            self.peak = _status_kb("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _status_kb("VmRSS") * 1024)

    @property
    def increase(self) -> int:
        return max(0, self.peak - self.before)


def _unique_bytes(tensors) -> tuple[int, int]:
    """(number of elements, bytes) of distinct tensors (a tied tensor counts once)."""
    seen, numel, nbytes = set(), 0, 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            numel += t.numel()
            nbytes += t.numel() * t.element_size()
    return numel, nbytes


def run_child(side: str, target: str) -> dict:
    """One measurement in this (fresh) process; returns a JSON-ready record."""
    import gc
    import shutil

    import torch
    import torchvision
    import transformers
    from torchvision.models import VisionTransformer
    from transformers import GPT2LMHeadModel

    from logah.checkpoint import resolve_ghn
    from logah.predict import predict_params, save_prediction
    from logah.targets import NAMED_TARGETS, build_model

    _ = (VisionTransformer, GPT2LMHeadModel)   # both sides import both model families up front
    arch = NAMED_TARGETS[target]
    record = {"side": side, "target": target, "torch_threads": torch.get_num_threads(),
              "torch": torch.__version__, "transformers": transformers.__version__,
              "torchvision": torchvision.__version__,
              "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
              "load1_at_start": os.getloadavg()[0]}
    if side == "init":
        gc.collect()
        with PeakRSS() as mem:
            start = time.perf_counter()
            model = build_model(arch, "cpu")
            record["seconds"] = time.perf_counter() - start
        record["numel"], record["param_bytes"] = _unique_bytes(model.parameters())
    else:
        ghn = resolve_ghn(GHN_NAME)
        gc.collect()
        with PeakRSS() as mem:
            start = time.perf_counter()
            params = predict_params(ghn, arch)
            record["seconds"] = time.perf_counter() - start
        record["numel"], record["param_bytes"] = _unique_bytes(params.values())
        tmp = Path(tempfile.mkdtemp(prefix="logah-bench-"))
        try:
            start = time.perf_counter()
            save_prediction(arch, params, tmp / target)
            record["save_seconds"] = time.perf_counter() - start
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    record["rss_before"], record["peak_rss"] = mem.before, mem.peak
    record["peak_increase"], record["memory_method"] = mem.increase, mem.method
    return record


# ---------------------------------------------------------------------------------- parent side

def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _spawn(side: str, target: str, env: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, target]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"benchmark child {side} {target} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "unavailable"


def _median(records: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in records)


def summarise(runs: list[dict], targets: list[str]) -> list[dict]:
    """Median of every measured quantity, per target."""
    rows = []
    for target in targets:
        init = [r for r in runs if r["target"] == target and r["side"] == "init"]
        pred = [r for r in runs if r["target"] == target and r["side"] == "predict"]
        row = {"target": target, "numel": pred[0]["numel"], "param_bytes": pred[0]["param_bytes"],
               "init_numel": init[0]["numel"], "repeats": len(pred),
               "init_s": _median(init, "seconds"), "predict_s": _median(pred, "seconds"),
               "save_s": _median(pred, "save_seconds"),
               "predict_peak_increase": _median(pred, "peak_increase"),
               "init_peak_increase": _median(init, "peak_increase"),
               "init_s_all": [r["seconds"] for r in init],
               "predict_s_all": [r["seconds"] for r in pred]}
        row["time_ratio"] = row["predict_s"] / row["init_s"]
        row["peak_ratio"] = row["predict_peak_increase"] / row["param_bytes"]
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = ("| target | params (M) | baseline init s | predict s | ratio predict/init | "
            "save s (separate) | predict peak ΔRSS GB | params GB | ratio peak/params | "
            "init peak ΔRSS GB |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['numel'] / 1e6:.1f} | {r['init_s']:.2f} | "
                     f"{r['predict_s']:.2f} | {r['time_ratio']:.3f} | {r['save_s']:.2f} | "
                     f"{r['predict_peak_increase'] / 1e9:.2f} | {r['param_bytes'] / 1e9:.2f} | "
                     f"{r['peak_ratio']:.2f} | {r['init_peak_increase'] / 1e9:.2f} |")
    return "\n".join(lines)


def target_check(rows: list[dict]) -> list[str]:
    row = next((r for r in rows if r["target"] == CHECK_TARGET), None)
    if row is None:
        return [f"{CHECK_TARGET} not measured in this run: targets not checked."]
    t_ok = row["time_ratio"] <= MAX_TIME_RATIO
    m_ok = row["peak_ratio"] <= MAX_PEAK_RATIO
    return [
        (f"- time: predict / init = {row['predict_s']:.2f} s / {row['init_s']:.2f} s = "
         f"{row['time_ratio']:.3f} (target ≤ {MAX_TIME_RATIO:.3f}): **{'met' if t_ok else 'NOT met'}**"),
        (f"- memory: predict peak ΔRSS / predicted bytes = {row['predict_peak_increase'] / 1e9:.2f} GB"
         f" / {row['param_bytes'] / 1e9:.2f} GB = {row['peak_ratio']:.2f} (target ≤ "
         f"{MAX_PEAK_RATIO}): **{'met' if m_ok else 'NOT met'}**"),
    ]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per side (median)")
    parser.add_argument("--quick", action="store_true", help="one repeat (a fast, rough run)")
    parser.add_argument("--thp", action="store_true",
                        help="set THP_MEM_ALLOC_ENABLE=1 (transparent huge pages for large torch "
                             "CPU allocations) for BOTH sides")
    parser.add_argument("--output-dir", default=str(HERE / "results"),
                        help="where predict_speed.md/.json go (default benchmarks/results)")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(*args.child)))
        return 0

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        parser.error(f"--targets: unknown {unknown}; choose from {','.join(TARGETS)}")
    repeats = 1 if args.quick else args.repeats
    if repeats < 1:
        parser.error("--repeats must be at least 1")

    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.thp:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    else:
        env.pop("THP_MEM_ALLOC_ENABLE", None)

    runs: list[dict] = []
    total, done = repeats * len(targets) * len(SIDES), 0
    started = time.perf_counter()
    for rep in range(repeats):
        for target in targets:
            sides = SIDES if rep % 2 == 0 else SIDES[::-1]   # alternate who runs first
            for side in sides:
                done += 1
                _log(f"({done}/{total}) repeat {rep + 1}/{repeats} {target}: {side} ...")
                rec = _spawn(side, target, env)
                rec["repeat"] = rep
                runs.append(rec)
                extra = f", save {rec['save_seconds']:.2f}s" if side == "predict" else ""
                _log(f"    {side} {target}: {rec['seconds']:.2f}s{extra}, peak ΔRSS "
                     f"{rec['peak_increase'] / 1e9:.2f} GB")
    for target in targets:
        a = {r["numel"] for r in runs if r["target"] == target}
        if len(a) != 1:
            raise SystemExit(f"{target}: init and predict disagree on the parameter count {a}")

    rows = summarise(runs, targets)
    table = markdown_table(rows)
    print(table)
    check = target_check(rows)
    print("\n".join(check))

    def short(path: str) -> str:   # relative to the working directory when inside it
        rel = os.path.relpath(path)
        return path if rel.startswith("..") else rel

    command = shlex.join([short(sys.executable), short(str(Path(__file__).resolve())),
                          *(argv if argv is not None else sys.argv[1:])])
    first = runs[0]
    env_info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": first["torch_threads"], "torch": first["torch"],
        "transformers": first["transformers"], "torchvision": first["torchvision"],
        "python": platform.python_version(), "kernel": platform.release(),
        "thp_mem_alloc_enable": first["thp_mem_alloc_enable"] or "unset",
        "thp_sysfs": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "memory_method": first["memory_method"], "repeats": repeats, "ghn": GHN_NAME,
        "load1_min": min(r["load1_at_start"] for r in runs),
        "load1_median": statistics.median(r["load1_at_start"] for r in runs),
        "load1_max": max(r["load1_at_start"] for r in runs),
        "wall_seconds": time.perf_counter() - started,
    }
    md = "\n".join([
        "# `logah predict` speed and memory vs. the library's random init",
        "",
        "Generated by `benchmarks/predict_speed.py` (see `benchmarks/README.md`); do not edit by hand.",
        "",
        "```",
        command,
        "```",
        "",
        f"- date: {env_info['date']}",
        (f"- CPU: {env_info['cpu']} ({env_info['cpu_count']} logical CPUs), torch threads "
         f"{env_info['torch_threads']}"),
        (f"- torch {env_info['torch']}, transformers {env_info['transformers']}, torchvision "
         f"{env_info['torchvision']}, Python {env_info['python']}, Linux {env_info['kernel']}"),
        (f"- THP_MEM_ALLOC_ENABLE: {env_info['thp_mem_alloc_enable']} (same for both sides); "
         f"/sys/kernel/mm/transparent_hugepage/enabled: `{env_info['thp_sysfs']}`"),
        (f"- GHN: untrained `{GHN_NAME}`; medians of {repeats} repeat(s); each measurement in a "
         f"fresh process, run sequentially; peak memory: {env_info['memory_method']}"),
        (f"- 1-minute load average when each child started: min {env_info['load1_min']:.2f}, "
         f"median {env_info['load1_median']:.2f}, max {env_info['load1_max']:.2f} on "
         f"{env_info['cpu_count']} CPUs (the machine is shared; other jobs slow `predict`'s 2-thread "
         "matrix products more than the mostly serial random init, see benchmarks/README.md)"),
        "",
        table,
        "",
        ("Columns: *baseline init s* is `build_model(arch, \"cpu\")` (Hugging Face / torchvision "
         "default random init); *predict s* is `predict_params` (graph + GHN forward + decoding + "
         "post-processing) after imports and GHN construction; *save s* is `save_prediction` to a "
         "temporary folder, timed separately and not included in *predict s*; *peak ΔRSS* is the "
         "increase of resident memory during the call over the resident memory right before it; "
         "*params GB* counts the predicted tensors (float32)."),
        "",
        (f"Targets ({CHECK_TARGET}): predict time ≤ 1/3 of the init time, predict peak ΔRSS ≤ "
         f"{MAX_PEAK_RATIO}× the predicted bytes."),
        "",
        *check,
        "",
    ])
    out_dir = Path(args.output_dir)
    _atomic_write(out_dir / "predict_speed.json",
                  json.dumps({"environment": env_info, "summary": rows, "runs": runs}, indent=1) + "\n")
    _atomic_write(out_dir / "predict_speed.md", md)
    _log(f"wrote {out_dir / 'predict_speed.md'} and {out_dir / 'predict_speed.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
