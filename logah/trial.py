"""One trial of a study: train a GHN (or take a given one), predict a target, fine-tune it.

    summary = run_trial(TrialConfig(ghn_training=..., finetune=...), "runs/trial-0",
                        report=print)

A trial is a pure function of its config: (GHN settings, architecture-sampling settings,
training budget and seed in ``ghn_training``; target, init, fine-tuning budget and seed in
``finetune``) → metrics. The two seeds are separate so that a study can fine-tune one GHN with
several seeds (the paper's protocol) and train it once (``ghn_store``). Every metric record goes
to ``report`` as it is produced, tagged with its ``phase`` (``ghn`` records carry a ``ghn_``
prefix so that they never shadow the fine-tuning metrics a search optimises). Ray Tune calls this
with ``ray.tune.report`` as the reporter (``logah.study``); on its own it runs without Ray.

Baseline inits (``random``, ``orthogonal``) skip the GHN phase. With ``ghn_checkpoint`` the GHN
is loaded rather than trained. A trial started again on the same folder resumes each phase from
its last checkpoint, so an interrupted study loses at most one checkpoint interval per trial.
The summary records wall and CPU time of each phase (this process's CPU time: work done by Ray
Train workers for a distributed GHN phase is not in it).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from logah.errors import LogahError
from logah.finetune import FinetuneConfig, finetune
from logah.ghn_store import GHNTrainFn, shared_ghn
from logah.init_kinds import GHN_INITS
from logah.io import ConfigRecord, read_json, write_json
from logah.runs import METRICS_FILE, read_metrics
from logah.training import TrainConfig, train_ghn

TRIAL_FILE = "trial.json"
GHN_DIR = "ghn"
FINETUNE_DIR = "finetune"

MetricsReporter = Callable[[dict], None]


@dataclass(frozen=True, kw_only=True)
class TrialConfig(ConfigRecord):
    """Everything a trial depends on."""

    record_name = "trial config"
    nested_records = {"finetune": FinetuneConfig, "ghn_training": TrainConfig}

    finetune: FinetuneConfig
    ghn_training: TrainConfig = field(default_factory=TrainConfig)
    ghn_checkpoint: str | None = None     # a trained GHN to use instead of training one

    @property
    def uses_ghn(self) -> bool:
        return self.finetune.init in GHN_INITS

    def validate(self) -> None:
        self.finetune.validate()
        if not self.uses_ghn:
            return
        self.ghn_training.validate()
        wanted = GHN_INITS[self.finetune.init]
        if self.ghn_checkpoint is None and self.ghn_training.ghn.decoder != wanted:
            raise LogahError(f"trial: init {self.finetune.init!r} needs a GHN with the {wanted} "
                             f"decoder, but ghn_training uses {self.ghn_training.ghn.decoder!r}")


def _phase_folder(out: Path, name: str) -> tuple[Path, bool]:
    """A phase's output folder and whether to resume it (a folder without a checkpoint holds
    nothing worth keeping: the phase died before its first checkpoint)."""
    folder = out / name
    if (folder / "checkpoint").is_dir():
        return folder, True
    shutil.rmtree(folder, ignore_errors=True)
    return folder, False


class _PhaseClock:
    """Wall and CPU seconds of one phase, added to a summary as ``<phase>_wall_s`` / ``_cpu_s``."""

    def __init__(self, summary: dict, phase: str):
        self.summary, self.phase = summary, phase

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __exit__(self, *exc):
        self.summary[f"{self.phase}_wall_s"] = time.perf_counter() - self.wall
        self.summary[f"{self.phase}_cpu_s"] = time.process_time() - self.cpu


def run_trial(config: TrialConfig, out: str | Path, *, report: MetricsReporter | None = None,
              device: str = "cpu", progress: bool = False, ghn_store: str | Path | None = None,
              train_fn: GHNTrainFn | None = None) -> dict:
    """Run (or resume) the trial in ``out``; returns its summary, also in ``out/trial.json``.

    ``ghn_store``: a folder of GHNs shared between trials (``logah.ghn_store``); without it the
    GHN is trained in ``out/ghn``. ``train_fn(config, folder, resume)`` trains a GHN (default:
    in this process; ``logah.study`` passes one that runs on Ray Train workers)."""
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = report or (lambda metrics: None)

    def report_ghn(metrics: dict) -> None:
        report({"phase": "ghn", **{f"ghn_{k}": v for k, v in metrics.items()}})

    def train(training: TrainConfig, folder: Path, resume: bool) -> list:
        if train_fn is not None:
            return train_fn(training, folder, resume)
        return train_ghn(training, folder, resume=resume, device=device, progress=progress,
                         on_metrics=report_ghn)

    summary: dict = {"init": config.finetune.init, "ghn_seed": config.ghn_training.seed,
                     "finetune_seed": config.finetune.seed}
    ghn_path = config.ghn_checkpoint
    if config.uses_ghn and ghn_path is None:
        with _PhaseClock(summary, "ghn"):
            if ghn_store is not None:
                folder, record = shared_ghn(config.ghn_training, ghn_store, train)
                summary.update(ghn_key=record["key"], ghn_reused=record["reused"])
            else:
                folder, resume = _phase_folder(out, GHN_DIR)
                train(config.ghn_training, folder, resume)
        history = read_metrics(folder / METRICS_FILE)
        summary.update({f"ghn_{k}": v for k, v in history[-1].items() if k.startswith("heldout_")})
        ghn_path = str(folder)
    folder, resume = _phase_folder(out, FINETUNE_DIR)
    tuning = dataclasses.replace(config.finetune, ghn=ghn_path or config.finetune.ghn)
    with _PhaseClock(summary, "finetune"):
        summary.update(finetune(tuning, folder, resume=resume, device=device, progress=progress,
                                on_metrics=lambda m: report({"phase": "finetune", **m})))
    write_json(out / TRIAL_FILE, {"config": config.to_dict(), "summary": summary})
    return summary


def load_trial(out: str | Path) -> dict:
    """The config and summary a finished trial left in ``out``."""
    path = Path(out) / TRIAL_FILE
    if not path.is_file():
        raise LogahError(f"{out}: no {TRIAL_FILE} (the trial has not finished)")
    return read_json(path, "trial result")
