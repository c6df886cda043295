"""Large Llamas predicted tensor by tensor into safetensors shards (``logah predict``) against
Hugging Face's own random init of the same model, with the disk's write rate as the floor.

Cases (``--cases``; default all three):

* ``tinyllama-1.1b:float32`` and ``tinyllama-1.1b:bfloat16``: two sides, each in a FRESH
  subprocess, run one after the other (never in parallel), the side that runs first alternating
  between repeats:

  - ``predict``: the ``logah predict --ghn logah-t --target T --out DIR --dtype D`` command
    itself (``logah.cli.main`` in the child, untrained ``logah-t`` as in ``predict_speed.py``):
    GHN build, graph tracing, then ``predict_to_folder``, which streams each tensor into the
    shards as it is computed;
  - ``hf``: ``LlamaForCausalLM(config)`` on the CPU in float32 (Hugging Face's random init; the
    config is the one ``logah predict`` writes), then ``save_pretrained`` to the same disk (for
    bfloat16, ``model.to(torch.bfloat16)`` first, timed with the save), so that both sides end
    with a folder ``from_pretrained`` loads. Init and save are timed separately.

* ``llama-3.1-8b:bfloat16``: the ``predict`` side alone (Hugging Face's float32 init of the 8B
  model needs 32 GB), followed by checks (``--child check``): peak RSS below ``--max-peak-gib``
  (4 GiB); ``model.safetensors.index.json`` lists exactly the parameters of
  ``LlamaForCausalLM`` built on the ``meta`` device from the model's published config (shapes
  read from the shard headers; no tensor is loaded), each shard holds exactly the tensors the index
  maps to it, the sizes add up to ``num_parameters()`` and to 8,030,261,248; the folder's
  ``config.json`` loads with ``AutoConfig.from_pretrained`` and equals the published shape. The
  same checks run on every predicted folder; tinyllama's predicted folders are also loaded with
  ``LlamaForCausalLM.from_pretrained`` and run forward once.

Every side reports: wall time of the whole process (interpreter start to exit, imports
included) and of its steps; *flush*: ``fsync`` of every file it wrote, run by the parent right
after the child exits (neither ``logah predict`` nor ``save_pretrained`` fsyncs, so what is
still in the page cache is written then), timed separately; peak RSS of the process (the
kernel's high-water mark VmHWM, read by the process itself) and the resident set after its
imports; the bytes written (the sizes of the files in the folder). The disk's sequential write rate
(``--child disk``: ``--disk-bytes`` of random data, 64 MiB writes, then ``fsync``, timed; by
default as many bytes as the 8B output) is measured on the same filesystem before and after
the cases; *floor s* = bytes written / the median rate, the time the disk alone needs.

Before each measurement the parent waits (up to ``--load-wait`` s) for the 1-minute load
average to drop below ``--load-max`` and records it; it ``sync``s before each child, so earlier
writes are not flushed inside a measurement, and deletes every output afterwards.

    python benchmarks/predict_large.py                  # all cases; tinyllama 3 repeats, 8B twice
    python benchmarks/predict_large.py --cases tinyllama-1.1b:bfloat16 --repeats 1
    python benchmarks/predict_large.py --quick          # 1 repeat, 4 GiB disk test

Results: ``benchmarks/results/predict_large.md`` (table, command, environment) and
``predict_large.json`` (every raw measurement), both written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from logah.provenance import cpu_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GIB = 2**30
GHN_NAME = "logah-t"
DEFAULT_CASES = ("tinyllama-1.1b:float32", "tinyllama-1.1b:bfloat16", "llama-3.1-8b:bfloat16")
HF_TARGETS = ("tinyllama-1.1b",)          # where Hugging Face's float32 init fits in memory
LARGE_TARGET, LARGE_PARAMS = "llama-3.1-8b", 8_030_261_248
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}
ST_CODE = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
INDEX_FILE = "model.safetensors.index.json"
# The published configs of the models whose shapes the named targets copy (config.json on the
# Hugging Face Hub: meta-llama/Llama-3.1-8B, TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T,
# HuggingFaceTB/SmolLM2-135M), the fields that fix the parameters. The checks build
# LlamaForCausalLM from these, not from logah's own config, so they do not check logah against
# itself.
PUBLISHED = {
    "llama-3.1-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                     "tie_word_embeddings": False},
    "tinyllama-1.1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                       "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
                       "tie_word_embeddings": False},
    "smollm2-135m": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                     "tie_word_embeddings": True},
}


# ----------------------------------------------------------------------------------- child side

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


class Memory:
    """This process's resident set: after the imports, and its peak (the kernel's high-water
    mark, VmHWM) over the whole process and since the imports. The process reads its own
    VmHWM: ``ru_maxrss`` from ``wait4`` in the parent would not do, since Linux carries the
    high-water mark of the address space that ``exec`` replaces, the parent's when Python
    spawns with ``vfork``, into the child's ``maxrss``."""

    def __init__(self) -> None:
        self.rss_after_imports = _status_kb("VmRSS") * 1024
        self.peak_imports = _status_kb("VmHWM") * 1024
        try:   # reset VmHWM to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False

    def peak_since_imports(self) -> int | None:
        return _status_kb("VmHWM") * 1024 if self.reset else None

    def record(self) -> dict:
        hwm = _status_kb("VmHWM") * 1024
        return {"rss_after_imports": self.rss_after_imports,
                "peak_after_imports": hwm if self.reset else None,
                "peak_rss": max(hwm, self.peak_imports),
                "memory_method": ("VmHWM of the process, reset after the imports through "
                                  "/proc/self/clear_refs" if self.reset else "VmHWM of the process")}


