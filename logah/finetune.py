"""Fine-tuning a target from a chosen initialisation (docs/design.md §3.5).

    logah finetune --target vit-cpu-target --init logah --ghn runs/ghn --data fashion-mnist \\
        --preset vit-cpu --out runs/ft

The target starts from ``logah.inits`` (``random``, ``orthogonal``, ``ghn3``, ``logah`` or a
predicted-parameters folder) and is trained on a task of ``logah.tasks``; its classifier is
sized for the data, and what a GHN trained on other data keeps of its prediction is decided in
``logah.transfer`` (a text corpus is read with the GHN's own tokenizer unless ``data.tokenizer``
names another). Metrics:

* step 0, before any update: the zero-shot metric of the initialisation (``zero_shot: true``);
* every ``eval_every`` steps and at the end: mean train loss since the last report, validation
  metric (``val_accuracy`` or ``val_perplexity``) and loss on ``data.eval_batches`` batches of
  ``data.eval_split``, learning rate, elapsed time. These choose: the best step, a learning rate;
* after the last step (``final_test``): the final model on the *whole* test split
  (``test_accuracy`` / ``test_perplexity``, ``final_test: true``), the figure to report: no
  choice was made on it and it is the same split for every init.

The run is the same object on one process and on Ray Train workers (``logah.distributed``): under
an initialised process group the model is wrapped in DDP and each rank reads its own shard. As
for GHN training, everything random is a function of (seed, rank, step), and a checkpoint (model,
optimizer, scheduler, step, metric history) lets an interrupted run resume to the same result.
The fine-tuned weights are saved in the ``logah predict`` layout, under ``OUT/model``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from logah.devices import check_memory, resolve_device
from logah.errors import LogahError
from logah.inits import (check_fill_init, check_mimetic, check_perturbation,
                         check_predicted_part, check_rescale_directions, check_unit_variance,
                         initial_model)
from logah.mimetic import MimeticScalars
from logah.families import family_of, finetune_presets
from logah.graph import check_graph_size
from logah.init_kinds import GHN_INITS
from logah.io import FRACTION, NON_NEGATIVE, POSITIVE, SEED, ConfigRecord, write_json
from logah.predict import load_predicted, save_prediction
from logah.runs import Reporter, copy_tree_atomic, run_local
from logah.targets import Arch, arch_from_dict, forward
from logah.tasks import TASKS, DataConfig, make_task
from logah.trainer import Trainer
from logah.transfer import resolve_data

STATE_FILE = "finetune_state.pt"
CONFIG_FILE = "finetune_config.json"
SUMMARY_FILE = "summary.json"
MODEL_DIR = "model"


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(ConfigRecord):
    """One fine-tuning run. Optimisation settings come from ``FINETUNE_PRESETS``."""

    record_name = "finetune config"
    nested_records = {"data": DataConfig}

    target: dict                       # architecture record (``arch_to_dict``)
    init: str = "random"               # random | orthogonal | mimetic | lsuv | ghn3 | logah | folder
    ghn: str | None = None             # GHN checkpoint folder for the ghn3 / logah inits
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.02
    momentum: float = 0.9              # SGD only
    weight_decay: float = 1e-2
    warmup_steps: int = 0
    steps: int = 300
    grad_clip: float = 1.0             # 0: no clipping
    amp: bool = True                   # bf16 autocast on GPU (no effect on CPU)
    eval_every: int = 100
    seed: int = 0
    keep_classifier: bool = False      # a GHN trained on another dataset: keep its classifier
    init_noise: float = 0.0            # GHN inits: + init_noise × the default init (logah.inits)
    null_fill: float = 0.0             # GHN inits: + null_fill × that init outside the prediction's directions
    rescale_directions: bool = False   # GHN inits: each predicted direction at the default init's strength
    fill_init: str = "random"          # GHN inits: the init the three levers above read (FILL_INITS)
    predicted_part: str = "all"        # GHN inits: where the prediction is kept (PREDICTED_PARTS)
    mimetic_attention: bool = False    # GHN inits: mimetic attention instead of the predicted one
    unit_variance: bool = False        # after the init (not lsuv): LSUV's unit-variance scaling
    # mimetic init (logah.mimetic): W_q W_kᵀ ≈ α Z + β I, W_v W_o ≈ α Z − β I; the paper's values
    mimetic_qk_alpha: float = 0.7
    mimetic_qk_beta: float = 0.7
    mimetic_vo_alpha: float = 0.4
    mimetic_vo_beta: float = 0.4
    final_test: bool = True            # evaluate the final model on the whole test split

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", json.loads(json.dumps(self.target)))

    @property
    def arch(self):
        return arch_from_dict(self.target)

    bounds = {"lr": POSITIVE, "momentum": FRACTION, "weight_decay": NON_NEGATIVE,
              "warmup_steps": NON_NEGATIVE, "steps": POSITIVE, "grad_clip": NON_NEGATIVE,
              "eval_every": POSITIVE, "seed": SEED, "init_noise": NON_NEGATIVE,
              "null_fill": NON_NEGATIVE,
              "mimetic_qk_alpha": POSITIVE, "mimetic_qk_beta": NON_NEGATIVE,
              "mimetic_vo_alpha": POSITIVE, "mimetic_vo_beta": NON_NEGATIVE}

    def validate(self) -> None:
        super().validate()     # every number finite and in ``bounds``; the data config
        self.arch.validate()
        if self.optimizer not in ("sgd", "adamw"):
            raise LogahError(f"finetune config: optimizer must be sgd or adamw, got {self.optimizer!r}")
        check_perturbation(self.init, self.init_noise)   # a study refuses it before any trial
        check_perturbation(self.init, self.null_fill, "null_fill")
        check_rescale_directions(self.init, self.rescale_directions)
        check_fill_init(self.init, self.fill_init)
        check_predicted_part(self.init, self.predicted_part)
        check_mimetic(self.init, MimeticScalars.of(self), self.mimetic_attention)
        check_unit_variance(self.init, self.unit_variance)


# Optimisation settings by name (``vit-cpu``, ``gpt2-paper``, ``llama-cpu``, ...): each family's
# ``finetune_presets`` (DESIGN: SGD for ViTs, AdamW for language models; the paper's budgets and
# CPU ones).
FINETUNE_PRESETS: dict[str, dict] = finetune_presets()


def finetune_preset(name: str) -> dict:
    if name not in FINETUNE_PRESETS:
        raise LogahError(f"unknown fine-tuning preset {name!r}: use one of {sorted(FINETUNE_PRESETS)}")
    return dict(FINETUNE_PRESETS[name])


class Finetuner(Trainer):
    """One rank's fine-tuning run of an initialised model; ``run`` (``logah.trainer.Trainer``)
    does the steps. ``make_finetuner`` resolves the data, the task and the init first."""

    state_file = STATE_FILE
    config_file = CONFIG_FILE

    def __init__(self, config: FinetuneConfig, model: torch.nn.Module, task, arch: Arch, *,
                 rank: int = 0, world_size: int = 1, device: str | torch.device = "cpu",
                 resume_from: Path | None = None):
        super().__init__(config, rank=rank, world_size=world_size, device=device)
        self.task, self.arch, self.net = task, arch, model
        self.data = task.data
        self.progress_label = f"fine-tune ({config.init})"
        self.shown_metrics = (self.metric,)
        self.setup(model, config.optimizer, resume_from=resume_from, momentum=config.momentum)

    @property
    def metric(self) -> str:
        return target_metric(self.arch)[0]

    def compute_loss(self, step: int) -> torch.Tensor:
        x, y = self.batch(step)
        return self.task.loss(forward(self.model, self.arch, x), y)

    def due(self, step: int) -> tuple[bool, bool]:
        due = step % self.config.eval_every == 0 or step == self.config.steps
        return due, due

    def step_metrics(self, steps: list[dict], seconds: float, checkpoint: bool) -> dict:
        return {"step": self.step, "train_loss": float(np.nanmean([s["loss"] for s in steps])),
                **self.evaluate(), "lr": self.scheduler.get_last_lr()[0],
                "skipped_steps": self.skipped, "time_s": self.elapsed}

    def on_start(self, report: Reporter) -> None:
        if self.step == 0 and not self.history:
            self.log(report, {"step": 0, "zero_shot": True, **self.evaluate()}, checkpoint=False)

    def on_end(self, report: Reporter) -> None:
        if self.config.final_test and not any(m.get("final_test") for m in self.history):
            self.log(report, {"step": self.step, "final_test": True, **self.evaluate_test()},
                     checkpoint=False)
        values = [m[self.metric] for m in self.history if m.get(self.metric) is not None]
        final = values[-1] if values else None
        if final is not None and not math.isfinite(final):
            raise LogahError(f"fine-tuning ended with {self.metric} = {final}: the run diverged "
                             f"(lower the learning rate)")

    @torch.no_grad()
    def evaluate(self, task=None, prefix: str = "val") -> dict[str, float]:
        """Metrics of the model on ``task``'s evaluation split (default: this run's validation
        batches), keys prefixed with ``prefix``."""
        self.net.eval()
        with self.autocast():
            scores = (task or self.task).evaluate(lambda x: forward(self.net, self.arch, x),
                                                  self.device)
        return {f"{prefix}_{k}": v for k, v in scores.items()}

    # --- state -------------------------------------------------------------------------------
    def module_state(self, folder: Path) -> dict:
        """The fine-tuned weights go to ``model/`` (the ``logah predict`` layout), which is also
        what a resumed run reloads: not into the run state a second time."""
        params = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        save_prediction(self.arch, params, folder / MODEL_DIR)
        return {}

    def load_module(self, folder: Path, state: dict) -> None:
        _, saved = load_predicted(folder / MODEL_DIR)
        self.net.load_state_dict(saved.state_dict())

    def evaluate_test(self) -> dict[str, float]:
        """The model on the whole test split (the figure a results table reports)."""
        data = dataclasses.replace(self.data, eval_split="test", eval_batches=0)
        return self.evaluate(make_task(self.arch, data, seed=self.config.seed), prefix="test")


def initialised_target(config: FinetuneConfig, *, device: torch.device, copies: int, what: str,
                       rank: int = 0, world_size: int = 1):
    """The one place a fine-tuning run's starting point is resolved: the data (a text GHN's own
    tokenizer, ``logah.transfer``), this rank's task, the target fitted to the data, a check
    that ``copies`` float32 copies of it fit on ``device``, and the model as ``config.init``
    leaves it. Returns ``(task, arch, model)``."""
    data = resolve_data(config.data, config.ghn)
    task = make_task(config.arch, data, seed=config.seed, rank=rank, world_size=world_size)
    arch = task.fit(config.arch)
    if config.init in GHN_INITS:      # the GHN reads the target's graph: its size, before building
        check_graph_size(arch)
    # the analytic count: building even a meta model of a very deep target takes minutes
    check_memory(arch.num_params(), device, copies, f"{what} {arch.family} target")
    model = initial_model(arch, config.init, ghn=config.ghn, seed=config.seed,
                          device=device, task=task,
                          keep_classifier=config.keep_classifier,
                          init_noise=config.init_noise, null_fill=config.null_fill,
                          rescale_directions=config.rescale_directions,
                          fill_init=config.fill_init, predicted_part=config.predicted_part,
                          mimetic=MimeticScalars.of(config),
                          mimetic_attention=config.mimetic_attention,
                          unit_variance=config.unit_variance)
    return task, arch, model


def make_finetuner(config: FinetuneConfig, *, rank: int = 0, world_size: int = 1,
                   device: str | torch.device = "cpu",
                   resume_from: Path | None = None) -> Finetuner:
    """A ``Finetuner`` of ``config``'s initialised target (on one rank of ``world_size``)."""
    config.validate()
    device = resolve_device(device)
    task, arch, model = initialised_target(config, device=device, rank=rank,
                                           world_size=world_size, what="fine-tuning",
                                           copies=training_copies(config.optimizer))
    return Finetuner(config, model, task, arch, rank=rank, world_size=world_size, device=device,
                     resume_from=resume_from)


