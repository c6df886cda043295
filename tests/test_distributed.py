"""Ray Train: 2 CPU workers with DDP (gloo), checkpoints exported as they come, restart after a
killed worker, user mistakes on a worker raised as themselves without retries, fast refusals."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from logah.checkpoint import load_ghn
from logah.distributed import (RUN_NAME, check_resources, check_storage_shared, finetune_ray,
                               local_path, refuse_unshared, train_ghn_ray)
from logah.errors import LogahError
from ray_start import start_ray_retrying
from test_training import DIGITS, tiny_config

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    start_ray_retrying(lambda: ray.init("local", num_cpus=2, include_dashboard=False,
                                        log_to_driver=False, logging_level="ERROR"),
                       ray.shutdown)
    yield ray
    ray.shutdown()


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()]


def test_two_workers_train_in_sync_on_different_data(ray_local, tmp_path):
    config = tiny_config(steps=4, checkpoint_every=2)
    out, storage = tmp_path / "run", tmp_path / "storage"
    result = train_ghn_ray(config, out, workers=2, storage=storage)
    assert result.checkpoint is not None
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    final = metrics[-1]
    assert final["step"] == 4 and final["ranks_weights_equal"] is True
    assert final["ranks_shared_samples"] == 0
    assert any(a != b for a, b in (m["ranks_archs"] for m in metrics if "ranks_archs" in m))
    assert _steps(out) == [1, 2, 3, 4]
    # the export is rank 0's last checkpoint, as a run without Ray leaves it
    assert (out / "checkpoint" / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()
    load_ghn(out)
    assert list((storage / RUN_NAME).glob("checkpoint_*")) and not (out / "ray").exists()
    # the driver refuses what a run without Ray refuses, before starting any worker
    with pytest.raises(LogahError, match="already holds"):
        train_ghn_ray(config, out, workers=2, storage=storage)


def test_a_worker_error_is_raised_as_itself_and_not_retried(ray_local, tmp_path):
    import ray.train

    attempts = tmp_path / "attempts.txt"

    class CountFailures(ray.train.UserCallback):
        def after_exception(self, run_context, worker_exceptions):
            with open(attempts, "a") as f:
                f.write(f"{sorted(worker_exceptions)}\n")

    config = tiny_config(data=dataclasses.replace(DIGITS, batch_size=5000))   # digits: < 2000
    out = tmp_path / "run"
    with pytest.raises(LogahError, match="fewer than one batch of 5000"):
        train_ghn_ray(config, out, workers=2, max_failures=3, callbacks=[CountFailures()])
    assert len(attempts.read_text().splitlines()) == 1      # no retry of a user mistake
    assert not out.exists()                                  # and no stub left behind


def test_more_workers_than_the_cluster_has_fail_at_once(ray_local, tmp_path):
    start = time.monotonic()
    with pytest.raises(LogahError, match="--workers 1000 needs 1000 CPU .* has 2"):
        train_ghn_ray(tiny_config(), tmp_path / "run", workers=1000)
    assert time.monotonic() - start < 10
    with pytest.raises(LogahError, match="needs 2 GPU .* has 0"):
        train_ghn_ray(tiny_config(), tmp_path / "run", workers=2, use_gpu=True)
    assert not (tmp_path / "run").exists()


def test_storage_some_node_cannot_see_is_refused(ray_local, tmp_path):
    check_storage_shared(str(tmp_path / "storage"))          # one node: nothing to check
    # (two nodes that share this file system: test_storage_nodes.py)
    refuse_unshared("/mnt/nfs/runs", {"head": True, "worker-1": True})
    assert local_path("file:///mnt/nfs/a%20b") == Path("/mnt/nfs/a b")
    assert local_path("/data/runs") == Path("/data/runs") and local_path("s3://b/runs") is None
    with pytest.raises(LogahError, match="/data/runs is a local path that 1 of the cluster's 3 "
                                         "nodes cannot see"):
        refuse_unshared("/data/runs", {"head": True, "worker-1": False, "worker-2": True})
    with pytest.raises(LogahError, match="positive integer"):
        check_resources(0, available={"CPU": 2})


def test_ray_train_failures_are_unwrapped_to_the_workers_exception():
    from ray.exceptions import RayActorError
    from ray.train import ControllerError, WorkerGroupError

    from logah.distributed import unwrap_failure

    mistake = LogahError("dataset digits: 1437 training items, fewer than one batch")
    assert unwrap_failure(ControllerError(mistake)) is mistake
    bug = RuntimeError("boom")
    group = WorkerGroupError("[Rank 1 Error Snippet]: Traceback ... boom",
                             {0: RayActorError(), 1: bug})
    assert unwrap_failure(group) is bug and "Rank 1 Error Snippet" in bug.__notes__[0]
    assert unwrap_failure(WorkerGroupError("lost", {0: mistake, 1: RuntimeError()})) is mistake
    killed = WorkerGroupError("a worker died", {0: RayActorError()})
    assert unwrap_failure(killed) is killed


def _ray_train_worker_pids() -> list[int]:
    """The Ray Train workers of the Ray this test process started (its raylet is our child):
    Ray names a worker process after its actor class (``ray::RayTrainWorker...``). Other Rays
    on the machine are never touched."""
    pids = []
    for process in psutil.Process().children(recursive=True):
        try:
            if any("RayTrainWorker" in part for part in process.cmdline()):
                pids.append(process.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


@pytest.mark.slow
def test_killed_worker_restarts_from_last_checkpoint(ray_local, tmp_path):
    config = tiny_config(steps=40, checkpoint_every=5, log_every=5)
    out = tmp_path / "run"
    killed = []

    def kill_a_worker_after_first_checkpoint():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            if (out / "checkpoint").is_dir():
                for pid in _ray_train_worker_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker_after_first_checkpoint, daemon=True)
    killer.start()
    train_ghn_ray(config, out, workers=2, max_failures=2)
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    # restarted from a checkpoint, not from scratch, and the records of the lost steps dropped
    assert _steps(out) == list(range(5, 41, 5))


def test_two_workers_fine_tune_with_the_same_code(ray_local, tmp_path):
    from logah.finetune import evaluate_init, finetune, load_finetuned
    from test_finetune import ft_config

    config = ft_config("vit", init="orthogonal", steps=4, eval_every=2)
    finetune_ray(config, tmp_path / "ray", workers=2)
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["zero_shot_val_accuracy"] is not None
    assert _steps(tmp_path / "ray") == [0, 2, 4, 4]       # the last: the whole test split
    assert 0 <= summary["test_accuracy"] <= 1
    arch, _ = load_finetuned(tmp_path / "ray")      # rank 0's final weights were saved
    assert evaluate_init(arch, str(tmp_path / "ray" / "model"), config.data)["val_accuracy"] == \
        summary["final_val_accuracy"]
    # 2 ranks x batch b on disjoint shards: not the single-process run, but the same start
    single = finetune(config, tmp_path / "one", progress=False)
    assert single["zero_shot_val_accuracy"] == summary["zero_shot_val_accuracy"]


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.slow
def test_ctrl_c_stops_a_ray_run_within_seconds(tmp_path):
    """The CLI's own local Ray: SIGINT ends the run, its workers and its Ray processes."""
    marker = f"LOGAH_TEST_RUN={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "logah.cli", "train-ghn", "--ghn",
                                "logah-test", "--data", "digits", "--batch-size", "16",
                                "--steps", "100000", "--workers", "1", "--out", str(out)],
                               cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not _ray_train_worker_pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, err = process.communicate(timeout=120)
    assert time.monotonic() - start < 30, "Ctrl-C took too long"
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "logah train-ghn: interrupted"
    deadline = time.monotonic() + 30
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _processes_with(marker), "Ray processes outlived the run"
    assert not out.exists()