def _versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


# What both measured sides import before their imports' resident set is read: what
# ``logah predict`` imports (torch, transformers' Llama, logah's CLI, GHN, graph and predict
# modules), so the two sides start from the same baseline.
COMMON_IMPORTS = ("torch", "transformers.models.llama.modeling_llama", "logah.checkpoint",
                  "logah.graph", "logah.predict", "logah.cli")


def _import_common() -> None:
    import importlib

    for name in COMMON_IMPORTS:
        importlib.import_module(name)


def child_predict(target: str, dtype: str, out: str) -> dict:
    """``logah predict`` in this process, after the imports it makes (so that the resident set
    they cost is known)."""
    t0 = time.perf_counter()
    _import_common()
    from logah.cli import main

    record = {"imports_s": time.perf_counter() - t0, **_versions()}
    memory = Memory()
    argv = ["predict", "--ghn", GHN_NAME, "--target", target, "--out", out, "--dtype", dtype]
    buf = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    record["main_s"] = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"logah {' '.join(argv)} failed with exit status {code}")
    text = buf.getvalue()
    match = re.search(r"in ([\d.]+) s \(graph traced in ([\d.]+) s\)", text)
    record["predict_to_folder_s"] = float(match.group(1)) if match else None
    record["trace_s"] = float(match.group(2)) if match else None
    if match:   # the rest of main(): resolving the target, building the GHN, printing
        record["ghn_s"] = record["main_s"] - record["predict_to_folder_s"] - record["trace_s"]
    record["cli_output"] = text.strip()
    record["cli_argv"] = ["logah", *argv]
    record.update(memory.record())
    return record


def child_hf(target: str, dtype: str, out: str) -> dict:
    """Hugging Face's random init of ``target`` in float32 on the CPU, then ``save_pretrained``
    (cast to ``dtype`` first when it is not float32)."""
    t0 = time.perf_counter()
    _import_common()
    import torch
    from transformers import LlamaForCausalLM

    from logah.families.llama import FAMILY, TARGETS

    config = FAMILY.hf_config(TARGETS[target])   # the config logah predict writes
    record = {"imports_s": time.perf_counter() - t0, **_versions()}
    memory = Memory()
    start = time.perf_counter()
    model = LlamaForCausalLM(config)
    record["init_s"] = time.perf_counter() - start
    record["init_dtype"] = str(next(model.parameters()).dtype)
    record["numel"] = model.num_parameters()
    record["peak_init"] = memory.peak_since_imports()
    start = time.perf_counter()
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    record["cast_s"] = time.perf_counter() - start
    model.save_pretrained(out)
    record["save_s"] = time.perf_counter() - start       # the cast included
    record.update(memory.record())
    return record


