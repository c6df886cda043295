"""GHN training on Ray Train: the plain loop of ``logah.training`` on N workers (DDP).

    logah train-ghn --workers 2 --ghn logah-cpu --space vits-cpu --steps 300 --out runs/ghn2

``TorchTrainer`` starts the worker group and ``torch.distributed`` (gloo on CPU, NCCL on GPU);
each worker runs ``GHNTrainer`` with its own rank, so ranks draw different architectures and
read different data shards, and DDP averages gradients. Rank 0 reports checkpoints through
``ray.train.report``; a worker group that fails is restarted from the last one
(``FailureConfig(max_failures)``), and a run started again with the same ``out`` folder (the
Ray run name and storage are derived from it) resumes from its latest checkpoint. When the run
ends, its last checkpoint is exported to ``out`` exactly as a run without Ray would leave it.
"""

from __future__ import annotations

from pathlib import Path

from logah.io import atomic_write_text, write_json
from logah.training import CONFIG_FILE, METRICS_FILE, TrainConfig, export_checkpoint

RUN_NAME = "ray-train"


def _worker_loop(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    config = TrainConfig.from_dict(loop_config["config"])
    checkpoint = ray.train.get_checkpoint()
    from logah.training import GHNTrainer

    def report(metrics: dict, folder: Path | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(folder) if folder is not None else None
        ray.train.report(metrics, checkpoint=ckpt)

    def run(resume_from: Path | None) -> None:
        trainer = GHNTrainer(config, rank=context.get_world_rank(),
                             world_size=context.get_world_size(),
                             device=ray.train.torch.get_device(), resume_from=resume_from)
        trainer.run(report, progress=False)

    if checkpoint is None:
        run(None)
    else:
        with checkpoint.as_directory() as folder:
            run(Path(folder))


def train_ghn_ray(config: TrainConfig, out: str | Path, *, workers: int, use_gpu: bool = False,
                  cpus_per_worker: float = 1, max_failures: int = 1):
    """Train on ``workers`` Ray Train workers and export the result to ``out``; returns Ray's Result."""
    import ray.train
    from ray.train.torch import TorchTrainer

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"config": config.to_dict()},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=RUN_NAME, storage_path=str(out / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as folder:
            export_checkpoint(Path(folder), out)
            history = (Path(folder) / METRICS_FILE).read_text()
        atomic_write_text(out / METRICS_FILE, history)
        write_json(out / CONFIG_FILE, config.to_dict())
    return result
