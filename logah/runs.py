"""Output folders of training runs (``train-ghn``, ``finetune``, on one process or on Ray):
who holds them, what a run writes into them, and how it reports.

A run folder holds at most one run, and a run that never reached a checkpoint leaves nothing
that blocks the next attempt:

* **one writer**: ``run_folder`` takes an exclusive ``flock`` on the folder for the life of the
  run; a second run on the same folder gets a clear error instead of interleaving its metrics;
* **existing runs**: a folder with a checkpoint is continued with ``resume`` or replaced with
  ``overwrite``, and refused otherwise; a folder of unrelated files is never taken over;
* **stubs**: what a run writes before its first checkpoint (its config, metrics, Ray storage,
  temporary folders) is removed when the run fails, and, after a ``SIGKILL``, by the next run on
  the folder, which then starts afresh (also under ``resume``: there is nothing to continue);
* **temporary folders** (checkpoints being written, atomic renames) live inside the run folder,
  never in the system temp directory, and are removed when a run (re)starts.

What a run writes: ``metrics.jsonl`` (one JSON record per report; ``read_metrics`` is the one
reader), and at each checkpoint ``checkpoint/`` with the run state (``write_run_state``: the
trainer's tensors and numbers in a file read back with ``torch.load(weights_only=True)``, the
metric history, the run's config). A run reports through a ``Reporter``
``report(metrics, write)``: ``write`` fills a folder with a checkpoint of that record, or is
None. Without Ray that is ``LocalReporter`` (``run_local``); on Ray Train, ``ray.train.report``
(``logah.distributed``), which ends in the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from logah.errors import LogahError
from logah.io import (Fields, atomic_dir, atomic_write_text, check_may_replace, dumps, output_errors, read_json,
                      reading, write_json)

CHECKPOINT_DIR = "checkpoint"     # the latest checkpoint; its presence marks a resumable run
METRICS_FILE = "metrics.jsonl"
RAY_STORAGE_DIR = "ray"           # Ray Train's storage when none is given (logah.distributed)
SCRATCH_PREFIX = ".ckpt-"         # checkpoints being written (LocalReporter)
# what logah.io's atomic writes leave behind when killed: ``.NAME.tmp-<random>`` and ``.NAME.old-PID``
_TEMPORARY = re.compile(r"^\..+\.(tmp|old)-[^/]*$|^" + re.escape(SCRATCH_PREFIX))


@dataclass(frozen=True)
class RunFolder:
    """An output folder held by this run. ``resume``: whether there is a checkpoint to continue."""

    path: Path
    resume: bool

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_DIR


def is_temporary(name: str) -> bool:
    return bool(_TEMPORARY.match(name))


def _stub_entries(out: Path, config_file: str) -> list[Path] | None:
    """The entries of ``out`` that a run writes before its first checkpoint, or None when
    ``out`` holds anything else (a checkpoint, or files that are not ours)."""
    ours = {METRICS_FILE, config_file, RAY_STORAGE_DIR}
    entries = list(out.iterdir())
    if all(p.name in ours or is_temporary(p.name) for p in entries):
        return entries
    return None


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive_lock(out: Path) -> Iterator[None]:
    """``flock`` on the folder itself (no lock file to leave behind). Checks after locking that
    the folder is still the one at ``out``: a failed run may have removed it meanwhile."""
    while True:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LogahError(f"output {out} is in use by another run (one run per folder)") from None
        try:
            same = os.stat(out).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
        out.mkdir(parents=True, exist_ok=True)
    try:
        yield
    finally:
        os.close(fd)   # releases the lock


def check_output_dir(out: Path) -> None:
    """An output folder path must not name an existing file."""
    if out.exists() and not out.is_dir():
        raise LogahError(f"output {out} exists and is not a folder")


@contextlib.contextmanager
def run_folder(out: str | Path, *, config_file: str, resume: bool = False,
               overwrite: bool = False, resumable: bool | None = None) -> Iterator[RunFolder]:
    """Hold ``out`` for one run: lock it, decide whether the run resumes, clean what a run
    that never checkpointed left, and remove this run's stub if it fails before its first
    checkpoint. ``resumable`` overrides the "has ``checkpoint/``" test (a Ray run may resume from
    its own storage)."""
    out = Path(out).absolute()
    if resume and overwrite:
        raise LogahError("--resume continues a run and --overwrite replaces it: give one")
    check_output_dir(out)
    existed = out.exists()
    if overwrite and existed:
        check_may_replace(out, config_file)
    if resume and not existed:
        raise LogahError(f"cannot resume: {out} does not exist")
    with output_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(out):
        _remove([p for p in out.iterdir() if is_temporary(p.name)])
        stub = _stub_entries(out, config_file)
        has_checkpoint = (out / CHECKPOINT_DIR).is_dir() if resumable is None else resumable
        if overwrite:
            _remove(list(out.iterdir()))
        elif has_checkpoint:
            if not resume:
                raise LogahError(f"output {out} already holds a run (use --resume to continue "
                                 f"it or --overwrite to replace it)")
        elif stub is not None:
            _remove(stub)            # a run that died before its first checkpoint: start afresh
        else:
            raise LogahError(f"output {out} holds files that are not a logah run (choose another "
                             f"folder, or --overwrite to replace it)")
        folder = RunFolder(out, resume=resume and has_checkpoint and not overwrite)
        try:
            yield folder
        except BaseException:
            if not (out / CHECKPOINT_DIR).is_dir():
                leftover = _stub_entries(out, config_file)
                if leftover is not None:
                    _remove(leftover)
                    if not existed:
                        with contextlib.suppress(OSError):
                            out.rmdir()
            raise


# --- what a run writes ---------------------------------------------------------------------------

# report(metrics, write): ``write`` fills a folder with a checkpoint of this record, or is None
Reporter = Callable[[dict, "Callable[[Path], None] | None"], None]


def jsonl(records: list[dict]) -> str:
    """Metric records as JSON lines (valid JSON: a non-finite value is written as null)."""
    return "".join(dumps(record) + "\n" for record in records)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (none when it does not exist). A last line that is
    not JSON yet is being written and is left out; a bad line before it is a ``LogahError``."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise LogahError(f"cannot read metrics {path}: {err}") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise LogahError(f"metrics {path}, line {number}: not JSON ({err})") from None
        Fields(record, f"metrics {path}, line {number}").get("step", int)   # records are ordered by it
        records.append(record)
    return records


def write_run_state(folder: Path, state: dict, state_file: str, history: list[dict],
                    config, config_file: str) -> None:
    """The resumable part of a checkpoint: ``state`` (tensors and numbers only, so it loads with
    ``weights_only=True``), the metric history and the run's config."""
    import torch

    torch.save(state, folder / state_file)
    (folder / METRICS_FILE).write_text(jsonl(history))
    (folder / config_file).write_text(dumps(config.to_dict(), indent=2))