def child_breakdown(target: str, dtype: str, out: str, variant: str) -> dict:
    """Where ``predict_to_folder``'s time goes: the same stream (``GHN.stream``), consumed the
    way ``predict_to_folder`` and ``ShardWriter.write`` consume it, each stage timed, the bytes
    written to one file in ``out`` (the shard headers and index are left out: a few KB).

    ``variant``: ``current`` does what ``logah`` does now (a fresh product per row block, a
    ``torch.isfinite(block).all()`` check in float32, ``.to(dtype)``, the stream's generator
    running under the caller's grad mode, which is on); ``proposed`` runs the stream under
    ``torch.no_grad()``, computes each row block into one reused float32 buffer
    (``torch.matmul(..., out=)``), casts it into a reused buffer of the output dtype and checks
    finiteness on what is written with ``torch.aminmax`` (one pass, no temporary; NaN
    propagates); ``overlap`` is ``proposed`` with the ``write()`` calls on one worker thread
    (two output buffers in turn), so computing the next block overlaps writing this one. With
    ``overlap`` the *write* stage is the time spent waiting for the writer."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from logah.checkpoint import resolve_ghn
    from logah.graph import graph_of
    from logah.shards import torch_dtype
    from logah.targets import resolve_target

    if variant not in ("current", "proposed", "overlap"):
        raise SystemExit(f"unknown variant {variant}")
    record = {"variant": variant, **_versions()}
    arch = resolve_target(target)
    ghn = resolve_ghn(GHN_NAME)
    start = time.perf_counter()
    graph = graph_of(arch, ghn.config.edge_cutoff)
    record["trace_s"] = time.perf_counter() - start
    memory = Memory()
    cast_to = torch_dtype(dtype)
    times = dict.fromkeys(("stream", "product", "finite", "cast", "write"), 0.0)
    new = variant != "current"
    max_elements = 2**24                      # LowRank.blocks' default row block
    buf32 = torch.empty(max_elements) if new else None
    bufs_out = [torch.empty(max_elements, dtype=cast_to) for _ in range(2)] if new else []
    pending = [None, None]                    # the writer's future for each output buffer
    pool = ThreadPoolExecutor(1) if variant == "overlap" else None
    os.makedirs(out)
    nbytes = turn = 0
    last = None

    def finite(data) -> bool:
        if not new:
            return bool(torch.isfinite(data).all())
        lo, hi = torch.aminmax(data)
        return bool(torch.isfinite(lo) & torch.isfinite(hi))

    def write(f, data, slot) -> None:
        nonlocal last
        raw = memoryview(data.view(torch.uint8).numpy())
        if pool is None:
            f.write(raw)
        else:
            last = pool.submit(f.write, raw)
            if slot is not None:
                pending[slot] = last

    grad = torch.no_grad() if new else contextlib.nullcontext()
    t_all = time.perf_counter()
    with open(os.path.join(out, "weights.bin"), "wb") as f, grad:
        _, values = ghn.stream(graph)
        it = iter(values)
        while True:
            t = time.perf_counter()
            item = next(it, None)
            times["stream"] += time.perf_counter() - t
            if item is None:
                break
            _, value = item
            if new and hasattr(value, "left"):
                rows, cols = value.shape
                step = max(1, max_elements // max(1, cols))
                right_t = value.right.t()
                for s in range(0, rows, step):
                    n = min(step, rows - s)
                    t = time.perf_counter()
                    block = torch.matmul(value.left[s:s + n], right_t,
                                         out=buf32[:n * cols].view(n, cols))
                    t2 = time.perf_counter()
                    if pending[turn] is not None:    # the writer is done with this buffer
                        pending[turn].result()
                    t3 = time.perf_counter()
                    data = bufs_out[turn][:n * cols].view(n, cols)
                    data.copy_(block)
                    t4 = time.perf_counter()
                    if not finite(data):
                        raise SystemExit("not finite")
                    t5 = time.perf_counter()
                    write(f, data, turn)
                    t6 = time.perf_counter()
                    turn = 1 - turn
                    times["product"] += t2 - t
                    times["cast"] += t4 - t3
                    times["finite"] += t5 - t4
                    times["write"] += (t3 - t2) + (t6 - t5)
                    nbytes += data.numel() * data.element_size()
                continue
            blocks = value.blocks() if hasattr(value, "blocks") else iter([value])
            while True:
                t = time.perf_counter()
                block = next(blocks, None)
                t2 = time.perf_counter()
                times["product"] += t2 - t
                if block is None:
                    break
                if new:    # cast, then check what is written
                    data = block.detach().to(dtype=cast_to).contiguous()
                    t3 = time.perf_counter()
                    ok = finite(data)
                    t4 = time.perf_counter()
                    times["cast"] += t3 - t2
                    times["finite"] += t4 - t3
                else:      # as ShardWriter: check the float32 block, then cast
                    ok = finite(block)
                    t3 = time.perf_counter()
                    data = block.detach().to(device="cpu", dtype=cast_to).contiguous()
                    t4 = time.perf_counter()
                    times["finite"] += t3 - t2
                    times["cast"] += t4 - t3
                if not ok:
                    raise SystemExit("not finite")
                write(f, data, None)               # a fresh tensor: the future keeps it alive
                times["write"] += time.perf_counter() - t4
                nbytes += data.numel() * data.element_size()
        t = time.perf_counter()
        if pool is not None:
            pool.shutdown(wait=True)
            if last is not None:
                last.result()
        times["write"] += time.perf_counter() - t
    record["total_s"] = time.perf_counter() - t_all
    record["stages_s"] = times
    record["weight_bytes"] = nbytes
    record.update(memory.record())
    if nbytes <= 5 * GIB:   # after the timing: are the variants' bytes the same?
        import hashlib

        digest = hashlib.sha256()
        with open(os.path.join(out, "weights.bin"), "rb") as f:
            while chunk := f.read(2**26):
                digest.update(chunk)
        record["sha256"] = digest.hexdigest()
    return record


def child_disk(path: str, nbytes: int) -> dict:
    """Sequential write rate: ``nbytes`` of random data in 64 MiB writes, then fsync."""
    block = os.urandom(64 * 2**20)
    view = memoryview(block)
    os.sync()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        start = time.perf_counter()
        left = nbytes
        while left > 0:
            left -= os.write(fd, view[:min(left, len(block))])
        written = time.perf_counter() - start
        os.fsync(fd)
        total = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)
    return {"bytes": nbytes, "write_s": written, "write_fsync_s": total,
            "rate": nbytes / total, "block": len(block)}


def read_header(path: Path) -> dict:
    """A safetensors file's header (tensor name -> dtype, shape, data_offsets), without its data."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return {"header_bytes": 8 + length, "tensors": header}


