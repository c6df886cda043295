"""Output folders of training runs (``train-ghn``, ``finetune``, on one process or on Ray).

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
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from logah.errors import LogahError
from logah.io import output_errors

CHECKPOINT_DIR = "checkpoint"     # the latest checkpoint; its presence marks a resumable run
METRICS_FILE = "metrics.jsonl"
RAY_STORAGE_DIR = "ray"           # Ray Train's storage when none is given (logah.distributed)
SCRATCH_PREFIX = ".ckpt-"         # checkpoints being written (logah.training.LocalReporter)
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