def training_copies(optimizer: str) -> int:
    """Float32 copies of the parameters that training holds: weights, gradients, the optimizer's
    state (SGD momentum: one, AdamW moments: two) and the initialisation's transient copy."""
    return 3 + (2 if optimizer == "adamw" else 1)


def evaluate_init(target: Arch, init: str, data: DataConfig, *, ghn: str | Path | None = None,
                  seed: int = 0, device: str | torch.device = "cpu", **options) -> dict[str, float]:
    """Metrics of ``target`` as ``init`` leaves it, with no fine-tuning, on ``data.eval_split``:
    the zero-shot figure of a GHN (what step 0 of a fine-tuning run reports, on any split and
    any number of batches). ``options``: the init's other ``FinetuneConfig`` settings
    (``null_fill``, ``unit_variance``, ...). Keys are prefixed with the split:
    ``test_accuracy``, ``val_perplexity``."""
    config = FinetuneConfig(target=target.to_dict(), init=init, ghn=None if ghn is None else str(ghn),
                            data=data, seed=seed, **options)
    return evaluate_initialised(config, device)


@torch.no_grad()
def evaluate_initialised(config: FinetuneConfig, device: str | torch.device = "cpu") -> dict[str, float]:
    """``evaluate_init`` of the target and init a fine-tuning config describes."""
    config.validate()
    device = resolve_device(device)
    task, arch, net = initialised_target(config, device=device, copies=2, what="evaluating")
    net.eval()
    scores = task.evaluate(lambda x: forward(net, arch, x), device)
    return {f"{config.data.eval_split}_{name}": value for name, value in scores.items()}


