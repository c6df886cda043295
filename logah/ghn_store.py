"""GHNs shared between trials: one trained GHN per GHN-training config.

A study that fine-tunes the same GHN with several seeds, learning rates or targets should train
that GHN once. Trials ask the store for the GHN of their ``TrainConfig``; the store keys folders
by a hash of the config's JSON record, so identical configs (and only those) share a folder:

    STORE/<key>/            the GHN checkpoint folder that ``train_ghn`` leaves (predict --ghn)
    STORE/<key>/store.json  written last: the config, wall and CPU time of the training

A setting added to ``TrainConfig`` later changes every key, although a GHN trained before it
existed was trained with its default (the default keeps the old behaviour). So on a miss the
store also looks for a finished GHN whose recorded config, read back with today's defaults, is
the one asked for, and reuses it under its own key.

Two trials that want the same GHN at once are serialised by an exclusive ``flock`` on
``STORE/<key>.lock``: the first trains, the second waits and then reuses it. A training that was
interrupted (its trial killed) is resumed from its last checkpoint by whichever trial comes next.
``flock`` works between processes of one machine and on NFS v4 shares; on an object store the
study runs trials without a shared store (each trial trains its own GHN).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from logah.errors import LogahError
from logah.io import Fields, read_json, write_json
from logah.training import TrainConfig

DONE_FILE = "store.json"

# train(config, folder, resume) -> metric history; ``logah.training.train_ghn`` or its Ray twin
GHNTrainFn = Callable[[TrainConfig, Path, bool], list]


def config_key(config: TrainConfig) -> str:
    """A short, stable hash of everything that determines the trained GHN."""
    record = json.dumps(config.to_dict(), sort_keys=True, allow_nan=False)
    return hashlib.sha256(record.encode()).hexdigest()[:16]


STORE_RECORD = {"key": str, "wall_s": float, "cpu_s": float, "config": dict}


def read_store_record(path: Path) -> dict:
    """A GHN's ``store.json``, its fields' types checked."""
    return Fields(read_json(path, "GHN store record"), path).check(STORE_RECORD)


def trained_before(config: TrainConfig, store: Path) -> Path | None:
    """A finished GHN of ``store`` trained with ``config`` under an older key: its recorded
    config, read back with the defaults of settings added since, equals ``config``."""
    wanted = config.to_dict()
    for record_file in sorted(store.glob(f"*/{DONE_FILE}")):
        try:
            recorded = TrainConfig.from_dict(read_store_record(record_file)["config"])
        except LogahError:
            continue    # a record with settings this version does not know, or an unreadable one
        if recorded.to_dict() == wanted:
            return record_file.parent
    return None


def shared_ghn(config: TrainConfig, store: str | Path, train: GHNTrainFn) -> tuple[Path, dict]:
    """The folder of the GHN trained with ``config``, training it first unless the store already
    holds it. Returns the folder and its record: ``key``, ``reused`` (trained by another trial),
    ``wall_s`` / ``cpu_s`` of the training itself (counted once, by the trial that trained)."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    key = config_key(config)
    folder = store / key
    with open(store / f"{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)    # released when the file closes, also on a crash
        if (folder / DONE_FILE).is_file():
            return folder, {**read_store_record(folder / DONE_FILE), "reused": True}
        older = trained_before(config, store)
        if older is not None:
            return older, {**read_store_record(older / DONE_FILE), "reused": True}
        resume = (folder / "checkpoint").is_dir()
        if not resume:
            shutil.rmtree(folder, ignore_errors=True)   # a start that died before a checkpoint
        wall, cpu = time.perf_counter(), time.process_time()
        train(config, folder, resume)
        record = {"key": key, "wall_s": time.perf_counter() - wall,
                  "cpu_s": time.process_time() - cpu, "config": config.to_dict()}
        write_json(folder / DONE_FILE, record)
        return folder, {**record, "reused": False}
