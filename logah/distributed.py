"""GHN training and fine-tuning on Ray Train: the plain loops on N workers (DDP).

    logah train-ghn --workers 2 --ghn logah-cpu --space vits-cpu --steps 300 --out runs/ghn2
    logah finetune --workers 2 --target vit-cpu-target --init random --out runs/ft2

``TorchTrainer`` starts the worker group and ``torch.distributed`` (gloo on CPU, NCCL on GPU);
each worker runs the job's trainer (``GHNTrainer`` or ``Finetuner``) with its own rank, so ranks
draw different architectures and read different data shards, and DDP averages gradients.

The driver holds the output folder as a run without Ray does (``logah.runs``: one run per
folder, ``resume``/``overwrite``, no stub left by a run that never checkpointed) and checks
before ``fit()`` what it can: the config, the folder, the storage, and that the cluster has the
resources for ``workers`` (a request it cannot meet would otherwise wait forever).

Checkpoints: rank 0 reports one through ``ray.train.report`` into Ray Train's storage
(``storage``: a URI, or a path every node sees, e.g. on NFS; default ``OUT/ray``), and a
Train callback on the controller, which runs on the driver's node, exports each one to ``out``
as it arrives, exactly as a run without Ray leaves it. A worker group that fails is restarted
from the last checkpoint (``max_failures``); a run started again with ``resume`` (same storage
and run name) continues from it.

Failures: a ``LogahError`` on a worker (bad data, a checkpoint that does not fit) is a user
mistake that a restart cannot fix, so a callback stops the run at once instead of retrying it;
``unwrap_failure`` turns Ray Train's ``TrainingFailedError`` back into the worker's exception.
Real faults (a killed worker, a lost node) are retried.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from logah import finetune, runs, training
from logah.errors import LogahError
from logah.io import output_errors, write_json
from logah.runs import RAY_STORAGE_DIR, run_folder

RUN_NAME = "ray-train"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"   # Ray Train's record of a run's checkpoints


@dataclass(frozen=True)
class Job:
    """A kind of run: its config and trainer classes, how a checkpoint is exported, the config file."""

    config_class: type
    make_trainer: Callable       # (config, rank=, world_size=, device=, resume_from=) -> Trainer
    export: Callable[[Path, Path], None]
    config_file: str


JOBS = {"ghn": Job(training.TrainConfig, training.GHNTrainer, training.export_checkpoint,
                   training.CONFIG_FILE),
        "finetune": Job(finetune.FinetuneConfig, finetune.make_finetuner,
                        finetune.export_finetuned, finetune.CONFIG_FILE)}


# --- Ray itself ----------------------------------------------------------------------------------

def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to the cluster at ``address``, or start a private local Ray (``"local"``: never a
    cluster that an earlier ``ray start`` left running). Ray's own logs stay out of the terminal;
    worker errors reach the user through ``unwrap_failure``."""
    import ray

    if ray.is_initialized():
        return
    if address:
        check_address(address)
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    else:
        ray.init("local", num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False)


ADDRESS_TIMEOUT_S = 10


def check_address(address: str) -> None:
    """Refuse a ``HOST:PORT`` address (or ``ray://HOST:PORT``) where nothing answers within
    ``ADDRESS_TIMEOUT_S``: ``ray.init`` would retry for minutes and ignore Ctrl-C meanwhile.
    Other forms (``auto``) are Ray's to resolve."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as err:
        raise LogahError(f"--address {address}: no Ray cluster answers there "
                         f"({err.strerror or err}); start one (ray start --head) or give its address") from None


def check_resources(workers: int, cpus_per_worker: float = 1, use_gpu: bool = False,
                    available: dict | None = None) -> None:
    """Refuse at once a worker group that the cluster (or the ``available`` resources of a
    local Ray about to start) cannot hold: Ray would wait for it forever."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise LogahError(f"--workers must be a positive integer, got {workers!r}")
    if not cpus_per_worker > 0:
        raise LogahError(f"CPUs per worker must be positive, got {cpus_per_worker!r}")
    if available is None:
        import ray

        available = ray.cluster_resources()
    need = {"CPU": workers * cpus_per_worker, "GPU": workers if use_gpu else 0}
    for resource, amount in need.items():
        have = available.get(resource, 0)
        if amount > have:
            per = f"{cpus_per_worker:g} CPU" if resource == "CPU" else "1 GPU"
            raise LogahError(f"--workers {workers} needs {amount:g} {resource} ({per} each) but the "
                             f"Ray cluster has {have:g}: use fewer workers or a larger cluster")


def is_uri(storage: str) -> bool:
    return "://" in storage


def local_path(storage: str) -> Path | None:
    """The local folder behind a storage path or ``file://`` URI; None for remote storage."""
    if not is_uri(storage):
        return Path(storage)
    parsed = urllib.parse.urlparse(storage)
    return Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else None