def read_run_state(folder: Path, state_file: str, config, config_file: str,
                   device) -> tuple[dict, list[dict]]:
    """The state and metric history ``write_run_state`` left in ``folder``, after checking that
    it was written by a run with ``config``."""
    import torch

    saved = read_json(folder / config_file, "run config")
    with reading(folder / config_file):
        saved = type(config).from_dict(saved)
    if saved != config:
        raise LogahError(f"cannot resume from {folder}: it was run with another config")
    try:
        state = torch.load(folder / state_file, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise LogahError(f"cannot resume: {folder / state_file} not found") from None
    except pickle.UnpicklingError:   # torch's text would suggest weights_only=False: never here
        raise LogahError(f"cannot resume from {folder}: {state_file} holds objects other than "
                         f"tensors and numbers; it was refused unread (loading it could run code)") from None
    except Exception as err:   # torch raises several types for corrupt or foreign pickles
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LogahError(f"cannot resume from {folder}: {state_file} is not a run state "
                         f"({type(err).__name__}: {reason[:200]})") from None
    return state, read_metrics(folder / METRICS_FILE)


@contextlib.contextmanager
def scratch_folder(parent: Path) -> Iterator[Path]:
    """A temporary folder for a checkpoint being written, inside ``parent`` (the run folder, or
    Ray's session folder on a worker) rather than the system temp dir; removed afterwards, and
    by ``run_folder`` when a killed run leaves one behind."""
    folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def copy_tree_atomic(source: Path, target: Path) -> None:
    """Replace folder ``target`` by a copy of ``source`` (readers never see a partial copy)."""
    with atomic_dir(target, overwrite=True) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)


class LocalReporter:
    """Report function for runs without Ray: metrics appended to ``out/metrics.jsonl``, and each
    checkpoint written in a scratch folder of ``out`` and handed to ``export`` (which leaves the
    run's usable output in ``out``). Ray runs record through the same ``record``."""

    def __init__(self, out: Path, export: Callable[[Path, Path], None],
                 on_metrics: Callable[[dict], None] | None = None):
        self.out, self.export, self.on_metrics = Path(out), export, on_metrics
        self.out.mkdir(parents=True, exist_ok=True)

    def __call__(self, metrics: dict, write: Callable[[Path], None] | None) -> None:
        if write is None:
            self.record(metrics, None)
        else:
            with scratch_folder(self.out) as folder:
                with output_errors(self.out):   # a full disk while checkpointing: one line
                    write(folder)
                self.record(metrics, folder)
        if self.on_metrics is not None:   # after the export, so a caller may stop the run here
            self.on_metrics(metrics)

    def record(self, metrics: dict, checkpoint: Path | None) -> None:
        """Append ``metrics``; with a checkpoint, export it and take its metric history, which
        ends with ``metrics`` (records logged after the previous checkpoint by a run that was
        then restarted from it are dropped with it)."""
        if checkpoint is None:
            with open(self.out / METRICS_FILE, "a") as f:
                f.write(jsonl([metrics]))
            return
        self.export(checkpoint, self.out)
        atomic_write_text(self.out / METRICS_FILE, (checkpoint / METRICS_FILE).read_text())


def run_local(make_trainer, out: str | Path, *, config_file: str, config: dict,
              export: Callable[[Path, Path], None], resume: bool, progress: bool,
              on_metrics: Callable[[dict], None] | None = None, overwrite: bool = False):
    """Run a trainer (GHN training or fine-tuning) in this process, writing to ``out``, which
    it holds as ``run_folder`` says (one run per folder, resume from ``out/checkpoint``, nothing
    left behind by a run that never checkpointed); passes every metrics record to
    ``on_metrics`` and returns the trainer once its ``run`` has finished.
    ``make_trainer(resume_from)`` builds the trainer, resuming from a checkpoint folder or None."""
    with run_folder(out, config_file=config_file, resume=resume, overwrite=overwrite) as folder:
        trainer = make_trainer(folder.checkpoint if folder.resume else None)
        # metrics logged after the last checkpoint of an interrupted run are dropped with it
        atomic_write_text(folder.path / METRICS_FILE, jsonl(trainer.history))
        write_json(folder.path / config_file, config)
        trainer.run(LocalReporter(folder.path, export, on_metrics), progress=progress)
    return trainer
