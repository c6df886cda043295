"""The trial table and the step table of a study, rebuilt from the trial folders.

Every trial leaves ``trials/<trial_id>/record.json`` (written when it starts, again when it ends)
beside the metric logs of its phases. The tables are a function of those files alone, so they
can be rebuilt at any time, by the running study after each trial, after a crash, or by a
notebook without Ray:

    trials.parquet / trials.csv   one row per trial: id, status, error, every trial setting as a
                                  dotted column, GHN parameters, the fine-tuning metric at step 0
                                  (``zero_shot``), its ``best`` and ``final`` values on the
                                  validation batches, the final model on the whole test split
                                  (``test``: the figure to report), held-out GHN metrics, wall
                                  and CPU seconds per phase
    steps.parquet                 one row per reported record: trial id, phase, step, metrics

Both are written through a temporary file and a rename: a reader never sees half a table.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from logah.analysis.stats import pareto_mask
from logah.analysis.tables import empty_steps, read_study_record
from logah.errors import LogahError
from logah.io import Fields, atomic_file, read_json, write_json
from logah.study.space import flatten
from logah.runs import METRICS_FILE, read_metrics

TRIALS_DIR = "trials"
GHNS_DIR = "ghns"
STUDY_FILE = "study.json"
RECORD_FILE = "record.json"
STATUSES = ("COMPLETE", "FAILED", "RUNNING")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_record(folder: Path, record: dict) -> None:
    write_json(folder / RECORD_FILE, record)


# the fields of a trial's record.json (``logah.study.runner.study_trial`` writes it) and their types
TRIAL_RECORD = {"trial_id": str, "status": str, "error": str, "settings": dict, "config": dict,
                "summary": dict, "metric": str, "mode": str, "segment": str, "attempt": int,
                "user_error": bool, "ghn_params": float, "ghn_key": str, "wall_s": float,
                "stopped_early": bool, "started_at": str, "finished_at": str}


def read_record(folder: Path) -> dict | None:
    """A trial's record (None before it has one), its fields' types checked."""
    path = folder / RECORD_FILE
    if not path.is_file():
        return None
    record = Fields(read_json(path, "trial record"), path).check(TRIAL_RECORD, required=("trial_id", "status"))
    if record["status"] not in STATUSES:
        raise LogahError(f"{path}: status must be one of {', '.join(STATUSES)}, got {record['status']!r}")
    return record


def _cell(value):
    """Table cells are scalars: lists and records (width bands, heads rules) become JSON."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def trial_row(record: dict) -> dict:
    summary = record.get("summary") or {}
    metric = record.get("metric") or summary.get("metric")
    row = {"trial_id": record["trial_id"], "status": record["status"],
           "error": record.get("error") or "",
           "warnings": "; ".join(record.get("warnings") or []),
           **{k: _cell(v) for k, v in flatten(record.get("config") or {}).items()},
           "ghn_params": record.get("ghn_params", math.nan), "metric": metric,
           "mode": record.get("mode"),
           "zero_shot": summary.get(f"zero_shot_{metric}", math.nan),
           "best": summary.get(f"best_{metric}", math.nan),
           "final": summary.get(f"final_{metric}", math.nan),
           "test": summary.get(f"test_{(metric or '').removeprefix('val_')}", math.nan),
           "stopped_early": bool(record.get("stopped_early", False))}
    # sampled names that are not trial settings themselves (``Variants``) get a column too
    row.update({k: _cell(v) for k, v in (record.get("settings") or {}).items() if k not in row})
    row.update({k: v for k, v in summary.items() if k.startswith("ghn_heldout_")})
    for key in ("ghn_wall_s", "ghn_cpu_s", "finetune_wall_s", "finetune_cpu_s"):
        row[key] = summary.get(key, math.nan)
    row["ghn_reused"] = summary.get("ghn_reused", False)
    row["ghn_key"] = summary.get("ghn_key") or record.get("ghn_key") or ""
    row["wall_s"] = record.get("wall_s", math.nan)
    return row


def step_rows(study_dir: Path, record: dict, ghn_store: Path) -> list[dict]:
    folder = study_dir / TRIALS_DIR / record["trial_id"]
    key = (record.get("summary") or {}).get("ghn_key") or record.get("ghn_key")
    ghn_log = (ghn_store / key if key else folder / "ghn") / METRICS_FILE
    rows = []
    for phase, path in (("ghn", ghn_log), ("finetune", folder / "finetune" / METRICS_FILE)):
        for metrics in read_metrics(path):
            rows.append({"trial_id": record["trial_id"], "phase": phase,
                         **{k: _cell(v) for k, v in metrics.items()}})
    return rows


def study_record(study_dir: Path) -> dict:
    """``study.json`` of ``study_dir``, or {} before the study has written it."""
    path = study_dir / STUDY_FILE
    return read_study_record(path) if path.is_file() else {}


def ghn_store_of(study_dir: Path, record: dict) -> Path:
    """Where the GHNs of the study with ``record`` (its study.json) are: ``--ghn-store`` shares
    them with other studies; by default they are the study folder's own."""
    return Path(record.get("ghn_store") or study_dir / GHNS_DIR)


def collect(study_dir: Path, record: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trial and step tables of ``study_dir`` (whose study.json is ``record``) as they stand
    on disk."""
    records = [r for folder in sorted((study_dir / TRIALS_DIR).glob("*"))
               if (r := read_record(folder)) is not None]
    records.sort(key=lambda r: (r.get("started_at") or "", r["trial_id"]))
    ghn_store = ghn_store_of(study_dir, record)
    trials = pd.DataFrame([trial_row(r) for r in records])
    steps = pd.DataFrame([row for r in records for row in step_rows(study_dir, r, ghn_store)])
    if steps.empty:    # no trial reported a step (all failed at once): still a step table
        steps = empty_steps()
    return trials, steps


def write_tables(study_dir: Path) -> pd.DataFrame:
    """Rebuild and atomically write ``trials.parquet``, ``trials.csv`` and ``steps.parquet``;
    a study with several objectives gets a ``pareto`` column (its Pareto front)."""
    record = study_record(study_dir)
    trials, steps = collect(study_dir, record)
    objectives = record.get("objectives", [])
    if len(objectives) > 1 and not trials.empty:
        done = trials["status"] == "COMPLETE"
        trials["pareto"] = pareto_mask(trials.where(done), objectives)
    atomic_file(study_dir / "trials.parquet", lambda tmp: trials.to_parquet(tmp, index=False))
    atomic_file(study_dir / "trials.csv", lambda tmp: trials.to_csv(tmp, index=False))
    atomic_file(study_dir / "steps.parquet", lambda tmp: steps.to_parquet(tmp, index=False))
    return trials