def check_folder(target: str, dtype: str, folder: Path) -> dict:
    """The predicted folder against Hugging Face: names, shapes, dtypes, sizes and config."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    from logah.families.llama import TARGETS

    failures: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            failures.append(what)

    published = PUBLISHED[target]
    with torch.device("meta"):
        reference = LlamaForCausalLM(LlamaConfig(**published))
    ref_shapes = {n: list(p.shape) for n, p in reference.named_parameters()}
    hf_numel = reference.num_parameters()

    index_path = folder / INDEX_FILE
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        weight_map = index["weight_map"]
    else:
        index, weight_map = None, {n: "model.safetensors" for n in
                                   read_header(folder / "model.safetensors")["tensors"]}
    shards = sorted(set(weight_map.values()))
    shapes, numel, files_ok = {}, 0, True
    for shard in shards:
        head = read_header(folder / shard)
        tensors = head["tensors"]
        mapped = {n for n, s in weight_map.items() if s == shard}
        need(set(tensors) == mapped, f"{shard}: holds {len(tensors)} tensors, index maps "
                                     f"{len(mapped)} to it")
        end = 0
        for name, info in tensors.items():
            shapes[name] = info["shape"]
            count = 1
            for d in info["shape"]:
                count *= d
            numel += count
            need(info["dtype"] == ST_CODE[dtype], f"{name}: dtype {info['dtype']}")
            start, stop = info["data_offsets"]
            need(stop - start == count * ITEMSIZE[dtype], f"{name}: byte range")
            end = max(end, stop)
        size = (folder / shard).stat().st_size
        files_ok &= size == head["header_bytes"] + end
    need(files_ok, "a shard's file size differs from its header's")
    names_equal = set(weight_map) == set(ref_shapes)
    need(names_equal, f"index names differ from HF's: missing "
                      f"{sorted(set(ref_shapes) - set(weight_map))[:5]}, extra "
                      f"{sorted(set(weight_map) - set(ref_shapes))[:5]}")
    bad_shapes = [n for n in ref_shapes if n in shapes and shapes[n] != ref_shapes[n]]
    need(not bad_shapes, f"shapes differ from HF's: {bad_shapes[:5]}")
    need(numel == hf_numel, f"parameter count {numel} != HF's num_parameters() {hf_numel}")
    need(numel == TARGETS[target].num_params(), "parameter count != logah's count")
    if target == LARGE_TARGET:
        need(numel == LARGE_PARAMS, f"parameter count {numel} != {LARGE_PARAMS:,}")
    if index is not None:
        need(index["metadata"]["total_size"] == numel * ITEMSIZE[dtype], "index total_size")

    config = AutoConfig.from_pretrained(folder)
    config_fields = {k: getattr(config, k) for k in published}
    need(type(config) is LlamaConfig and config_fields == published,
         f"config.json: {type(config).__name__} {config_fields}")
    with torch.device("meta"):
        from_config = LlamaForCausalLM(config)
    need({n: list(p.shape) for n, p in from_config.named_parameters()} == ref_shapes,
         "LlamaForCausalLM(AutoConfig of the folder) has other shapes")

    first, last = next(iter(weight_map)), list(weight_map)[-1]
    spot = {}
    for name in (first, last):   # two tensors read back, nothing else
        with safe_open(str(folder / weight_map[name]), framework="pt") as f:
            t = f.get_tensor(name)
        spot[name] = {"dtype": str(t.dtype), "finite": bool(torch.isfinite(t.float()).all()),
                      "std": float(t.float().std())}
        need(spot[name]["finite"] and t.dtype == getattr(torch, dtype), f"{name}: {spot[name]}")
        del t

    record = {"target": target, "dtype": dtype, "tensors": len(weight_map),
              "hf_tensors": len(ref_shapes), "shards": len(shards), "has_index": index is not None,
              "numel": numel, "hf_num_parameters": hf_numel, "names_equal": names_equal,
              "shapes_equal": names_equal and not bad_shapes, "config_loads": True,
              "config_fields": config_fields, "spot_read": spot}
    if target in HF_TARGETS:   # small enough to load: from_pretrained and one forward
        start = time.perf_counter()
        model = LlamaForCausalLM.from_pretrained(folder)
        with torch.no_grad():
            logits = model(torch.arange(8).unsqueeze(0)).logits
        record["from_pretrained_forward_s"] = time.perf_counter() - start
        record["forward_finite"] = bool(torch.isfinite(logits.float()).all())
        need(record["forward_finite"], "from_pretrained + forward: logits not finite")
    record["failures"] = failures
    record["ok"] = not failures
    return record


# ---------------------------------------------------------------------------------- parent side

def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _spawn(args: list[str], env: dict) -> dict:
    """Run this script as a child; returns its JSON record (its own peak RSS among them) plus
    the process's wall time and CPU time."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.stderr.write(stderr[-5000:])
        raise SystemExit(f"benchmark child {' '.join(args)} failed (exit {proc.returncode})")
    record = json.loads(stdout.strip().splitlines()[-1])
    record["process_s"] = wall
    record["cpu_user_s"], record["cpu_sys_s"] = usage.ru_utime, usage.ru_stime
    return record


def _wait_for_load(limit: float, patience: float) -> tuple[float, float]:
    """Wait (at most ``patience`` s) for the 1-minute load average to drop below ``limit``;
    returns (load, seconds waited)."""
    start = time.monotonic()
    load = os.getloadavg()[0]
    while load > limit and time.monotonic() - start < patience:
        _log(f"    load {load:.2f} > {limit}: waiting")
        time.sleep(20)
        load = os.getloadavg()[0]
    return load, time.monotonic() - start


def _flush(folder: Path) -> tuple[float, int, int]:
    """fsync every file of ``folder``: (seconds, bytes in the folder, number of files)."""
    start = time.perf_counter()
    nbytes = nfiles = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            nbytes += path.stat().st_size
            nfiles += 1
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return time.perf_counter() - start, nbytes, nfiles


def _filesystem(path: Path) -> str:
    proc = subprocess.run(["df", "-hT", str(path)], capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    return " ".join(lines[-1].split()) if proc.returncode == 0 and lines else "unknown"


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


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict], cases: list[tuple[str, str]], rate: float) -> list[dict]:
    rows = []
    for target, dtype in cases:
        for side in ("predict", "hf"):
            recs = [r for r in runs if (r["target"], r["dtype"], r["side"]) == (target, dtype, side)]
            if not recs:
                continue
            row = {"target": target, "dtype": dtype, "side": side, "repeats": len(recs),
                   "numel": recs[0]["numel"]}
            for key in ("process_s", "flush_s", "durable_s", "peak_rss", "rss_after_imports",
                        "peak_after_imports", "bytes_written", "imports_s", "ghn_s", "trace_s",
                        "predict_to_folder_s", "init_s", "cast_s", "save_s", "cpu_user_s",
                        "cpu_sys_s", "load1_at_start"):
                row[key] = _median(r.get(key) for r in recs)
            row["process_s_all"] = [r["process_s"] for r in recs]
            row["durable_s_all"] = [r["durable_s"] for r in recs]
            row["floor_s"] = row["bytes_written"] / rate
            row["files"] = recs[0]["files"]
            rows.append(row)
    return rows


