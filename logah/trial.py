"""One trial of a study: train a GHN (or take a given one), predict a target, fine-tune it.

    summary = run_trial(TrialConfig(ghn_training=..., finetune=...), "runs/trial-0",
                        report=print)

A trial is a pure function of its config and seed: (GHN settings, architecture-sampling
settings and training budget in ``ghn_training``; target, init and fine-tuning budget in
``finetune``; ``seed``, which replaces the seeds of both parts) → metrics. Every metric record
goes to ``report`` as it is produced, tagged with its ``phase`` (``ghn`` records carry a
``ghn_`` prefix so that they never shadow the fine-tuning metrics a search optimises). Ray Tune
calls this with ``ray.tune.report`` as the reporter; on its own it runs without Ray.

Baseline inits (``random``, ``orthogonal``) skip the GHN phase. With ``ghn_checkpoint`` the GHN
is loaded rather than trained. A trial started again on the same folder resumes each phase from
its last checkpoint, so an interrupted study loses at most one checkpoint interval per trial.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from logah.errors import LogahError
from logah.finetune import FinetuneConfig, finetune
from logah.inits import GHN_INITS
from logah.io import ConfigRecord, write_json
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
    seed: int = 0

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


def run_trial(config: TrialConfig, out: str | Path, *, report: MetricsReporter | None = None,
              device: str = "cpu", progress: bool = False) -> dict:
    """Run (or resume) the trial in ``out``; returns its summary, also in ``out/trial.json``."""
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = report or (lambda metrics: None)
    summary: dict = {"seed": config.seed, "init": config.finetune.init}
    ghn_path = config.ghn_checkpoint
    if config.uses_ghn and ghn_path is None:
        folder, resume = _phase_folder(out, GHN_DIR)
        training = dataclasses.replace(config.ghn_training, seed=config.seed)
        history = train_ghn(training, folder, resume=resume, device=device, progress=progress,
                            on_metrics=lambda m: report({"phase": "ghn",
                                                         **{f"ghn_{k}": v for k, v in m.items()}}))
        summary.update({f"ghn_{k}": v for k, v in history[-1].items() if k.startswith("heldout_")})
        ghn_path = str(folder)
    folder, resume = _phase_folder(out, FINETUNE_DIR)
    tuning = dataclasses.replace(config.finetune, seed=config.seed, ghn=ghn_path)
    summary.update(finetune(tuning, folder, resume=resume, device=device, progress=progress,
                            on_metrics=lambda m: report({"phase": "finetune", **m})))
    write_json(out / TRIAL_FILE, {"config": config.to_dict(), "summary": summary})
    return summary


def load_trial(out: str | Path) -> dict:
    """The config and summary a finished trial left in ``out``."""
    path = Path(out) / TRIAL_FILE
    if not path.is_file():
        raise LogahError(f"{out}: no {TRIAL_FILE} (the trial has not finished)")
    return json.loads(path.read_text())
