"""Ray Train: 2 CPU workers with DDP (gloo), checkpoint export, restart after a killed worker."""

import json
import os
import signal
import threading
import time

import pytest

from logah.checkpoint import load_ghn
from logah.distributed import RUN_NAME, finetune_ray, train_ghn_ray
from test_training import tiny_config

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init("local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_two_workers_train_in_sync_on_different_data(ray_local, tmp_path):
    config = tiny_config(steps=4, checkpoint_every=2)
    train_ghn_ray(config, tmp_path / "run", workers=2)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    final = metrics[-1]
    assert final["step"] == 4 and final["ranks_weights_equal"] is True
    assert final["ranks_shared_samples"] == 0
    assert any(a != b for a, b in (m["ranks_archs"] for m in metrics if "ranks_archs" in m))
    load_ghn(tmp_path / "run")      # the exported folder is a GHN checkpoint


def _ray_train_worker_pids() -> list[int]:
    """Ray names its worker processes after the actor class (``ray::RayTrainWorker...``)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"RayTrainWorker" in f.read():
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


def test_killed_worker_restarts_from_last_checkpoint(ray_local, tmp_path):
    config = tiny_config(steps=40, checkpoint_every=5, log_every=5)
    out = tmp_path / "run"
    killed = []

    def kill_a_worker_after_first_checkpoint():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            if list((out / "ray" / RUN_NAME).glob("checkpoint_*")):
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
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()]
    assert steps[-1] == 40


def test_two_workers_fine_tune_with_the_same_code(ray_local, tmp_path):
    from logah.finetune import evaluate_init, finetune, load_finetuned
    from test_finetune import ft_config

    config = ft_config("vit", init="orthogonal", steps=4, eval_every=2)
    finetune_ray(config, tmp_path / "ray", workers=2)
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["zero_shot_val_accuracy"] is not None
    arch, _ = load_finetuned(tmp_path / "ray")      # rank 0's final weights were saved
    assert evaluate_init(arch, str(tmp_path / "ray" / "model"), config.data)["val_accuracy"] == \
        summary["final_val_accuracy"]
    # 2 ranks x batch b on disjoint shards: not the single-process run, but the same start
    single = finetune(config, tmp_path / "one", progress=False)
    assert single["zero_shot_val_accuracy"] == summary["zero_shot_val_accuracy"]
