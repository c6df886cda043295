"""GHN training: plain PyTorch, one process per rank, with an injected report function.

    python -m logah.cli train-ghn --ghn logah-cpu --space vits-cpu --data fashion-mnist \\
        --steps 300 --out runs/ghn

Each step samples a meta-batch of ``meta_batch`` architectures from the training list of an
architecture space, predicts their parameters, runs the task loss of every one of them on the
same mini-batch of real data, and updates the GHN (DESIGN.md §3.5):

* AdamW, cosine schedule with linear warm-up, gradient clipping;
* no predicted-parameter regulariser (GHN-3's and the paper's ``3e-5 · Σ‖W‖_F``): every predicted
  weight and embedding is normalised to a fixed RMS (``logah.postprocess``), so its norm is a
  constant that a penalty cannot change, and biases and norm weights pass through bounded maps.
  A penalty on the raw decoder output would only shrink the scale that the normalisation divides
  out: it changes no predicted weight, only how far an optimizer step turns the raw output;
* autocast (bf16) on GPU, fp32 on CPU; the decoders always run in fp32;
* an optional EMA of the GHN weights, which is what the saved GHN then holds;
* a step whose loss or gradient norm is not finite is skipped and counted, not fatal. Under DDP
  the decision uses the all-reduced gradient norm, so every rank skips the same steps.

Everything random is a function of (seed, rank, step): the meta-batch indices, the data batch
(``logah.tasks``), and the torch RNG (dropout, augmentation). Resuming therefore needs only the
step, the GHN, optimizer, scheduler and EMA states, all in ``train_state.pt`` (loaded with
``weights_only=True``); resumed runs reproduce uninterrupted ones.

``train_ghn`` runs without Ray. ``logah.distributed`` runs the same function on Ray Train
workers, where ``torch.distributed`` is initialised and the GHN is wrapped in DDP here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

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
from logah.io import (FRACTION, NON_NEGATIVE, POSITIVE, SEED, ConfigRecord, atomic_dir, atomic_file,
                      atomic_write_text, dumps, read_json, write_json)
from logah.ghn import GHN, GHNConfig, build_ghn
from logah.graph import Graph, graph_of
from logah.presets import get_preset
from logah.progress import progress_bar
from logah.targets import Arch, build_model
from logah.predict import bound_forward
from logah.runs import METRICS_FILE, SCRATCH_PREFIX, run_folder
from logah.tasks import DataConfig, ImageClassification, Task, make_task

STATE_FILE = "train_state.pt"
CONFIG_FILE = "train_config.json"
HELD_OUT_SEED_OFFSET = 1_000_003   # held-out candidates are drawn with another seed

log = logging.getLogger(__name__)

# report(metrics, write): ``write`` fills a folder with a checkpoint of this record, or is None
Reporter = Callable[[dict, "Callable[[Path], None] | None"], None]


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

    def __post_init__(self) -> None:
        # keep the space record in its JSON form, so a config read back from disk compares equal
        object.__setattr__(self, "space", json.loads(json.dumps(self.space)))

    bounds = {"steps": POSITIVE, "meta_batch": POSITIVE, "lr": POSITIVE,
              "weight_decay": NON_NEGATIVE, "warmup_steps": NON_NEGATIVE,
              "grad_clip": POSITIVE, "ema_decay": FRACTION, "seed": SEED,
              "checkpoint_every": POSITIVE, "log_every": POSITIVE, "heldout_archs": NON_NEGATIVE}

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


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@contextlib.contextmanager
def evaluation_mode(modules: list[torch.nn.Module]) -> Iterator[None]:
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


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


class GHNTrainer:
    """State of one rank's training run; ``run`` does the steps.

    ``archs`` is the training list: the space's draw, each architecture fitted to the task
    (``task.fit``: classifier or vocabulary sized for the data). ``heldout`` holds up to
    ``heldout_archs`` configurations absent from it (``archs.sample_held_out``), possibly none:
    then a warning is logged and no ``heldout_*`` metric is reported."""

    def __init__(self, config: TrainConfig, *, rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu", resume_from: Path | None = None):
        config.validate()
        self.config, self.rank, self.world_size = config, rank, world_size
        self.device = torch.device(device)
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
        self.optimizer = torch.optim.AdamW(self.ghn.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps))
        self.ema = (AveragedModel(self.ghn, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
                    if config.ema_decay else None)
        self.step, self.skipped, self.history = 0, 0, []
        if resume_from is not None:
            self._load_state(resume_from)
        self.model = self.ghn
        if world_size > 1 and dist.is_available() and dist.is_initialized():
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # the tiled decoder's class bias is unused by targets whose head has no bias
            self.model = DistributedDataParallel(self.ghn, device_ids=ids,
                                                 find_unused_parameters=True)

    # --- pieces -----------------------------------------------------------------------------
    def graph(self, arch: Arch) -> Graph:
        if arch not in self._graphs:
            self._graphs[arch] = graph_of(arch, self.config.ghn.edge_cutoff)
            self._models[arch] = build_model(arch, "meta")
        return self._graphs[arch]

    def meta_batch(self, step: int) -> list[Arch]:
        """The architectures this rank trains on at ``step`` (different on every rank)."""
        rng = np.random.default_rng([self.config.seed, self.rank, step])
        return [self.archs[i] for i in rng.integers(len(self.archs), size=self.config.meta_batch)]

    def _autocast(self):
        enabled = self.config.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def predicting_ghn(self) -> GHN:
        """The GHN whose predictions are evaluated and saved: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.ghn

    # --- one step ----------------------------------------------------------------------------
    def train_step(self) -> dict:
        config, step = self.config, self.step
        torch.manual_seed(step_seed(config.seed, self.rank, step))
        archs = self.meta_batch(step)
        x, y = self.task.batch(step, self.device)
        self.ghn.train()
        with self._autocast():
            predictions = self.model([self.graph(a) for a in archs])
            loss = sum(self.task.loss(bound_forward(self._models[a], p, a, x), y)
                       for a, p in zip(archs, predictions)) / len(archs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.ghn.parameters(), config.grad_clip)
        finite = bool(torch.isfinite(grad_norm)) and bool(torch.isfinite(loss))
        if finite:
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.ghn)
        else:
            self.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.last_draw = {"archs": [self.archs.index(a) for a in archs],
                          "samples": self.task.sample_ids(step)}
        return {"loss": loss.item(), "grad_norm": grad_norm.item(), "finite": finite}

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
        scores = []
        with evaluation_mode([ghn, *models]):
            for arch, graph, model in zip(archs, graphs, models):
                params = ghn([graph])[0]
                with self._autocast():
                    scores.append(self.task.evaluate(
                        lambda x: bound_forward(model, params, arch, x), self.device))
        return {f"heldout_{k}": float(np.mean([s[k] for s in scores])) for k in scores[0]}

    # --- state -------------------------------------------------------------------------------
    def write_checkpoint(self, folder: Path) -> None:
        """GHN files (``logah predict --ghn`` reads them), training state and metric history."""
        tokenizer = getattr(self.task, "tokenizer", None)
        trained_on = {"family": self.config.space["family"], "space": self.config.space,
                      "dataset": self.config.data.dataset, "num_outputs": self.task.num_outputs}
        if tokenizer is not None:
            trained_on["tokenizer"] = {
                "name": f"{tokenizer.name_or_path}, {len(tokenizer)} tokens",
                "fingerprint": tokenizer_fingerprint(tokenizer)}
        write_ghn_files(self.predicting_ghn(), folder,
                        {"step": self.step, "trained_on": trained_on}, tokenizer)
        state = {"step": self.step, "skipped": self.skipped,
                 "ghn": self.ghn.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(),
                 "ema": self.ema.state_dict() if self.ema is not None else None}
        write_run_state(folder, state, STATE_FILE, self.history, self.config, CONFIG_FILE)

    def _load_state(self, folder: Path) -> None:
        state, self.history = read_run_state(folder, STATE_FILE, self.config, CONFIG_FILE,
                                             self.device)
        try:
            self.ghn.load_state_dict(state["ghn"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise LogahError(f"cannot resume from {folder}: state does not match ({err})") from None
        self.step, self.skipped = state["step"], state["skipped"]

    # --- the loop ----------------------------------------------------------------------------
    def run(self, report: Reporter, progress: bool = True) -> list[dict]:
        config = self.config
        bar = progress_bar("train GHN", total=config.steps, initial=self.step,
                           enabled=progress and self.rank == 0)
        window_start, window_steps, losses = time.perf_counter(), 0, []
        while self.step < config.steps:
            out = self.train_step()
            losses.append(out["loss"])
            window_steps += 1
            bar.update(1)
            checkpoint = self.step % config.checkpoint_every == 0 or self.step == config.steps
            if self.step % config.log_every and not checkpoint:
                continue
            elapsed = time.perf_counter() - window_start
            steps_per_s = window_steps / elapsed
            metrics = {"step": self.step, "loss": float(np.nanmean(losses)),
                       "lr": self.scheduler.get_last_lr()[0], "grad_norm": out["grad_norm"],
                       "skipped_steps": self.skipped, "steps_per_s": steps_per_s,
                       "archs_per_s": steps_per_s * config.meta_batch * self.world_size,
                       "samples_per_s": steps_per_s * config.data.batch_size * self.world_size}
            if checkpoint:
                metrics.update(self.evaluate())
                metrics.update(self._rank_agreement())
            self.history.append(metrics)
            bar.update(0, loss=metrics["loss"])
            writer = self.write_checkpoint if checkpoint and self.rank == 0 else None
            report(metrics, writer)
            window_start, window_steps, losses = time.perf_counter(), 0, []
        bar.close()
        return self.history

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

def write_run_state(folder: Path, state: dict, state_file: str, history: list[dict],
                    config: ConfigRecord, config_file: str) -> None:
    """The resumable part of a checkpoint: ``state`` (tensors and numbers only, so it loads with
    ``weights_only=True``), the metric history and the run's config."""
    torch.save(state, folder / state_file)
    (folder / METRICS_FILE).write_text(jsonl(history))
    (folder / config_file).write_text(dumps(config.to_dict(), indent=2))


def read_run_state(folder: Path, state_file: str, config: ConfigRecord, config_file: str,
                   device: torch.device) -> tuple[dict, list[dict]]:
    """The state and metric history ``write_run_state`` left in ``folder``, after checking that
    it was written by a run with ``config``."""
    saved = read_json(folder / config_file, "run config")
    if type(config).from_dict(saved) != config:
        raise LogahError(f"cannot resume from {folder}: it was run with another config")
    try:
        state = torch.load(folder / state_file, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise LogahError(f"cannot resume: {folder / state_file} not found") from None
    except Exception as err:   # torch raises several types for corrupt pickles
        raise LogahError(f"cannot resume from {folder}: {state_file} is unreadable ({err})") from None
    return state, read_jsonl(folder / METRICS_FILE)


def jsonl(records: list[dict]) -> str:
    """Metric records as JSON lines (valid JSON: a non-finite value is written as null)."""
    return "".join(dumps(record) + "\n" for record in records)


def read_jsonl(path: Path) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError) as err:
        raise LogahError(f"cannot read metrics {path}: {err}") from None


@contextlib.contextmanager
def scratch_folder(parent: Path) -> Iterator[Path]:
    """A temporary folder for a checkpoint being written, inside ``parent`` (the run folder, or
    Ray's session folder on a worker) rather than the system temp dir; removed afterwards, and
    by ``logah.runs`` when a killed run leaves one behind."""
    folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class LocalReporter:
    """Report function for runs without Ray: metrics appended to ``out/metrics.jsonl``, and each
    checkpoint written in a scratch folder of ``out`` and handed to ``export`` (which leaves the
    run's usable output in ``out``). Ray runs record through the same ``record``."""

    def __init__(self, out: Path, export: Callable[[Path, Path], None],
                 on_metrics: Callable[[dict], None] | None = None):
        self.out, self.export, self.on_metrics = Path(out), export, on_metrics
        self.out.mkdir(parents=True, exist_ok=True)

    def __call__(self, metrics: dict, write: Callable[[Path], None] | None) -> None:
        if write is None:
            self.record(metrics, None)
        else:
            with scratch_folder(self.out) as folder:
                write(folder)
                self.record(metrics, folder)
        if self.on_metrics is not None:   # after the export, so a caller may stop the run here
            self.on_metrics(metrics)

    def record(self, metrics: dict, checkpoint: Path | None) -> None:
        """Append ``metrics``; with a checkpoint, export it and take its metric history, which
        ends with ``metrics`` (records logged after the previous checkpoint by a run that was
        then restarted from it are dropped with it)."""
        if checkpoint is None:
            with open(self.out / METRICS_FILE, "a") as f:
                f.write(jsonl([metrics]))
            return
        self.export(checkpoint, self.out)
        atomic_write_text(self.out / METRICS_FILE, (checkpoint / METRICS_FILE).read_text())


def copy_tree_atomic(source: Path, target: Path) -> None:
    """Replace folder ``target`` by a copy of ``source`` (readers never see a partial copy)."""
    with atomic_dir(target, overwrite=True) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)


def export_checkpoint(checkpoint: Path, out: Path) -> None:
    """Copy a training checkpoint to ``out/checkpoint`` and its GHN to ``out``, so the output
    folder is what ``logah predict --ghn`` accepts."""
    from logah.checkpoint import CONFIG_FILE as GHN_CONFIG, TOKENIZER_DIR, WEIGHTS_FILE

    copy_tree_atomic(Path(checkpoint), out / "checkpoint")
    if (out / "checkpoint" / TOKENIZER_DIR).is_dir():
        copy_tree_atomic(out / "checkpoint" / TOKENIZER_DIR, out / TOKENIZER_DIR)
    for name in (WEIGHTS_FILE, GHN_CONFIG):   # config last: its presence marks a complete GHN
        atomic_file(out / name, lambda tmp, n=name: shutil.copy2(out / "checkpoint" / n, tmp))


def run_local(make_trainer: Callable[["Path | None"], "GHNTrainer"], out: str | Path, *,
              config_file: str, config: dict, export: Callable[[Path, Path], None],
              resume: bool, progress: bool, on_metrics: Callable[[dict], None] | None = None,
              overwrite: bool = False):
    """Run a trainer (GHN training or fine-tuning) in this process, writing to ``out``, which
    it holds as ``logah.runs.run_folder`` says (one run per folder, resume from
    ``out/checkpoint``, nothing left behind by a run that never checkpointed); passes every
    metrics record to ``on_metrics`` and returns the trainer once its ``run`` has finished."""
    with run_folder(out, config_file=config_file, resume=resume, overwrite=overwrite) as folder:
        trainer = make_trainer(folder.checkpoint if folder.resume else None)
        # metrics logged after the last checkpoint of an interrupted run are dropped with it
        atomic_write_text(folder.path / METRICS_FILE, jsonl(trainer.history))
        write_json(folder.path / config_file, config)
        trainer.run(LocalReporter(folder.path, export, on_metrics), progress=progress)
    return trainer


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
