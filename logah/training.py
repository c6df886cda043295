"""GHN training: plain PyTorch, one process per rank, with an injected report function.

    logah train-ghn --ghn logah-cpu --space vits-cpu --data fashion-mnist --steps 300 \\
        --out runs/ghn

Each step samples a meta-batch of ``meta_batch`` architectures from the training list of an
architecture space, predicts their parameters, runs the task loss of every one of them on the
same mini-batch of real data, and updates the GHN. The loop itself (optimizer groups, schedule,
skipped steps, checkpoints, resume, DDP) is ``logah.trainer.Trainer``'s; what is GHN training's:

* AdamW (the paper's lr 3e-4, weight decay 1e-2 on matrices), cosine schedule with linear
  warm-up, gradient clipping at 5;
* no predicted-parameter regulariser (GHN-3's and the paper's ``3e-5 · Σ‖W‖_F``): every predicted
  weight and embedding is normalised to a fixed RMS (``logah.postprocess``), so its norm is a
  constant that a penalty cannot change, and biases and norm weights pass through bounded maps.
  A penalty on the raw decoder output would only shrink the scale that the normalisation divides
  out: it changes no predicted weight, only how far an optimizer step turns the raw output;
* the decoders always run in fp32, whatever the autocast;
* an optional layer-diversity term (not the paper's): ``layer_diversity`` = λ > 0 adds λ × the
  predicted network's ``layer_alikeness`` (``logah.layer_roles``: mean squared cosine between a
  role's matrices in every pair of layers) to each architecture's task loss. Trained on task
  loss alone, a GHN predicts the same matrix for every layer (cosine 0.9998 on ViT); the term
  asks it to use what tells layers apart (its depth encoding). Every checkpoint reports
  ``heldout_layer_alikeness`` (the mean over held-out networks of more than one block), with or
  without the term;
* an optional EMA of the GHN weights, which is what the saved GHN then holds (its state is part
  of the checkpoint);
* the meta-batch of architectures is a function of (seed, rank, step), like the data batch, so
  every rank trains on different architectures and data (the anchor code's ranks share them) and
  a resumed run reproduces an uninterrupted one.

``train_ghn`` runs without Ray. ``logah.distributed`` runs the same function on Ray Train
workers, where ``torch.distributed`` is initialised and the GHN is wrapped in DDP here.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from logah.archs import (HELD_OUT_POOL, get_space, sample_archs, sample_held_out,
                         space_from_dict, space_to_dict)
from logah.checkpoint import write_ghn_files
from logah.data.tokenization import tokenizer_fingerprint
from logah.devices import resolve_device
from logah.errors import LogahError
from logah.io import FRACTION, NON_NEGATIVE, POSITIVE, SEED, ConfigRecord, atomic_file
from logah.ghn import GHN, GHNConfig, build_ghn
from logah.layer_roles import layer_alikeness
from logah.graph import Graph, graph_of
from logah.presets import get_preset
from logah.targets import Arch, build_model
from logah.predict import bound_forward
from logah.runs import copy_tree_atomic, run_local
from logah.seeds import step_rng
from logah.tasks import DataConfig, ImageClassification, Task, make_task
from logah.trainer import Trainer, evaluation_mode

STATE_FILE = "train_state.pt"
CONFIG_FILE = "train_config.json"
HELD_OUT_SEED_OFFSET = 1_000_003   # held-out candidates are drawn with another seed

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(ConfigRecord):
    """A GHN training run (architecture space, data, budget, optimisation)."""

    record_name = "train config"
    nested_records = {"ghn": GHNConfig, "data": DataConfig}

    ghn: GHNConfig = field(default_factory=lambda: get_preset("logah-cpu"))
    space: dict = field(default_factory=lambda: space_to_dict(get_space("vits-cpu")))
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 300                  # optimizer steps
    meta_batch: int = 1               # m: architectures per step and rank
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 10
    grad_clip: float = 5.0
    amp: bool = True                  # bf16 autocast when on GPU (no effect on CPU)
    ema_decay: float = 0.0            # 0: no EMA
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    heldout_archs: int = 4            # architectures never trained on, for evaluation
    layer_diversity: float = 0.0      # λ: + λ × layer_alikeness of each prediction (not the paper's)

    def __post_init__(self) -> None:
        # keep the space record in its JSON form, so a config read back from disk compares equal
        object.__setattr__(self, "space", json.loads(json.dumps(self.space)))

    bounds = {"steps": POSITIVE, "meta_batch": POSITIVE, "lr": POSITIVE,
              "weight_decay": NON_NEGATIVE, "warmup_steps": NON_NEGATIVE,
              "grad_clip": POSITIVE, "ema_decay": FRACTION, "seed": SEED,
              "checkpoint_every": POSITIVE, "log_every": POSITIVE, "heldout_archs": NON_NEGATIVE,
              "layer_diversity": NON_NEGATIVE}

    def validate(self) -> None:
        super().validate()     # every number finite and in ``bounds``; the GHN and data configs
        space_from_dict(self.space)   # a space validates itself as it is built


def check_task_fits_ghn(ghn: GHNConfig, task: Task) -> None:
    """Refuse, before training, data whose classes a GHN cannot tell apart.

    GHN-3's tiled decoder maps the classifier's output axis through a head of ``num_classes``
    rows and repeats it for wider classifiers, so on a dataset with more classes some classes
    would get exact copies of other classes' weights and biases. GHN-3 sizes that head for its
    dataset; so must a GHN trained here. (A language model's vocabulary is tiled like any other
    axis wider than the chunk: that is the baseline's documented behaviour, not refused.) The
    low-rank decoder predicts any width, and the shape encoder maps any size to its nearest
    table entry, so nothing else needs checking."""
    if (ghn.decoder == "tiled" and isinstance(task, ImageClassification)
            and task.num_classes > ghn.num_classes):
        raise LogahError(f"dataset {task.data.dataset} has {task.num_classes} classes but the tiled "
                         f"decoder's class head predicts {ghn.num_classes}: the other classes would "
                         f"copy their weights; use a GHN with num_classes >= {task.num_classes}")


class GHNTrainer(Trainer):
    """One rank's GHN training run; ``run`` (``logah.trainer.Trainer``) does the steps.

    ``archs`` is the training list: the space's draw, each architecture fitted to the task
    (``task.fit``: classifier or vocabulary sized for the data). ``heldout`` holds up to
    ``heldout_archs`` configurations absent from it (``archs.sample_held_out``), possibly none:
    then a warning is logged and no ``heldout_*`` metric is reported."""

    state_file = STATE_FILE
    config_file = CONFIG_FILE
    progress_label = "train GHN"
    shown_metrics = ("loss",)

    def __init__(self, config: TrainConfig, *, rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu", resume_from: Path | None = None):
        config.validate()
        super().__init__(config, rank=rank, world_size=world_size, device=device)
        space = space_from_dict(config.space)
        drawn = sample_archs(space, seed=space.seed + config.seed)
        self.task = make_task(drawn[0], config.data, seed=config.seed, rank=rank,
                              world_size=world_size)
        check_task_fits_ghn(config.ghn, self.task)
        self.archs = [self.task.fit(arch) for arch in drawn]
        self.heldout = sample_held_out(space, self.archs, config.heldout_archs,
                                       seed=space.seed + config.seed + HELD_OUT_SEED_OFFSET,
                                       fit=self.task.fit)
        if len(self.heldout) < config.heldout_archs and rank == 0:
            found = (f"only {len(self.heldout)} configurations" if self.heldout else
                     "no configuration")
            effect = (f"held-out metrics average {len(self.heldout)} architectures, not "
                      f"{config.heldout_archs}" if self.heldout else
                      "no architecture is held out and no heldout_* metric is reported")
            log.warning("space %s: %s outside its training list (%d architectures, %d distinct) "
                        "turned up in %d draws, so %s", space.name, found, len(self.archs),
                        len(set(self.archs)), HELD_OUT_POOL * space.num_archs, effect)
        self._graphs: dict[Arch, Graph] = {}
        self._models: dict[Arch, torch.nn.Module] = {}
        self.ghn = build_ghn(config.ghn, seed=config.seed).to(self.device)
        self.ema = (AveragedModel(self.ghn, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
                    if config.ema_decay else None)
        # the tiled decoder's class bias is unused by targets whose head has no bias
        self.setup(self.ghn, "adamw", resume_from=resume_from, find_unused_parameters=True)

    # --- pieces -----------------------------------------------------------------------------
    def graph(self, arch: Arch) -> Graph:
        if arch not in self._graphs:
            self._graphs[arch] = graph_of(arch, self.config.ghn.edge_cutoff)
            self._models[arch] = build_model(arch, "meta")
        return self._graphs[arch]

    def meta_batch(self, step: int) -> list[Arch]:
        """The architectures this rank trains on at ``step`` (different on every rank)."""
        rng = step_rng(self.config.seed, self.rank, step)
        return [self.archs[i] for i in rng.integers(len(self.archs), size=self.config.meta_batch)]

    def predicting_ghn(self) -> GHN:
        """The GHN whose predictions are evaluated and saved: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.ghn

    # --- one step ----------------------------------------------------------------------------
    def compute_loss(self, step: int) -> torch.Tensor:
        """The task loss of this rank's meta-batch of architectures at ``step``, each bound to
        its predicted parameters, on one batch of data (plus ``layer_diversity`` × how alike
        each prediction's layers are)."""
        archs = self.meta_batch(step)
        x, y = self.batch(step)
        predictions = self.model([self.graph(a) for a in archs])
        self.last_draw = {"archs": [self.archs.index(a) for a in archs],
                          "samples": self.task.sample_ids(step)}
        return sum(self.task.loss(bound_forward(self._models[a], p, a, x), y)
                   + self.diversity_penalty(p)
                   for a, p in zip(archs, predictions)) / len(archs)

    def diversity_penalty(self, params: dict[str, torch.Tensor]) -> torch.Tensor | float:
        """``layer_diversity`` × how alike the predicted layers are; 0 when the term is off or
        the network has one block."""
        alikeness = layer_alikeness(params) if self.config.layer_diversity else None
        return 0.0 if alikeness is None else self.config.layer_diversity * alikeness

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.ghn)

    def due(self, step: int) -> tuple[bool, bool]:
        config = self.config
        checkpoint = step % config.checkpoint_every == 0 or step == config.steps
        return checkpoint or step % config.log_every == 0, checkpoint

    def step_metrics(self, steps: list[dict], seconds: float, checkpoint: bool) -> dict:
        config = self.config
        steps_per_s = len(steps) / seconds
        metrics = {"step": self.step, "loss": float(np.nanmean([s["loss"] for s in steps])),
                   "lr": self.scheduler.get_last_lr()[0], "grad_norm": steps[-1]["grad_norm"],
                   "skipped_steps": self.skipped, "steps_per_s": steps_per_s,
                   "archs_per_s": steps_per_s * config.meta_batch * self.world_size,
                   "samples_per_s": steps_per_s * config.data.batch_size * self.world_size}
        if checkpoint:
            metrics.update(self.evaluate())
            metrics.update(self._rank_agreement())
        return metrics

    # --- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, archs: list[Arch] | None = None) -> dict[str, float]:
        """Mean task metric of predicted (not fine-tuned) held-out architectures; empty when
        there are none. The GHN and the target modules are left in the mode they were in: the
        target modules are cached and trained on, so an evaluation that left them in eval mode
        would turn off GPT-2's dropout for the rest of the run (and only for the run that did
        not resume from the checkpoint written after that evaluation)."""
        archs = self.heldout if archs is None else archs
        if not archs:
            return {}
        graphs = [self.graph(arch) for arch in archs]
        ghn, models = self.predicting_ghn(), [self._models[arch] for arch in archs]
        scores, alikeness = [], []
        with evaluation_mode([ghn, *models]):
            for arch, graph, model in zip(archs, graphs, models):
                params = ghn([graph])[0]
                with self.autocast():
                    scores.append(self.task.evaluate(
                        lambda x, model=model, params=params, arch=arch: bound_forward(model, params, arch, x),
                        self.device))
                layers = layer_alikeness(params)     # None for a one-block network
                if layers is not None:
                    alikeness.append(float(layers))
        metrics = {f"heldout_{k}": float(np.mean([s[k] for s in scores])) for k in scores[0]}
        if alikeness:
            metrics["heldout_layer_alikeness"] = float(np.mean(alikeness))
        return metrics

    # --- state -------------------------------------------------------------------------------
    def write_files(self, folder: Path) -> None:
        """GHN files (``logah predict --ghn`` reads them): the predicting GHN and what it was
        trained on."""
        tokenizer = getattr(self.task, "tokenizer", None)
        trained_on = {"family": self.config.space["family"], "space": self.config.space,
                      "dataset": self.config.data.dataset, "num_outputs": self.task.num_outputs}
        if tokenizer is not None:
            trained_on["tokenizer"] = {
                "name": f"{tokenizer.name_or_path}, {len(tokenizer)} tokens",
                "fingerprint": tokenizer_fingerprint(tokenizer)}
        write_ghn_files(self.predicting_ghn(), folder,
                        {"step": self.step, "trained_on": trained_on}, tokenizer)

    def extra_state(self) -> dict:
        return {"ema": self.ema.state_dict() if self.ema is not None else None}

    def load_extra_state(self, state: dict) -> None:
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    def _rank_agreement(self) -> dict:
        """Under DDP, check what the anchor code gets wrong: weights equal on every rank, while
        the architectures and data of the last step differ between ranks."""
        if not (self.world_size > 1 and dist.is_available() and dist.is_initialized()):
            return {}
        checksum = float(sum(p.double().sum() for p in self.ghn.parameters()))
        views = [None] * self.world_size
        dist.all_gather_object(views, (checksum, self.last_draw))
        samples = [set(draw["samples"]) for _, draw in views]
        return {"ranks_weights_equal": len({c for c, _ in views}) == 1,
                "ranks_shared_samples": len(set.intersection(*samples)),
                "ranks_archs": [draw["archs"] for _, draw in views]}


