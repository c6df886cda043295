"""Fine-tuning a target ViT or GPT-2 from a chosen initialisation (DESIGN.md §3.5).

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.distributed as dist

from logah.devices import check_memory, resolve_device
from logah.errors import LogahError
from logah.inits import check_init_noise, initial_model
from logah.io import FRACTION, NON_NEGATIVE, POSITIVE, SEED, ConfigRecord
from logah.predict import load_predicted, save_prediction
from logah.progress import progress_bar
from logah.families import family_of, finetune_presets
from logah.targets import Arch, arch_from_dict, count_params, forward
from logah.tasks import TASKS, DataConfig, make_task
from logah.training import Reporter, lr_factor, read_run_state, step_seed, write_run_state
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
    init: str = "random"               # random | orthogonal | ghn3 | logah | predicted folder
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
    final_test: bool = True            # evaluate the final model on the whole test split

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", json.loads(json.dumps(self.target)))

    @property
    def arch(self):
        return arch_from_dict(self.target)

    bounds = {"lr": POSITIVE, "momentum": FRACTION, "weight_decay": NON_NEGATIVE,
              "warmup_steps": NON_NEGATIVE, "steps": POSITIVE, "grad_clip": NON_NEGATIVE,
              "eval_every": POSITIVE, "seed": SEED, "init_noise": NON_NEGATIVE}

    def validate(self) -> None:
        super().validate()     # every number finite and in ``bounds``; the data config
        self.arch.validate()
        if self.optimizer not in ("sgd", "adamw"):
            raise LogahError(f"finetune config: optimizer must be sgd or adamw, got {self.optimizer!r}")
        check_init_noise(self.init, self.init_noise)   # a study refuses it before any trial


# Optimisation settings by name (``vit-cpu``, ``gpt2-paper``, ``llama-cpu``, ...): each family's
# ``finetune_presets`` (DESIGN: SGD for ViTs, AdamW for language models; the paper's budgets and
# CPU ones).
FINETUNE_PRESETS: dict[str, dict] = finetune_presets()


def finetune_preset(name: str) -> dict:
    if name not in FINETUNE_PRESETS:
        raise LogahError(f"unknown fine-tuning preset {name!r}: use one of {sorted(FINETUNE_PRESETS)}")
    return dict(FINETUNE_PRESETS[name])


class Finetuner:
    """State of one rank's fine-tuning run; ``run`` does the steps."""

    def __init__(self, config: FinetuneConfig, *, rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu", resume_from: Path | None = None):
        config.validate()
        self.config, self.rank, self.world_size = config, rank, world_size
        self.device = resolve_device(device)
        self.data = resolve_data(config.data, config.ghn)
        self.task = make_task(config.arch, self.data, seed=config.seed, rank=rank,
                              world_size=world_size)
        self.arch = self.task.fit(config.arch)
        check_memory(count_params(self.arch), self.device, _training_copies(config.optimizer),
                     f"fine-tuning {self.arch.family} target")
        self.net = initial_model(self.arch, config.init, ghn=config.ghn, seed=config.seed,
                                 device=self.device, task=self.task,
                                 keep_classifier=config.keep_classifier,
                                 init_noise=config.init_noise)
        params = list(self.net.parameters())
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                             weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps))
        self.step, self.skipped, self.history = 0, 0, []
        self.elapsed = 0.0
        if resume_from is not None:
            self._load_state(resume_from)
        self.model = self.net
        if world_size > 1 and dist.is_available() and dist.is_initialized():
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)

    def _autocast(self):
        enabled = self.config.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @property
    def metric(self) -> str:
        return target_metric(self.arch)[0]

    def train_step(self) -> float:
        config, step = self.config, self.step
        torch.manual_seed(step_seed(config.seed, self.rank, step))
        x, y = self.task.batch(step, self.device)
        self.model.train()
        with self._autocast():
            loss = self.task.loss(forward(self.model, self.arch, x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(),
                                                   config.grad_clip or math.inf)
        if bool(torch.isfinite(grad_norm)) and bool(torch.isfinite(loss)):
            self.optimizer.step()
        else:
            self.skipped += 1
        self.scheduler.step()
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def evaluate(self, task=None, prefix: str = "val") -> dict[str, float]:
        """Metrics of the model on ``task``'s evaluation split (default: this run's validation
        batches), keys prefixed with ``prefix``."""
        self.net.eval()
        with self._autocast():
            scores = (task or self.task).evaluate(lambda x: forward(self.net, self.arch, x),
                                                  self.device)
        return {f"{prefix}_{k}": v for k, v in scores.items()}

    # --- state -------------------------------------------------------------------------------
    def write_checkpoint(self, folder: Path) -> None:
        """Fine-tuned weights (``logah predict`` layout, also what a resumed run reloads),
        optimizer and scheduler state, metric history."""
        params = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        save_prediction(self.arch, params, folder / MODEL_DIR)
        state = {"step": self.step, "skipped": self.skipped, "elapsed": self.elapsed,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        write_run_state(folder, state, STATE_FILE, self.history, self.config, CONFIG_FILE)

    def _load_state(self, folder: Path) -> None:
        state, self.history = read_run_state(folder, STATE_FILE, self.config, CONFIG_FILE,
                                             self.device)
        _, saved = load_predicted(folder / MODEL_DIR)
        try:
            self.net.load_state_dict(saved.state_dict())
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise LogahError(f"cannot resume from {folder}: state does not match ({err})") from None
        self.step, self.skipped, self.elapsed = state["step"], state["skipped"], state["elapsed"]

    # --- the loop ----------------------------------------------------------------------------
    def run(self, report: Reporter, progress: bool = True) -> list[dict]:
        config = self.config
        if self.step == 0 and not self.history:
            self._log(report, {"step": 0, "zero_shot": True, **self.evaluate()}, checkpoint=False)
        bar = progress_bar(f"fine-tune ({config.init})", total=config.steps, initial=self.step,
                           enabled=progress and self.rank == 0)
        losses, start = [], time.perf_counter()
        while self.step < config.steps:
            losses.append(self.train_step())
            bar.update(1)
            if self.step % config.eval_every and self.step != config.steps:
                continue
            self.elapsed += time.perf_counter() - start
            metrics = {"step": self.step, "train_loss": float(np.nanmean(losses)),
                       **self.evaluate(), "lr": self.scheduler.get_last_lr()[0],
                       "skipped_steps": self.skipped, "time_s": self.elapsed}
            bar.update(0, **{self.metric: metrics[self.metric]})
            self._log(report, metrics, checkpoint=True)
            losses, start = [], time.perf_counter()
        bar.close()
        if config.final_test and not any(m.get("final_test") for m in self.history):
            self._log(report, {"step": self.step, "final_test": True, **self.evaluate_test()},
                      checkpoint=False)
        return self.history

    def evaluate_test(self) -> dict[str, float]:
        """The model on the whole test split (the figure a results table reports)."""
        data = dataclasses.replace(self.data, eval_split="test", eval_batches=0)
        return self.evaluate(make_task(self.arch, data, seed=self.config.seed), prefix="test")

    def _log(self, report: Reporter, metrics: dict, checkpoint: bool) -> None:
        self.history.append(metrics)
        report(metrics, self.write_checkpoint if checkpoint and self.rank == 0 else None)


def _training_copies(optimizer: str) -> int:
    """Float32 copies of the parameters that training holds: weights, gradients, the optimizer's
    state (SGD momentum: one, AdamW moments: two) and the initialisation's transient copy."""
    return 3 + (2 if optimizer == "adamw" else 1)


@torch.no_grad()
def evaluate_init(target: Arch, init: str, data: DataConfig, *, ghn: str | Path | None = None,
                  seed: int = 0, device: str | torch.device = "cpu",
                  keep_classifier: bool = False, init_noise: float = 0.0) -> dict[str, float]:
    """Metrics of ``target`` as ``init`` leaves it, with no fine-tuning, on ``data.eval_split``:
    the zero-shot figure of a GHN (what step 0 of a fine-tuning run reports, on any split and
    any number of batches). Keys are prefixed with the split: ``test_accuracy``, ``val_perplexity``."""
    data.validate()
    device = resolve_device(device)
    task = make_task(target, resolve_data(data, ghn), seed=seed)
    arch = task.fit(target)
    check_memory(count_params(arch), device, 2, f"evaluating {arch.family} target")
    net = initial_model(arch, init, ghn=ghn, seed=seed, device=device, task=task,
                        keep_classifier=keep_classifier, init_noise=init_noise).eval()
    scores = task.evaluate(lambda x: forward(net, arch, x), device)
    return {f"{data.eval_split}_{name}": value for name, value in scores.items()}


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
    from logah.training import copy_tree_atomic

    copy_tree_atomic(checkpoint, out / "checkpoint")
    copy_tree_atomic(out / "checkpoint" / MODEL_DIR, out / MODEL_DIR)


def finetune(config: FinetuneConfig, out: str | Path, *, resume: bool = False, device: str = "cpu",
             progress: bool = True, on_metrics: Callable[[dict], None] | None = None,
             overwrite: bool = False) -> dict:
    """Fine-tune in this process (no Ray); returns the summary also written to ``out/summary.json``."""
    from logah.training import run_local

    device = resolve_device(device)
    trainer = run_local(
        lambda resume_from: Finetuner(config, device=device, resume_from=resume_from),
        out, config_file=CONFIG_FILE, config=config.to_dict(), export=export_finetuned,
        resume=resume, progress=progress, on_metrics=on_metrics, overwrite=overwrite)
    return write_summary(trainer.history, out, *target_metric(trainer.arch))


def write_summary(history: list[dict], out: str | Path, metric: str, mode: str) -> dict:
    from logah.io import write_json

    summary = summarize(history, metric, mode)
    write_json(Path(out) / SUMMARY_FILE, summary)
    return summary


def load_finetuned(out: str | Path):
    """The architecture and module a fine-tuning run left in ``out``."""
    return load_predicted(Path(out) / MODEL_DIR)