def _gib(n) -> str:
    return "–" if n is None else f"{n / GIB:.2f}"


def _s(x) -> str:
    return "–" if x is None else f"{x:.1f}"


def markdown_table(rows: list[dict]) -> str:
    head = ("| target | dtype | side | params | steps (s) | process s | flush s | to disk s | "
            "floor s | peak RSS GiB | RSS after imports GiB | written GiB | files | load1 |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if r["side"] == "predict":
            side = "`logah predict` (stream)"
            steps = (f"GHN {_s(r['ghn_s'])} + trace {_s(r['trace_s'])} + predict & write "
                     f"{_s(r['predict_to_folder_s'])}")
        else:
            side = "HF init + `save_pretrained`"
            cast = f" (cast {_s(r['cast_s'])})" if r["dtype"] != "float32" else ""
            steps = f"init {_s(r['init_s'])} + save {_s(r['save_s'])}{cast}"
        lines.append(
            f"| {r['target']} | {r['dtype']} | {side} | {r['numel'] / 1e9:.3f} B | {steps} | "
            f"{_s(r['process_s'])} | {_s(r['flush_s'])} | {_s(r['durable_s'])} | "
            f"{_s(r['floor_s'])} | {_gib(r['peak_rss'])} | {_gib(r['rss_after_imports'])} | "
            f"{_gib(r['bytes_written'])} | {r['files']} | {r['load1_at_start']:.2f} |")
    return "\n".join(lines)


VARIANTS = ("current", "proposed", "overlap")
STAGES = {"stream": "GHN factors", "product": "row-block products", "finite": "finite check",
          "cast": "cast", "write": "write()"}


def breakdown_table(records: list[dict], rate: float) -> str:
    head = ("| target | dtype | variant | " + " | ".join(f"{v} s" for v in STAGES.values())
            + " | total s | flush s | floor s | peak RSS GiB | load1 |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in records:
        st = r["stages_s"]
        lines.append(f"| {r['target']} | {r['dtype']} | {r['variant']} | "
                     + " | ".join(f"{st[k]:.1f}" for k in STAGES)
                     + f" | {r['total_s']:.1f} | {r['flush_s']:.1f} | "
                       f"{r['bytes_written'] / rate:.1f} | {r['peak_rss'] / GIB:.2f} | "
                       f"{r['load1_at_start']:.2f} |")
    return "\n".join(lines)


def notes(rows: list[dict], records: list[dict], rate: float) -> list[str]:
    """What dominates the time, from this run's numbers."""
    out = []
    for r in rows:
        what = f"{r['target']} {r['dtype']}"
        if r["side"] == "predict":
            work = r["predict_to_folder_s"]
            busy = (r["cpu_user_s"] + r["cpu_sys_s"]) / r["process_s"]
            out.append(f"- {what}, `logah predict`: `predict_to_folder` {work:.1f} s of the "
                       f"{r['process_s']:.1f} s process (imports {r['imports_s']:.1f} s, graph "
                       f"{r['trace_s']:.1f} s); it is {work / r['floor_s']:.1f}x the disk's "
                       f"floor ({r['floor_s']:.1f} s for {r['bytes_written'] / GIB:.2f} GiB); the "
                       f"process kept {busy:.2f} of 2 cores busy on average (user+sys CPU / wall)")
        else:
            out.append(f"- {what}, Hugging Face: init {r['init_s']:.1f} s + save "
                       f"{r['save_s']:.1f} s; peak RSS {r['peak_rss'] / GIB:.2f} GiB, "
                       f"{r['peak_rss'] / r['bytes_written']:.1f}x the bytes it writes")
    pairs = {}
    for b in records:
        pairs.setdefault((b["target"], b["dtype"]), {})[b["variant"]] = b
    for (target, dtype), v in pairs.items():
        cur = v.get("current")
        if cur is None:
            continue
        floor = cur["bytes_written"] / rate
        stages = sorted(cur["stages_s"].items(), key=lambda kv: -kv[1])
        share = ", ".join(f"{STAGES[k]} {t / cur['total_s']:.0%}" for k, t in stages)
        line = (f"- {target} {dtype}, stage by stage as `logah` does it now: "
                f"{cur['total_s']:.1f} s ({share})")
        for name in ("proposed", "overlap"):
            new = v.get(name)
            if new is None:
                continue
            same = ("same bytes (sha256)" if cur.get("sha256") and
                    cur.get("sha256") == new.get("sha256") else
                    "bytes not hashed" if not cur.get("sha256") else "BYTES DIFFER")
            line += (f"; *{name}* {new['total_s']:.1f} s ({cur['total_s'] / new['total_s']:.2f}x"
                     f" faster, {same}, peak RSS {new['peak_rss'] / GIB:.2f} GiB against "
                     f"{cur['peak_rss'] / GIB:.2f})")
        line += (f"; the disk's floor for these {cur['bytes_written'] / GIB:.2f} GiB is "
                 f"{floor:.1f} s at the median rate")
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated TARGET:DTYPE (default {','.join(DEFAULT_CASES)}); "
                             f"the Hugging Face side runs for {', '.join(HF_TARGETS)}")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measurements per side for the cases with a Hugging Face side")
    parser.add_argument("--large-repeats", type=int, default=2,
                        help="measurements of the cases without one (the 8B model)")
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat everywhere, 4 GiB disk test")
    parser.add_argument("--workdir", default="/tmp",
                        help="where outputs are written (and the disk rate measured)")
    parser.add_argument("--disk-bytes", type=float, default=None,
                        help="bytes of the disk test (default: the 8B output's size, at least "
                             "4 GiB)")
    parser.add_argument("--max-peak-gib", type=float, default=4.0,
                        help="peak RSS bound checked for the 8B prediction")
    parser.add_argument("--load-max", type=float, default=1.5,
                        help="wait before each measurement until the 1-minute load is below this")
    parser.add_argument("--load-wait", type=float, default=300,
                        help="longest wait (s) for the load before measuring anyway")
    parser.add_argument("--breakdown-cases", default=None,
                        help="TARGET:DTYPE cases whose prediction is also timed stage by stage "
                             "(--child breakdown, variants current and proposed, once each; "
                             "default: every case; 'none' skips it)")
    parser.add_argument("--output-dir", default=str(HERE / "results"),
                        help="where predict_large.md/.json go (default benchmarks/results)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "predict":
            record = child_predict(*rest)
        elif kind == "hf":
            record = child_hf(*rest)
        elif kind == "breakdown":
            record = child_breakdown(*rest)
        elif kind == "disk":
            record = child_disk(rest[0], int(rest[1]))
        elif kind == "check":
            record = check_folder(rest[0], rest[1], Path(rest[2]))
        else:
            raise SystemExit(f"unknown child {kind}")
        print(json.dumps(record))
        return 0

    from logah.families.llama import TARGETS  # torch-free: the parent stays small

    cases = []
    for item in filter(None, (c.strip() for c in args.cases.split(","))):
        target, _, dtype = item.partition(":")
        if target not in TARGETS or target not in PUBLISHED or dtype not in ITEMSIZE:
            parser.error(f"--cases: {item!r}: use TARGET:DTYPE with TARGET in "
                         f"{', '.join(PUBLISHED)} and DTYPE in {', '.join(ITEMSIZE)}")
        cases.append((target, dtype))
    if not cases:
        parser.error("--cases is empty")
    if args.breakdown_cases is None:
        breakdown_cases = list(cases)
    elif args.breakdown_cases.strip() == "none":
        breakdown_cases = []
    else:
        breakdown_cases = [tuple(c.strip().partition(":")[::2])
                           for c in args.breakdown_cases.split(",") if c.strip()]
        if any(c not in cases for c in breakdown_cases):
            parser.error("--breakdown-cases: each must also be in --cases")
    repeats = 1 if args.quick else args.repeats
    large_repeats = 1 if args.quick else args.large_repeats
    if repeats < 1 or large_repeats < 1:
        parser.error("repeats must be at least 1")
    expected = {c: TARGETS[c[0]].num_params() * ITEMSIZE[c[1]] for c in cases}
    if args.disk_bytes is not None:
        disk_bytes = int(args.disk_bytes)
    elif args.quick:
        disk_bytes = 4 * GIB
    else:
        disk_bytes = max(4 * GIB, *expected.values())
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(workdir).free
    need = max(disk_bytes, *(v * 1.05 + 2**27 for v in expected.values()))
    if free < need:
        raise SystemExit(f"{workdir}: {free / GIB:.1f} GiB free, the largest output needs "
                         f"{need / GIB:.1f} GiB")
    base = Path(tempfile.mkdtemp(prefix="logah-predict-large-", dir=workdir))

    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("THP_MEM_ALLOC_ENABLE", None)

    started = time.perf_counter()
    runs: list[dict] = []
    disks: list[dict] = []
    checks: list[dict] = []
    breakdowns: list[dict] = []

    def disk(label: str) -> None:
        load, waited = _wait_for_load(args.load_max, args.load_wait)
        _log(f"disk write rate ({label}): {disk_bytes / GIB:.2f} GiB + fsync in {workdir} ...")
        rec = _spawn(["disk", str(base / "disk-test.bin"), str(disk_bytes)], env)
        rec.update(label=label, load1_at_start=load, waited_s=waited)
        disks.append(rec)
        _log(f"    {rec['rate'] / 1e6:.0f} MB/s ({rec['write_fsync_s']:.1f} s, of which write() "
             f"{rec['write_s']:.1f} s)")

    try:
        disk("before repeat 1")
        plan = []
        for rep in range(max(repeats, large_repeats)):
            for target, dtype in cases:
                has_hf = target in HF_TARGETS
                if rep >= (repeats if has_hf else large_repeats):
                    continue
                sides = ("predict", "hf") if has_hf else ("predict",)
                plan += [(rep, target, dtype, s) for s in (sides if rep % 2 == 0 else sides[::-1])]
        for n, (rep, target, dtype, side) in enumerate(plan, 1):
            if n > 1 and rep != plan[n - 2][0]:
                disk(f"before repeat {rep + 1}")
            out = base / f"{target}-{dtype}-{side}"
            load, waited = _wait_for_load(args.load_max, args.load_wait)
            os.sync()   # earlier writes are not flushed inside this measurement
            _log(f"({n}/{len(plan)}) repeat {rep + 1} {target} {dtype}: {side} (load {load:.2f})")
            rec = _spawn([side, target, dtype, str(out)], env)
            rec["flush_s"], rec["bytes_written"], rec["files"] = _flush(out)
            rec["durable_s"] = rec["process_s"] + rec["flush_s"]
            rec.update(target=target, dtype=dtype, side=side, repeat=rep, load1_at_start=load,
                       waited_s=waited, load1_at_end=os.getloadavg()[0])
            if side == "predict":
                rec["numel"] = TARGETS[target].num_params()
            runs.append(rec)
            _log(f"    {rec['process_s']:.1f} s + flush {rec['flush_s']:.1f} s, peak RSS "
                 f"{rec['peak_rss'] / GIB:.2f} GiB, {rec['bytes_written'] / GIB:.2f} GiB in "
                 f"{rec['files']} files")
            if side == "predict" and rep == 0:
                _log(f"    checking {out.name} against Hugging Face ...")
                chk = _spawn(["check", target, dtype, str(out)], env)
                chk["peak_rss_of_predict"] = rec["peak_rss"]
                chk["peak_ok"] = rec["peak_rss"] < args.max_peak_gib * GIB
                checks.append(chk)
                _log(f"    {'ok' if chk['ok'] else 'FAILED: ' + '; '.join(chk['failures'])}")
            shutil.rmtree(out)
            os.sync()
        for target, dtype in breakdown_cases:
            for variant in VARIANTS:
                out = base / f"{target}-{dtype}-breakdown-{variant}"
                load, waited = _wait_for_load(args.load_max, args.load_wait)
                os.sync()
                _log(f"breakdown {target} {dtype} {variant} (load {load:.2f}) ...")
                rec = _spawn(["breakdown", target, dtype, str(out), variant], env)
                rec["flush_s"], rec["bytes_written"], _ = _flush(out)
                rec.update(target=target, dtype=dtype, load1_at_start=load, waited_s=waited,
                           load1_at_end=os.getloadavg()[0])
                breakdowns.append(rec)
                _log(f"    {rec['total_s']:.1f} s + flush {rec['flush_s']:.1f} s: " + ", ".join(
                    f"{k} {v:.1f}" for k, v in rec["stages_s"].items()))
                shutil.rmtree(out)
                os.sync()
        disk("after")
    finally:
        shutil.rmtree(base, ignore_errors=True)

    rate = statistics.median(d["rate"] for d in disks)
    rows = summarise(runs, cases, rate)
    slowest, fastest = min(d["rate"] for d in disks), max(d["rate"] for d in disks)
    for row in rows:
        row["floor_s_range"] = [row["bytes_written"] / fastest, row["bytes_written"] / slowest]
    table = markdown_table(rows)
    print(table)

    def short(path: str) -> str:
        rel = os.path.relpath(path)
        return path if rel.startswith("..") else rel

    command = shlex.join([short(sys.executable), short(str(Path(__file__).resolve())),
                          *(argv if argv is not None else sys.argv[1:])])
    first = runs[0]
    loads = [r["load1_at_start"] for r in runs]
    env_info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": first["torch_threads"], "torch": first["torch"],
        "transformers": first["transformers"], "python": first["python"],
        "kernel": platform.release(), "memory_total_gib": os.sysconf("SC_PAGE_SIZE")
        * os.sysconf("SC_PHYS_PAGES") / GIB,
        "filesystem": _filesystem(workdir), "workdir": str(workdir), "ghn": GHN_NAME,
        "repeats": repeats, "large_repeats": large_repeats, "disk_bytes": disk_bytes,
        "disk_rate_median": rate, "load1_min": min(loads), "load1_median": statistics.median(loads),
        "load1_max": max(loads), "max_peak_gib": args.max_peak_gib,
        "wall_seconds": time.perf_counter() - started,
    }

    check_lines = []
    for c in checks:
        mark = "**ok**" if c["ok"] and c["peak_ok"] else "**FAILED**"
        line = (f"- {c['target']} {c['dtype']}: {mark}: peak RSS {c['peak_rss_of_predict'] / GIB:.2f} "
                f"GiB (< {args.max_peak_gib:g} GiB: {'yes' if c['peak_ok'] else 'NO'}); "
                f"{'index' if c['has_index'] else 'single file'} over {c['shards']} shard(s) lists "
                f"{c['tensors']} tensors, HF's `LlamaForCausalLM` (meta, published config) has "
                f"{c['hf_tensors']}: names {'equal' if c['names_equal'] else 'DIFFER'}, shapes "
                f"{'equal' if c['shapes_equal'] else 'DIFFER'} (read from the shard headers); "
                f"{c['numel']:,} parameters, HF's `num_parameters()` {c['hf_num_parameters']:,}; "
                f"`AutoConfig.from_pretrained` loads the folder's config "
                f"({c['config_fields']['num_hidden_layers']} layers, width "
                f"{c['config_fields']['hidden_size']}, {c['config_fields']['num_key_value_heads']} "
                f"KV heads, vocabulary {c['config_fields']['vocab_size']})")
        if "forward_finite" in c:
            line += (f"; `from_pretrained` + one forward: logits "
                     f"{'finite' if c['forward_finite'] else 'NOT finite'}")
        if c["failures"]:
            line += "; failures: " + "; ".join(c["failures"])
        check_lines.append(line)

    disk_lines = [f"- {d['label']}: {d['bytes'] / GIB:.2f} GiB in {d['write_fsync_s']:.1f} s = "
                  f"{d['rate'] / 1e6:.0f} MB/s (write() calls {d['write_s']:.1f} s, the rest is "
                  f"fsync; load {d['load1_at_start']:.2f})" for d in disks]
    slow, fast = min(d["rate"] for d in disks), max(d["rate"] for d in disks)
    disk_lines.append(
        f"- the rate varied {slow / 1e6:.0f}-{fast / 1e6:.0f} MB/s between measurements (a "
        f"virtual disk shared with other machines): the floors in the tables use the median, "
        f"and lie between {rate / fast:.2f}x and {rate / slow:.2f}x of it at the "
        f"extremes (the 8B's {LARGE_PARAMS * 2 / GIB:.2f} GiB: {LARGE_PARAMS * 2 / fast:.0f}-"
        f"{LARGE_PARAMS * 2 / slow:.0f} s)")
    md = "\n".join([
        "# Large Llamas: `logah predict` streamed into shards vs. Hugging Face's random init",
        "",
        "Generated by `benchmarks/predict_large.py` (see `benchmarks/README.md`); do not edit by hand.",
        "",
        "```",
        command,
        "```",
        "",
        f"- date: {env_info['date']}",
        (f"- CPU: {env_info['cpu']} ({env_info['cpu_count']} logical CPUs), torch threads "
         f"{env_info['torch_threads']}, {env_info['memory_total_gib']:.1f} GiB RAM, no swap "
         "assumed"),
        (f"- torch {env_info['torch']}, transformers {env_info['transformers']}, Python "
         f"{env_info['python']}, Linux {env_info['kernel']}"),
        f"- outputs and disk test in `{workdir}`: `{env_info['filesystem']}` (df -hT)",
        (f"- GHN: untrained `{GHN_NAME}`; medians of {repeats} repeat(s) per side for the "
         f"tinyllama cases, {large_repeats} for the 8B; every measurement in a fresh process, "
         "run sequentially; peak RSS = the process's own high-water mark (VmHWM)"),
        (f"- 1-minute load average when each measurement started: min {env_info['load1_min']:.2f}, "
         f"median {env_info['load1_median']:.2f}, max {env_info['load1_max']:.2f} on "
         f"{env_info['cpu_count']} CPUs (the machine is shared; the benchmark waited up to "
         f"{args.load_wait:g} s for a load below {args.load_max:g} before each)"),
        f"- total wall time of the benchmark: {env_info['wall_seconds'] / 60:.1f} min",
        "",
        table,
        "",
        ("Columns: *steps* are timed inside the process after its imports (predict: building the "
         "GHN, tracing the target's graph, `predict_to_folder`; HF: `LlamaForCausalLM(config)` "
         "in float32, then `save_pretrained`, with the cast to bfloat16 inside *save*); "
         "*process s* is the whole process, interpreter start and imports included; *flush s* "
         "is fsync of every file written, by the parent right after the process exits (neither "
         "side fsyncs, so what is still in the page cache goes to disk then); *to disk s* = "
         "process + flush; *floor s* = written bytes / the disk's sequential write rate below; "
         "*peak RSS* is the process's high-water mark; *written* counts the folder's files "
         "(weights, index, configs)."),
        "",
        f"Disk sequential write rate (random data, 64 MiB writes, fsync), median {rate / 1e6:.0f} MB/s:",
        "",
        *disk_lines,
        "",
        "Checks of the predicted folders against Hugging Face:",
        "",
        *check_lines,
        "",
        *([] if not breakdowns else [
            "## Where `predict_to_folder`'s time goes",
            "",
            ("`--child breakdown`: the same `GHN.stream`, consumed as `predict_to_folder` / "
             "`ShardWriter.write` consume it, each stage timed, once per variant in a fresh "
             "process (weights into one file; flush and floor as above). *current*: what logah "
             "does now (the stream's generator runs with autograd on, a fresh float32 product "
             "per row block of 2^24 elements, `torch.isfinite(block).all()`, `.to(dtype)`); "
             "*proposed*: the loop under `torch.no_grad()`, each row block computed into one "
             "reused float32 buffer (`torch.matmul(..., out=)`), cast into one reused buffer of "
             "the output dtype, finiteness checked on that cast block with `torch.aminmax` "
             "(NaN propagates; one pass, no temporaries); *overlap*: *proposed* with the "
             "`write()` calls on one worker thread and two output buffers in turn, so the next "
             "block is computed while this one is written (its *write()* column is the time "
             "spent waiting for the writer)."),
            "",
            breakdown_table(breakdowns, rate),
            "",
        ]),
        "## Notes",
        "",
        *notes(rows, breakdowns, rate),
        "",
    ])
    out_dir = Path(args.output_dir)
    _atomic_write(out_dir / "predict_large.json", json.dumps(
        {"environment": env_info, "summary": rows, "runs": runs, "disk": disks,
         "checks": checks, "breakdown": breakdowns}, indent=1) + "\n")
    _atomic_write(out_dir / "predict_large.md", md)
    _log(f"wrote {out_dir / 'predict_large.md'} and {out_dir / 'predict_large.json'}")
    ok = all(c["ok"] and c["peak_ok"] for c in checks)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
