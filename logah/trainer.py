"""The training loop that GHN training and fine-tuning share.

Both runs are the same machine: one rank of a (possibly distributed) run that steps an optimizer
over a task's batches, skips a step whose loss or gradient is not finite, reports metrics and
checkpoints, and resumes from a checkpoint to exactly the run it would have been. ``Trainer``
holds all of that once; ``logah.training.GHNTrainer`` and ``logah.finetune.Finetuner`` say only
what differs: what a step's loss is, what an evaluation reports, what a checkpoint holds.

* **device and precision**: bf16 autocast on GPU (``amp``), fp32 on CPU;
* **DDP**: under an initialised process group the module is wrapped in
  ``DistributedDataParallel``; the skip decision uses the all-reduced gradient norm, so every
  rank skips the same steps;
* **optimizer groups** (``make_optimizer``): weight decay on tensors of two or more dimensions
  (matrices, embeddings), none on biases and norm gains, as nanoGPT's ``configure_optimizers``
  does: decaying a norm's gain towards 0 or a bias towards 0 is not regularisation;
* **schedule**: linear warm-up then cosine to 0 (``lr_factor``), advanced only by steps the
  optimizer took: a skipped step skips the schedule too;
* **divergence**: a step with a non-finite loss or gradient norm is skipped and counted; after
  ``MAX_SKIPPED_IN_A_ROW`` of them in a row the run stops with a ``LogahError`` (a run that
  only skips would otherwise go on to its end and report NaN);
* **randomness**: the torch RNG is reseeded every step from (seed, rank, step), and batches are a
  function of (seed, rank, step) (``logah.tasks``), so a resumed run repeats an uninterrupted one;
* **state**: step, skipped steps, elapsed time, module, optimizer and scheduler state, and the
  metric history (``logah.runs.write_run_state``), plus what a subclass adds.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from logah.errors import LogahError
from logah.progress import progress_bar
from logah.runs import Reporter, read_run_state, write_run_state
from logah.seeds import step_seed

MAX_SKIPPED_IN_A_ROW = 10


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@contextlib.contextmanager
def evaluation_mode(modules: list[nn.Module]) -> Iterator[None]:
    """Eval mode for ``modules`` within the block; afterwards every submodule is back in the
    mode it was in (train or eval), whatever the block did."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for module, training in saved:
            module.training = training


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Decay on tensors of two or more dimensions, none on the rest (biases, norm gains)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def make_optimizer(module: nn.Module, kind: str, *, lr: float, weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """AdamW or SGD (with momentum) over ``parameter_groups``."""
    groups = parameter_groups(module, weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise LogahError(f"optimizer must be sgd or adamw, got {kind!r}")


class Trainer:
    """One rank's run; ``run`` does the steps. A subclass sets ``state_file``, ``config_file``
    and ``progress_label``, calls ``setup`` at the end of its ``__init__`` with the module it
    trains, and implements ``compute_loss`` (one step's loss), ``due`` (which steps report and
    which checkpoint), ``step_metrics`` (a report's record) and ``write_files`` (what a checkpoint
    holds besides the run state). ``config`` has ``steps``, ``lr``, ``weight_decay``,
    ``warmup_steps``, ``grad_clip`` (0: none), ``amp`` and ``seed``."""

    state_file: str
    config_file: str
    progress_label: str
    shown_metrics: tuple[str, ...] = ()    # shown beside the progress bar

    def __init__(self, config, *, rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu"):
        self.config, self.rank, self.world_size = config, rank, world_size
        self.device = torch.device(device)
        self.step, self.skipped, self.skipped_in_a_row = 0, 0, 0
        self.elapsed = 0.0
        self.history: list[dict] = []
        self._batches, self._next_batch_step = None, -1

    def setup(self, module: nn.Module, optimizer: str, *, resume_from: Path | None,
              momentum: float = 0.9, find_unused_parameters: bool = False) -> None:
        """The optimizer and schedule of ``module``, its state from ``resume_from`` (a
        checkpoint folder), and the DDP wrapper when a process group is initialised."""
        config = self.config
        self.module = module
        self.optimizer = make_optimizer(module, optimizer, lr=config.lr,
                                        weight_decay=config.weight_decay, momentum=momentum)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps))
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        self.model = module
        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(module, device_ids=ids,
                                                 find_unused_parameters=find_unused_parameters)

    def autocast(self):
        enabled = self.config.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # --- what subclasses say ----------------------------------------------------------------
    def compute_loss(self, step: int) -> torch.Tensor:
        """The loss of ``step`` (the module in train mode, under autocast)."""
        raise AssertionError(f"{type(self).__name__} must define compute_loss")

    def due(self, step: int) -> tuple[bool, bool]:
        """Whether the run reports after ``step`` steps, and whether that report checkpoints."""
        raise AssertionError(f"{type(self).__name__} must define due")

    def step_metrics(self, steps: list[dict], seconds: float, checkpoint: bool) -> dict:
        """The record reported after a window of ``steps`` (``train_step`` outputs) that took
        ``seconds``; with ``checkpoint``, evaluation metrics too."""
        raise AssertionError(f"{type(self).__name__} must define step_metrics")

    def write_files(self, folder: Path) -> None:
        """Files of a checkpoint besides the run state (a GHN, a fine-tuned model)."""

    def extra_state(self) -> dict:
        """Tensors and numbers a subclass adds to the run state."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def after_step(self) -> None:
        """Called after every optimizer step that was taken (e.g. an EMA update)."""

    def on_start(self, report: Reporter) -> None:
        """Called before the first step of ``run`` (e.g. a zero-shot evaluation)."""

    def on_end(self, report: Reporter) -> None:
        """Called after the last step of ``run`` (e.g. the final test)."""

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's batch at ``step`` (``self.task``'s): steps taken in order read the task's
        ``DataLoader``; any other step starts a new one there."""
        if self._batches is None or self._next_batch_step != step:
            self._batches = self.task.train_batches(step, self.config.steps, self.device)
            self._next_batch_step = step
        self._next_batch_step += 1
        return next(self._batches)

    # --- one step ------------------------------------------------------------------------------
    def train_step(self) -> dict:
        """One optimizer step (or a skipped one); returns its loss, gradient norm and whether it
        was taken."""
        torch.manual_seed(step_seed(self.config.seed, self.rank, self.step))
        self.module.train()
        with self.autocast():
            loss = self.compute_loss(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(),
                                                   self.config.grad_clip or math.inf)
        finite = bool(torch.isfinite(grad_norm)) and bool(torch.isfinite(loss))
        if finite:
            self.optimizer.step()
            self.scheduler.step()
            self.after_step()
            self.skipped_in_a_row = 0
        else:
            self.skipped += 1
            self.skipped_in_a_row += 1
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise LogahError(f"{self.progress_label}: {self.skipped_in_a_row} steps in a row had a "
                             f"non-finite loss or gradient (last loss {loss.item():.4g}), up to "
                             f"step {self.step}: the run diverged (lower the learning rate)")
        return {"loss": loss.item(), "grad_norm": grad_norm.item(), "finite": finite}

    # --- the loop ------------------------------------------------------------------------------
    def run(self, report: Reporter, progress: bool = True) -> list[dict]:
        self.on_start(report)
        bar = progress_bar(self.progress_label, total=self.config.steps, initial=self.step,
                           enabled=progress and self.rank == 0)
        window: list[dict] = []
        start = time.perf_counter()
        while self.step < self.config.steps:
            window.append(self.train_step())
            bar.update(1)
            reports, checkpoint = self.due(self.step)
            if not reports:
                continue
            seconds = time.perf_counter() - start
            self.elapsed += seconds
            metrics = self.step_metrics(window, seconds, checkpoint)
            bar.update(0, **{k: v for k, v in metrics.items() if k in self.shown_metrics})
            self.log(report, metrics, checkpoint)
            window, start = [], time.perf_counter()
        bar.close()
        self.on_end(report)
        return self.history

    def log(self, report: Reporter, metrics: dict, checkpoint: bool) -> None:
        """Keep ``metrics`` in the history and hand it to ``report``, with a checkpoint writer
        on rank 0 when ``checkpoint``."""
        self.history.append(metrics)
        report(metrics, self.write_checkpoint if checkpoint and self.rank == 0 else None)

    # --- state ---------------------------------------------------------------------------------
    def module_state(self, folder: Path) -> dict:
        """The trained module's part of a checkpoint: its state dict, in the run state (a
        subclass that saves the module as a file of its own returns {})."""
        return {"module": self.module.state_dict()}

    def load_module(self, folder: Path, state: dict) -> None:
        self.module.load_state_dict(state["module"])

    def write_checkpoint(self, folder: Path) -> None:
        self.write_files(folder)
        state = {"step": self.step, "skipped": self.skipped, "elapsed": self.elapsed,
                 **self.module_state(folder), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), **self.extra_state()}
        write_run_state(folder, state, self.state_file, self.history, self.config,
                        self.config_file)

    def load_checkpoint(self, folder: Path) -> None:
        state, self.history = read_run_state(folder, self.state_file, self.config,
                                             self.config_file, self.device)
        try:
            self.load_module(folder, state)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.load_extra_state(state)
            self.step, self.skipped = int(state["step"]), int(state["skipped"])
            self.elapsed = float(state["elapsed"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise LogahError(f"cannot resume from {folder}: state does not match ({err})") from None