def resolve_storage(storage: str | Path | None, out: Path) -> str:
    """Ray Train's storage: a URI as given, a local path made absolute (``ray job submit`` runs
    in a copy of the working dir), ``out/ray`` by default."""
    if storage is not None and is_uri(str(storage)):
        return str(storage)
    return str((out / RAY_STORAGE_DIR) if storage is None else Path(storage).expanduser().absolute())


def check_storage_shared(storage: str) -> None:
    """Refuse a local storage path that some node of the cluster cannot see (Ray Train's
    checkpoints would be scattered over the nodes' disks). A path on a file system that every
    node mounts (NFS) is fine: a marker written here must be visible from a task on each node.
    A URI (``file://`` included) is taken at its word as storage every node reaches."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    if is_uri(storage) or len(nodes) < 2:
        return
    folder = Path(storage)
    with output_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / f".logah-shared-{uuid.uuid4().hex}"
        marker.touch()
    try:
        sees = ray.remote(num_cpus=0)(os.path.exists)
        probes = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                  .remote(str(marker)) for node in nodes]
        visible = dict(zip(nodes, ray.get(probes, timeout=120)))
    except ray.exceptions.GetTimeoutError:
        raise LogahError(f"cannot check that every node sees the storage {storage}: a node did "
                         f"not answer within 120 s") from None
    finally:
        marker.unlink(missing_ok=True)
    refuse_unshared(storage, visible)


def refuse_unshared(storage: str, visible: dict[str, bool]) -> None:
    """The decision of ``check_storage_shared``: ``visible`` maps node id -> sees ``storage``."""
    blind = [node for node, sees in visible.items() if not sees]
    if blind:
        raise LogahError(f"the Ray Train storage {storage} is a local path that {len(blind)} of "
                         f"the cluster's {len(visible)} nodes cannot see: give --storage a URI "
                         f"(s3://..., gs://...) or a path every node mounts (NFS)")


def _storage_holds_run(storage: str, run_name: str) -> bool:
    """Whether Ray Train's storage already records checkpoints of ``run_name``."""
    import pyarrow.fs

    try:
        if is_uri(storage):
            fs, root = pyarrow.fs.FileSystem.from_uri(storage)
        else:
            fs, root = pyarrow.fs.LocalFileSystem(), storage
        info = fs.get_file_info(f"{root.rstrip('/')}/{run_name}/{SNAPSHOT_FILE}")
    except (OSError, ValueError) as err:
        raise LogahError(f"cannot read Ray Train storage {storage}: {err}") from None
    return info.type != pyarrow.fs.FileType.NotFound


def unwrap_failure(error: BaseException) -> BaseException:
    """The exception behind a Ray Train failure: a worker's own exception (a ``LogahError``
    first, then the lowest rank's), or the controller's. ``error`` itself when the failure is
    Ray's (a killed worker, a lost node), whose message says what happened. A worker's bug keeps
    the worker's traceback as a note (Ray does not pickle tracebacks)."""
    from ray.exceptions import RayError
    from ray.train import ControllerError, WorkerGroupError

    if isinstance(error, ControllerError):
        return unwrap_failure(error.controller_failure)
    if isinstance(error, WorkerGroupError):
        failures = [error.worker_failures[rank] for rank in sorted(error.worker_failures)]
        user = [e for e in failures if not isinstance(e, RayError)]
        mistakes = [e for e in user if isinstance(e, LogahError)]
        if mistakes:
            return mistakes[0]
        if user:
            user[0].add_note(str(error))
            return user[0]
    return error


# --- Train callbacks (run on the controller, on the driver's node) ------------------------------

def _train_callbacks():
    """Defined lazily: ``ray.train`` is imported only by runs on Ray."""
    import ray.train

    class StopOnUserError(ray.train.UserCallback):
        """A ``LogahError`` on any worker ends the run now: restarting would fail the same way.
        (Raising here makes the controller fail with this error, which Ray does not retry.)"""

        def after_exception(self, run_context, worker_exceptions: dict) -> None:
            for rank in sorted(worker_exceptions):
                if isinstance(worker_exceptions[rank], LogahError):
                    raise worker_exceptions[rank]

    class ExportCheckpoints(ray.train.UserCallback):
        """Rank 0's metrics and each persisted checkpoint, written to ``out`` as a run without
        Ray writes them (``logah.runs.LocalReporter``)."""

        def __init__(self, job: str, out: Path):
            self.job, self.out = job, out

        def after_report(self, run_context, metrics: list, checkpoint) -> None:
            recorder = runs.LocalReporter(self.out, JOBS[self.job].export)
            if checkpoint is None:
                recorder.record(metrics[0], None)
                return
            with checkpoint.as_directory() as folder:
                recorder.record(metrics[0], Path(folder))

    return StopOnUserError, ExportCheckpoints


# --- the worker loop ---------------------------------------------------------------------------