def export_checkpoint(checkpoint: Path, out: Path) -> None:
    """Copy a training checkpoint to ``out/checkpoint`` and its GHN to ``out``, so the output
    folder is what ``logah predict --ghn`` accepts."""
    from logah.checkpoint import CONFIG_FILE as GHN_CONFIG, TOKENIZER_DIR, WEIGHTS_FILE

    copy_tree_atomic(Path(checkpoint), out / "checkpoint")
    if (out / "checkpoint" / TOKENIZER_DIR).is_dir():
        copy_tree_atomic(out / "checkpoint" / TOKENIZER_DIR, out / TOKENIZER_DIR)
    for name in (WEIGHTS_FILE, GHN_CONFIG):   # config last: its presence marks a complete GHN
        atomic_file(out / name, lambda tmp, n=name: shutil.copy2(out / "checkpoint" / n, tmp))


def train_ghn(config: TrainConfig, out: str | Path, *, resume: bool = False, device: str = "cpu",
              progress: bool = True, on_metrics: Callable[[dict], None] | None = None,
              overwrite: bool = False) -> list[dict]:
    """Train in this process (no Ray) and leave a GHN checkpoint folder at ``out``."""
    device = resolve_device(device)
    trainer = run_local(lambda resume_from: GHNTrainer(config, device=device, resume_from=resume_from),
                        out, config_file=CONFIG_FILE, config=config.to_dict(),
                        export=export_checkpoint, resume=resume, progress=progress,
                        on_metrics=on_metrics, overwrite=overwrite)
    return trainer.history
