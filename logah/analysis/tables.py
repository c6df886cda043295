"""Study folders as tidy pandas tables, read without Ray.

    study = load_study("runs/studies/rank-sweep")
    study.trials      # one row per trial: settings (dotted names), metrics, times, status, error
    study.steps       # one row per reported step: the learning curves of both phases

A study folder (``STORAGE/NAME``, written by ``logah.study``) holds ``study.json``,
``trials.parquet`` and ``steps.parquet``; that is the whole contract, so a study copied off a
cluster loads on a laptop with no Ray and no running driver. Columns are read as they are, with a
few derived ones added for grouping (``study``; ``target``, the target's name; ``dataset``, the
fine-tuning data; ``init_kind``,
the paper's name of the init: RandInit, OrthInit, GHN-3, LoGAH; ``init_label``, the same with the
GHN preset and meta-batch, as the rows of the paper's tables: LoGAH-T/m1); optional columns
(``test``, ``ghn_params``, the GHN ones of a baseline-only study) are simply absent or NaN, and the
helpers here and in ``logah.analysis.stats`` check for them instead of assuming them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Iterable

import pandas as pd

from logah.errors import LogahError
from logah.init_kinds import GHN_INITS, PAPER_NAMES
from logah.io import Fields, atomic_file, read_json

STUDY_FILE = "study.json"
TRIALS_FILE = "trials.parquet"
STEPS_FILE = "steps.parquet"
OPTUNA_FILE = "optuna.db"

STATUS_COMPLETE = "COMPLETE"
STATUS_FAILED = "FAILED"

TARGET_PREFIX = "finetune.target."
DATASET = "finetune.data.dataset"
GHN_PREFIX = "ghn_training.ghn."
GHNS_DIR = "ghns"              # a study's own GHN store (``logah.study.tables.GHNS_DIR``)
GHN_STORE_RECORD = "store.json"   # written by ``logah.ghn_store`` when a GHN is trained

# the fields of study.json (``logah.study.runner`` writes it) that are read, and their JSON types;
# its history (``provenance``, ``segments``) only informs a report's header, which shows what is
# well formed of it, and is checked where a resume relies on it (``check_history``)
STUDY_RECORD = {"name": str, "folder": str, "script": str, "question": str, "preset": str,
                "task": str, "objectives": list, "swept": list, "fixed": dict, "target": dict,
                "dataset": str, "num_samples": int, "search": str, "scheduler": str,
                "train_workers": int, "optuna_storage": str, "optuna_study_name": str,
                "ghn_store": str, "trial": dict, "started_at": str, "finished_at": str,
                "wall_s": float, "concurrency": int}


def read_study_record(path: Path) -> dict:
    """``study.json`` at ``path``, every field it is read for checked for its type."""
    record = Fields(read_json(path, "study record"), path).check(STUDY_RECORD)
    for number, objective in enumerate(record.get("objectives") or []):
        Fields(objective, path, f"objectives[{number}].").check({"column": str, "mode": str, "metric": str})
    return record


def check_history(record: dict, path: Path) -> None:
    """The runs recorded in ``study.json`` at ``path`` (``segments``, ``provenance``), which a
    resume continues: each field of the type it is read as."""
    fields = Fields(record, path)
    for number, segment in enumerate(fields.get("segments", list, [])):
        Fields(segment, path, f"segments[{number}].").check({"wall_s": float, "digest": str, "commit": str,
                                                             "started_at": str, "finished_at": str})
    fields.object("provenance").object("code").get("digest", str)


@dataclass(frozen=True)
class Objective:
    """What a study optimises: a trial-table column and whether higher is better."""

    column: str          # e.g. "best" (the fine-tuning metric's best value) or "ghn_params"
    mode: str            # "max" or "min"
    metric: str | None   # the metric the column holds, e.g. "val_accuracy"; None for counts

    @property
    def higher_is_better(self) -> bool:
        return self.mode == "max"


@dataclass(frozen=True)
class Study:
    """One study folder, loaded: its record (``study.json``) and its two tables."""

    path: Path
    meta: dict
    trials: pd.DataFrame
    steps: pd.DataFrame

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.name))

    @property
    def objectives(self) -> list[Objective]:
        return [Objective(o["column"], o.get("mode", "max"), o.get("metric"))
                for o in self.meta.get("objectives", [])]

    @property
    def primary(self) -> Objective:
        """The first objective: the quality metric the study is about."""
        return self.objectives[0]

    @property
    def swept(self) -> list[str]:
        """The swept settings present in the trial table (dotted names)."""
        return [name for name in self.meta.get("swept", []) if name in self.trials.columns]

    @property
    def settings(self) -> list[str]:
        """The swept settings that are not seeds: what the study compares."""
        return [name for name in self.swept if not is_seed_column(name)]

    @property
    def seeds(self) -> list[str]:
        """The swept seed columns: together their values name a replicate (the init
        comparison's ``seed`` variant s0/s1/s2 sets both the GHN's and the fine-tuning seed)."""
        return [name for name in self.swept if is_seed_column(name)]

    @property
    def completed(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == STATUS_COMPLETE]


def is_seed_column(name: str) -> bool:
    """Seeds (``seed``, ``finetune.seed``, ``ghn_training.seed``, ...) are averaged over, never
    compared."""
    return name == "seed" or name.endswith(".seed")


def is_target_setting(name: str) -> bool:
    """A setting of the fine-tuned target (``finetune.target`` itself, swept as preset names, or
    one of its fields, ``finetune.target.hidden_dim``): its values are different targets, so it
    changes the ``target`` column with it."""
    return name == TARGET_PREFIX.rstrip(".") or name.startswith(TARGET_PREFIX)


def load_study(path: str | Path) -> Study:
    """Load one study folder; a folder that is not a study, or a study without trials yet, is a
    ``LogahError`` that says which."""
    path = Path(path)
    if not path.is_dir():
        raise LogahError(f"{path}: no such study folder")
    if not (path / STUDY_FILE).is_file():
        raise LogahError(f"{path} is not a study folder (no {STUDY_FILE}); give the folder "
                         f"STORAGE/NAME that a studies/*.py run wrote")
    meta = read_study_record(path / STUDY_FILE)
    missing = [key for key in ("name", "objectives") if key not in meta]
    if missing or not meta["objectives"]:
        raise LogahError(f"{path / STUDY_FILE}: not a study record (missing {missing or ['objectives']})")
    trials = _read_parquet(path / TRIALS_FILE)
    if trials is None or trials.empty:
        raise LogahError(f"study {meta['name']!r} in {path} has no trials yet (empty or missing "
                         f"{TRIALS_FILE})")
    for column in ("trial_id", "status"):
        if column not in trials.columns:
            raise LogahError(f"{path / TRIALS_FILE}: not a trial table (no {column!r} column)")
    steps = _read_parquet(path / STEPS_FILE)
    if steps is None or (steps.empty and "trial_id" not in steps.columns):   # no trial got a step
        steps = empty_steps()
    return Study(path=path, meta=meta, trials=tidy_trials(trials, meta, path),
                 steps=_tidy_steps(steps, meta))


def load_studies(paths: Iterable[str | Path]) -> list[Study]:
    """Load several study folders (each checked as in ``load_study``)."""
    studies = [load_study(p) for p in paths]
    if not studies:
        raise LogahError("no study folders given")
    names = [s.name for s in studies]
    if len(set(names)) < len(names):
        raise LogahError(f"two study folders share a name ({names}); their trials would mix")
    return studies


def combined_trials(studies: Iterable[Study]) -> pd.DataFrame:
    """All studies' trial tables in one (columns a study lacks are NaN; ``study`` tells them apart)."""
    return pd.concat([s.trials for s in studies], ignore_index=True)