def _worker_loop(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    job = JOBS[loop_config["job"]]
    config = job.config_class.from_dict(loop_config["config"])
    # checkpoints are written in Ray's own session folder on this node, then copied to storage
    scratch = Path(context.get_storage().local_working_directory)

    def report(metrics: dict, write: Callable[[Path], None] | None) -> None:
        if write is None:
            ray.train.report(metrics, checkpoint=None)
            return
        with runs.scratch_folder(scratch) as folder:
            write(folder)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    def run(resume_from: Path | None) -> None:
        trainer = job.make_trainer(config, rank=context.get_world_rank(),
                                    world_size=context.get_world_size(),
                                    device=ray.train.torch.get_device(), resume_from=resume_from)
        trainer.run(report, progress=False)

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:               # Ray's own: this run was restarted or resumed
        with checkpoint.as_directory() as folder:
            run(Path(folder))
    elif loop_config["resume_from"] is not None:   # the exported one of a run without Ray
        folder = Path(loop_config["resume_from"])
        if not folder.is_dir():
            raise LogahError(f"cannot resume: {folder} is not visible on this worker's node")
        run(folder)
    else:
        run(None)


# --- the driver --------------------------------------------------------------------------------

def run_on_ray(job: str, config, out: str | Path, *, workers: int, use_gpu: bool = False,
               cpus_per_worker: float = 1, max_failures: int = 1, storage: str | Path | None = None,
               run_name: str | None = None, callbacks: Sequence = (), resume: bool = False,
               overwrite: bool = False):
    """Run ``job`` ("ghn" or "finetune") on ``workers`` Ray Train workers, writing to ``out``;
    returns Ray's ``Result``.

    ``storage``: Ray Train's storage path or URI (default ``out/ray``); ``run_name``: the Train
    run's name in it (deterministic, so a restarted driver resumes the same run; default
    ``RUN_NAME``); ``callbacks``: more ``ray.train.UserCallback``s (e.g. Tune's
    ``TuneReportCallback``); ``resume`` / ``overwrite`` as for a run without Ray. A worker's
    ``LogahError`` is raised as itself, after no retry."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    spec = JOBS[job]
    config.validate()
    out = Path(out).absolute()
    storage_path = resolve_storage(storage, out)
    run_name = run_name or RUN_NAME
    local = local_path(storage_path)
    in_out = local is not None and local.is_relative_to(out)   # the run folder's own storage
    ray_holds_run = not in_out and _storage_holds_run(storage_path, run_name)
    if ray_holds_run and not resume:
        raise LogahError(f"Ray Train storage {storage_path} already holds run {run_name!r} "
                         f"(use --resume to continue it, or another run name)")
    resumable = (out / "checkpoint").is_dir() or ray_holds_run or (
        in_out and resume and _storage_holds_run(storage_path, run_name))
    with run_folder(out, config_file=spec.config_file, resume=resume, overwrite=overwrite,
                    resumable=resumable) as folder:
        init_ray(os.environ.get("RAY_ADDRESS"))
        check_resources(workers, cpus_per_worker, use_gpu)
        check_storage_shared(storage_path)
        write_json(out / spec.config_file, config.to_dict())
        stop_on_user_error, export_checkpoints = _train_callbacks()
        resume_from = folder.checkpoint if folder.resume and folder.checkpoint.is_dir() else None
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"job": job, "config": config.to_dict(),
                               "resume_from": str(resume_from) if resume_from else None},
            scaling_config=ray.train.ScalingConfig(
                num_workers=workers, use_gpu=use_gpu,
                resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
            run_config=ray.train.RunConfig(
                name=run_name, storage_path=storage_path,
                callbacks=[export_checkpoints(job, out), *callbacks, stop_on_user_error()],
                failure_config=ray.train.FailureConfig(max_failures=max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
        )
        try:
            return _fit(trainer)
        except ray.train.TrainingFailedError as err:
            raise unwrap_failure(err) from None


def _fit(trainer):
    """``trainer.fit()``, stoppable with Ctrl-C within seconds. In the main thread, Ray Train
    installs a SIGINT handler that asks the controller to abort, which waits on a busy
    controller and then returns as if the run had finished. Fitting in a helper thread keeps
    Python's own handler: the ``KeyboardInterrupt`` ends the driver, which shuts Ray down, and
    with it the controller and workers this driver owns."""
    import ray

    if threading.current_thread() is not threading.main_thread():
        return trainer.fit()     # e.g. inside a Ray Tune trial, which handles interrupts itself
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # handed to the main thread as is
            outcome["error"] = err

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        ray.shutdown()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def train_ghn_ray(config, out: str | Path, **options):
    """GHN training (``logah.training.TrainConfig``) on Ray Train; see ``run_on_ray``."""
    return run_on_ray("ghn", config, out, **options)


def finetune_ray(config, out: str | Path, **options):
    """Fine-tuning (``logah.finetune.FinetuneConfig``) on Ray Train; see ``run_on_ray``. Also
    writes ``out/summary.json``, as ``logah.finetune.finetune`` does."""
    result = run_on_ray("finetune", config, out, **options)
    finetune.write_summary(runs.read_metrics(Path(out) / runs.METRICS_FILE), out,
                           *finetune.target_metric(config.arch))
    return result
