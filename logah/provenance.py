"""What ran: the code, the packages and the machine behind a study's figures.

A figure is only worth the code that produced it. ``study.json`` records, for every run of a
study (a first run and each ``--resume``):

* ``code``: the git commit of the checkout and whether it had uncommitted changes, and a digest
  of the ``logah`` package's sources as the trials import them (the digest is what identifies
  the code; commit and dirty flag are for people);
* ``versions`` of Python and the libraries that decide the numbers (torch, ray, optuna,
  transformers, ...);
* ``machine``: host, platform, CPUs, GPUs, memory.

``code_digest`` is computed the same way from any copy of the package, so a trial can check that
it runs the snapshot its study started with (Ray ships the package to its workers as one
snapshot, ``logah.study.runner``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path

import logah

PACKAGES = ("torch", "torchvision", "ray", "optuna", "transformers", "numpy", "pandas")


def package_dir() -> Path:
    """The folder of the ``logah`` package this process imported."""
    return Path(logah.__file__).resolve().parent


def code_digest(folder: Path | None = None) -> str:
    """A short hash of every ``.py`` file under the package folder (paths and contents)."""
    folder = Path(folder or package_dir())
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version(digest: str | None = None) -> dict:
    """Commit, dirty flag (uncommitted changes under the checkout) and the package's digest
    (``digest``: of the copy the trials run, when that is not this package). Outside a git
    checkout (an installed wheel, a Ray job's copy) commit and dirty are None."""
    folder = package_dir()
    commit = _git(["rev-parse", "HEAD"], folder.parent)
    status = _git(["status", "--porcelain", "--untracked-files=no"], folder.parent) if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status),
            "digest": digest or code_digest(folder)}


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def cpu_model() -> str:
    """The processor's name (Linux's ``/proc/cpuinfo``; else what ``platform`` knows): timings
    are only comparable on the same one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    gpus: list[str] = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    memory = None
    try:
        with open("/proc/meminfo") as f:
            total = next(line for line in f if line.startswith("MemTotal:"))
        memory = round(int(total.split()[1]) / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)), "gpus": gpus,
            "memory_gib": memory}


def provenance(snapshot: str, digest: str | None = None) -> dict:
    """All of the above; ``snapshot`` says where the trials' code comes from."""
    return {"code": {**code_version(digest), "snapshot": snapshot}, "versions": versions(),
            "machine": machine()}