def target_metric(arch: Arch) -> tuple[str, str]:
    """The validation metric reported for ``arch`` and whether higher ("max") is better."""
    task = TASKS[family_of(arch).data_kind]
    return f"val_{task.metric}", task.mode


def summarize(history: list[dict], metric: str, mode: str) -> dict:
    """Zero-shot, best and final values of ``metric`` in a fine-tuning history."""
    pick = max if mode == "max" else min
    values = [m[metric] for m in history if metric in m]
    # a non-finite value (stored as null, logah.io.dumps) is no candidate for "best"
    finite = [v for v in values if v is not None and math.isfinite(v)]
    zero = [m[metric] for m in history if m.get("zero_shot")]
    test = next((m for m in history if m.get("final_test")), {})
    trained = [m for m in history if not m.get("final_test")]
    return {"metric": metric, f"zero_shot_{metric}": zero[0] if zero else None,
            f"best_{metric}": pick(finite) if finite else None, f"final_{metric}": values[-1],
            **{k: v for k, v in test.items() if k.startswith("test_")},
            "steps": trained[-1]["step"], "time_s": trained[-1].get("time_s", 0.0)}


def export_finetuned(checkpoint: Path, out: Path) -> None:
    """Copy a fine-tuning checkpoint to ``out/checkpoint`` and its weights to ``out/model``."""
    copy_tree_atomic(checkpoint, out / "checkpoint")
    copy_tree_atomic(out / "checkpoint" / MODEL_DIR, out / MODEL_DIR)


def finetune(config: FinetuneConfig, out: str | Path, *, resume: bool = False, device: str = "cpu",
             progress: bool = True, on_metrics: Callable[[dict], None] | None = None,
             overwrite: bool = False) -> dict:
    """Fine-tune in this process (no Ray); returns the summary also written to ``out/summary.json``."""
    device = resolve_device(device)
    trainer = run_local(
        lambda resume_from: make_finetuner(config, device=device, resume_from=resume_from),
        out, config_file=CONFIG_FILE, config=config.to_dict(), export=export_finetuned,
        resume=resume, progress=progress, on_metrics=on_metrics, overwrite=overwrite)
    return write_summary(trainer.history, out, *target_metric(trainer.arch))


def write_summary(history: list[dict], out: str | Path, metric: str, mode: str) -> dict:
    summary = summarize(history, metric, mode)
    write_json(Path(out) / SUMMARY_FILE, summary)
    return summary


def load_finetuned(out: str | Path):
    """The architecture and module a fine-tuning run left in ``out``."""
    return load_predicted(Path(out) / MODEL_DIR)

