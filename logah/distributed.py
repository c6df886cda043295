"""GHN training and fine-tuning on Ray Train: the plain loops on N workers (DDP).

    logah train-ghn --workers 2 --ghn logah-cpu --space vits-cpu --steps 300 --out runs/ghn2
    logah finetune --workers 2 --target vit-cpu-target --init random --out runs/ft2

``TorchTrainer`` starts the worker group and ``torch.distributed`` (gloo on CPU, NCCL on GPU);
each worker runs the job's trainer (``GHNTrainer`` or ``Finetuner``) with its own rank, so ranks
draw different architectures and read different data shards, and DDP averages gradients. Rank 0
reports checkpoints through ``ray.train.report``; a worker group that fails is restarted from
the last one (``FailureConfig(max_failures)``), and a run started again with the same ``out``
folder (the Ray run name and storage are derived from it) resumes from its latest checkpoint.
When the run ends, its last checkpoint is exported to ``out`` exactly as a run without Ray would
leave it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from logah import finetune, training
from logah.io import atomic_write_text, write_json

RUN_NAME = "ray-train"


@dataclass(frozen=True)
class Job:
    """A kind of run: its config and trainer classes, how a checkpoint is exported, the config file."""

    config_class: type
    trainer_class: type
    export: Callable[[Path, Path], None]
    config_file: str


JOBS = {"ghn": Job(training.TrainConfig, training.GHNTrainer, training.export_checkpoint,
                   training.CONFIG_FILE),
        "finetune": Job(finetune.FinetuneConfig, finetune.Finetuner, finetune.export_finetuned,
                        finetune.CONFIG_FILE)}


def _worker_loop(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    job = JOBS[loop_config["job"]]
    config = job.config_class.from_dict(loop_config["config"])
    checkpoint = ray.train.get_checkpoint()

    def report(metrics: dict, folder: Path | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(folder) if folder is not None else None
        ray.train.report(metrics, checkpoint=ckpt)

    def run(resume_from: Path | None) -> None:
        trainer = job.trainer_class(config, rank=context.get_world_rank(),
                                    world_size=context.get_world_size(),
                                    device=ray.train.torch.get_device(), resume_from=resume_from)
        trainer.run(report, progress=False)

    if checkpoint is None:
        run(None)
    else:
        with checkpoint.as_directory() as folder:
            run(Path(folder))


def run_on_ray(job: str, config, out: str | Path, *, workers: int, use_gpu: bool = False,
               cpus_per_worker: float = 1, max_failures: int = 1, callbacks: list | None = None):
    """Run ``job`` ("ghn" or "finetune") on ``workers`` Ray Train workers and export the result
    to ``out``; returns Ray's ``Result``. ``callbacks`` are Ray Train ``UserCallback``s (a study
    trial passes one that forwards rank 0's metrics to Tune)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"job": job, "config": config.to_dict()},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=RUN_NAME, storage_path=str(out / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2), callbacks=callbacks),
    )
    result = trainer.fit()
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as folder:
            JOBS[job].export(Path(folder), out)
            history = (Path(folder) / training.METRICS_FILE).read_text()
        atomic_write_text(out / training.METRICS_FILE, history)
        write_json(out / JOBS[job].config_file, config.to_dict())
    return result


def train_ghn_ray(config, out: str | Path, **options):
    """GHN training (``logah.training.TrainConfig``) on Ray Train; see ``run_on_ray``."""
    return run_on_ray("ghn", config, out, **options)


def finetune_ray(config, out: str | Path, **options):
    """Fine-tuning (``logah.finetune.FinetuneConfig``) on Ray Train; see ``run_on_ray``. Also
    writes ``out/summary.json``, as ``logah.finetune.finetune`` does."""
    result = run_on_ray("finetune", config, out, **options)
    if result.checkpoint is not None:
        lines = (Path(out) / training.METRICS_FILE).read_text().splitlines()
        finetune.write_summary([json.loads(line) for line in lines if line.strip()], out,
                               *finetune.target_metric(config.arch))
    return result