def combined_steps(studies: Iterable[Study]) -> pd.DataFrame:
    return pd.concat([s.steps for s in studies], ignore_index=True)


def export_tables(study: Study, out: str | Path, fmt: str = "parquet") -> list[Path]:
    """Write the study's tidy tables (derived columns included) to ``out/trials.FMT`` and
    ``out/steps.FMT``, atomically; ``fmt`` is ``parquet`` or ``csv``."""
    if fmt not in ("parquet", "csv"):
        raise LogahError(f"export format must be parquet or csv, got {fmt!r}")
    written = []
    for name, table in (("trials", study.trials), ("steps", study.steps)):
        path = Path(out) / f"{name}.{fmt}"
        if fmt == "csv":
            atomic_file(path, lambda tmp, t=table: t.to_csv(tmp, index=False))
        else:
            atomic_file(path, lambda tmp, t=table: t.to_parquet(tmp, index=False))
        written.append(path)
    return written


def empty_steps() -> pd.DataFrame:
    """A step table with no rows (a study none of whose trials reported a step yet)."""
    return pd.DataFrame({"trial_id": pd.Series(dtype="str"), "phase": pd.Series(dtype="str"),
                         "step": pd.Series(dtype="int64")})


def _read_parquet(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_parquet(path)
    except Exception as err:   # pyarrow raises several types for a truncated or foreign file
        raise LogahError(f"{path}: not a readable Parquet table ({err})") from None


def tidy_trials(trials: pd.DataFrame, meta: dict, path: str | Path | None = None) -> pd.DataFrame:
    """A trial table (``trials.parquet`` as written) with the grouping columns added: the study's
    name, a target label and an init label, and ``ghn_train_s`` (the time the trial's GHN took
    to train, read from the GHN store when ``path``, the study folder, is given). ``meta`` is
    the study record (``study.json``): its ``name``, and its ``target`` for a table without
    target columns."""
    trials = trials.copy()
    trials["trial_id"] = trials["trial_id"].astype(str)
    if "error" not in trials.columns:
        trials["error"] = ""
    trials["error"] = trials["error"].fillna("").astype(str)
    trials.insert(0, "study", str(meta["name"]))
    trials["target"] = [_target_label(row, meta) for row in _records(trials, TARGET_PREFIX)]
    trials["dataset"] = trials[DATASET] if DATASET in trials else meta.get("dataset")
    init = trials["finetune.init"] if "finetune.init" in trials else pd.Series("", index=trials.index)
    trials["init_kind"] = [PAPER_NAMES.get(str(i), str(i)) for i in init]
    trials["init_label"] = [_init_label(row) for row in trials.to_dict("records")]
    trials["ghn_train_s"] = _ghn_train_seconds(trials, meta, None if path is None else Path(path))
    return trials


def _ghn_train_seconds(trials: pd.DataFrame, meta: dict, path: Path | None) -> list[float]:
    """Per trial, the wall time its GHN took to train, the same figure whichever trial trained
    it. A trial's own ``ghn_wall_s`` is not that: for a trial that reused a GHN of the shared
    store it is the load, or the wait on the GHN's lock while another trial trained it. The
    store's ``store.json`` holds the training's own time; a study copied without its store
    falls back to the ``ghn_wall_s`` of the trial that trained the GHN (NaN when that trial is
    not in the table). A trial with no GHN gets NaN."""
    n = len(trials)
    keys = trials["ghn_key"].fillna("").astype(str) if "ghn_key" in trials else pd.Series([""] * n)
    reused = (trials["ghn_reused"].fillna(False).astype(bool) if "ghn_reused" in trials
              else pd.Series([False] * n))
    own = trials["ghn_wall_s"] if "ghn_wall_s" in trials else pd.Series([math.nan] * n)
    keys, reused, own = keys.tolist(), reused.tolist(), own.astype(float).tolist()
    trained = {k: w for k, r, w in zip(keys, reused, own) if k and not r and not math.isnan(w)}
    store = _ghn_store(meta, path)
    recorded = {key: _store_seconds(store, key) for key in set(keys) if key}
    seconds = []
    for key, was_reused, wall in zip(keys, reused, own):
        if not key:   # trained in the trial's own folder, no store, no lock: its own time
            seconds.append(math.nan if was_reused else wall)
        elif recorded[key] is not None:
            seconds.append(recorded[key])
        else:
            seconds.append(trained.get(key, math.nan))
    return seconds


def _ghn_store(meta: dict, path: Path | None) -> Path | None:
    """The GHN store of the study (as ``logah.study.tables.ghn_store_of``, which this module
    cannot import without torch): ``ghn_store`` of study.json, else the folder's own ``ghns``;
    a recorded store that is gone (a study copied off a cluster) falls back to ``ghns``."""
    recorded = meta.get("ghn_store")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    if path is not None and (path / GHNS_DIR).is_dir():
        return path / GHNS_DIR
    return None


def _store_seconds(store: Path | None, key: str) -> float | None:
    if store is None or not (store / key / GHN_STORE_RECORD).is_file():
        return None
    try:
        path = store / key / GHN_STORE_RECORD
        wall = Fields(read_json(path, "GHN store record"), path).get("wall_s", float)
    except LogahError:   # a damaged record: the fallback is as good as it gets
        return None
    return None if wall is None else float(wall)


def _tidy_steps(steps: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """GHN-phase metrics without a ``ghn_`` prefix, whichever way the runner wrote them."""
    steps = steps.copy()
    steps["trial_id"] = steps["trial_id"].astype(str)
    renames = {c: c.removeprefix("ghn_") for c in steps.columns
               if c.startswith("ghn_") and c.removeprefix("ghn_") not in steps.columns}
    steps = steps.rename(columns=renames)
    steps.insert(0, "study", str(meta["name"]))
    return steps


def _records(trials: pd.DataFrame, prefix: str) -> list[dict]:
    columns = [c for c in trials.columns if c.startswith(prefix)]
    return [{k.removeprefix(prefix): v for k, v in row.items()}
            for row in trials[columns].to_dict("records")]


@cache
def _named_targets() -> dict[tuple, str]:
    """Named target architectures (every family's), keyed by their flattened record."""
    from logah.families import named_targets

    return {_key(arch.to_dict()): name for name, arch in named_targets().items()}


def _key(record: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in record.items() if not _missing(v)))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _target_label(record: dict, meta: dict) -> str:
    """The target's name (``vit-cpu-target``) when it is a named one, else its family and
    shape (``vit 6x96/4h p4 32px``)."""
    if not record:   # the study record names its target, or holds its architecture record
        record = meta.get("target")
        if not isinstance(record, dict):
            return str(record or "target")
    record = {k: (int(v) if isinstance(v, float) and v.is_integer() else v)
              for k, v in record.items() if not _missing(v)}
    name = _named_targets().get(_key(record))
    if name:
        return name
    from logah.targets import arch_from_dict

    try:
        return f"{record.get('family')} {arch_from_dict(record).shape_label()}"
    except LogahError:
        return str(record.get("family") or "target")


def _init_label(row: dict) -> str:
    """How a trial initialised its target, the way the paper's tables name rows: RandInit,
    OrthInit, or LoGAH / GHN-3 with the GHN's preset and meta-batch (``LoGAH-T/m1``). A GHN
    that differs from its nearest preset in a setting or two says how (``LoGAH-CPU r=4/m1``);
    one far from every preset gives its size (``LoGAH d=48, r=12/m1``)."""
    init = str(row.get("finetune.init", ""))
    name = PAPER_NAMES.get(init, init or "unknown")
    if init not in GHN_INITS:
        return name
    ghn = {k.removeprefix(GHN_PREFIX): v for k, v in row.items()
           if k.startswith(GHN_PREFIX) and not _missing(v)}
    preset, differences = _nearest_preset(ghn)
    if preset is not None and len(differences) <= 2:   # logah-t -> LoGAH-T, as in the paper
        size = "-" + preset.split("-", 1)[1].upper() + "".join(
            f" {_letter(k)}={_fmt(ghn[k])}" for k in differences)
    else:
        shown = ("hidden", "rank") if init == "logah" else ("hidden",)
        size = " " + ", ".join(f"{_letter(k)}={_fmt(ghn[k])}" for k in shown if k in ghn)
    meta_batch = row.get("ghn_training.meta_batch")
    return name + size.rstrip() + ("" if _missing(meta_batch) else f"/m{int(meta_batch)}")


def _nearest_preset(ghn: dict) -> tuple[str | None, list[str]]:
    """The GHN preset (of the same decoder) whose config differs from ``ghn`` in the fewest
    fields, and those fields."""
    from logah.presets import GHN_PRESETS

    best: tuple[str | None, list[str]] = (None, [])
    for name, config in GHN_PRESETS.items():
        fields = dataclasses.asdict(config)
        if set(fields) != set(ghn) or fields["decoder"] != ghn["decoder"]:
            continue
        differences = [k for k in fields if fields[k] != ghn[k]]
        if best[0] is None or len(differences) < len(best[1]):
            best = (name, differences)
    return best


_LETTERS = {"hidden": "d", "rank": "r", "layers": "L", "heads": "H"}   # the paper's symbols


def _letter(field: str) -> str:
    return _LETTERS.get(field, field)


def _fmt(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def load_optuna_study(study: Study):
    """The study's persisted Optuna study (``optuna_storage`` + ``optuna_study_name`` of
    ``study.json``). An SQLite URL whose file is gone, as after copying the study folder off a
    cluster, falls back to the ``optuna.db`` inside the folder. No storage is a ``LogahError``."""
    import optuna

    url = study.meta.get("optuna_storage") or ""
    name = study.meta.get("optuna_study_name") or study.name
    local = study.path / OPTUNA_FILE
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():   # reading a missing SQLite file would create an empty one
            if not local.is_file():
                raise LogahError(f"study {study.name!r}: its Optuna storage {url} does not exist")
            url = f"sqlite:///{local.resolve()}"
    elif not url:
        if not local.is_file():
            raise LogahError(f"study {study.name!r} records no Optuna storage")
        url = f"sqlite:///{local.resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=url)
    except Exception as err:   # KeyError for a missing study, SQLAlchemy errors for a bad URL
        raise LogahError(f"study {study.name!r}: cannot load Optuna study {name!r} from {url} "
                         f"({type(err).__name__}: {err})") from None
