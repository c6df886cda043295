"""A real two-node Ray cluster on this machine: the smoke rank sweep with `--train-workers 2` trains
each GHN on two Ray Train workers, one on each node.

The nodes start the way cluster/README.md starts them (`ray start --head`, then
`ray start --address`), with token authentication, and the study goes in with
`ray job submit --runtime-env cluster/runtime_env.yaml`. Each node offers one CPU and a Train
worker takes one, so the two workers of a GHN training cannot share a node; the head alone has
the `train_driver` resource the driver trials hold. Both nodes write the study folder, a path on
this machine's filesystem, as they would an NFS mount.

Other Ray instances may run on this machine at the same time: every port is picked free, each
node has its own temp folder, and the test stops exactly the processes of its own two nodes
(`ray stop` would stop every Ray on the machine). Ray replaces a loopback node address by the
host's own (`resolve_ip_for_localhost`), so the nodes talk over this machine's interface; the
dashboard and the Jobs API listen on 127.0.0.1 only.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import psutil
import pytest
from free_ports import free_ports, ray_node_ports

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
START_TIMEOUT_S = 180
STUDY_TIMEOUT_S = 1800


class TwoRayNodes:
    """A head (1 CPU, `train_driver`) and a second node (1 CPU) started with `ray start`."""

    def __init__(self) -> None:
        # Short: Ray's Unix socket paths live under the temp folder and may not exceed 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="lgmn-", dir="/tmp"))
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_USAGE_STATS_ENABLED": "0",
                    # `python` in a job's entrypoint is this environment's, as in an activated venv
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.gcs_port, self.dashboard_port = free_ports(2)
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
        self.head_args = ["--head", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
                          "--dashboard-host=127.0.0.1",
                          '--resources={"train_driver": 1}', f"--temp-dir={self.root / 'head'}",
                          *common, *ray_node_ports(head=True)]
        self.worker_args = [f"--address=127.0.0.1:{self.gcs_port}", f"--temp-dir={self.root / 'node2'}",
                            *common, *ray_node_ports()]

    def ray(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], env=self.env, cwd=cwd or self.root, capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> None:
        for args in (self.head_args, self.worker_args):
            started = self.ray("start", *args, timeout=START_TIMEOUT_S)
            assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]

    def state(self, *args: str) -> list[dict]:
        """`ray list ...` through the State API (the dashboard), as JSON."""
        listed = self.ray("list", *args, "--address", self.dashboard, "--format", "json", "--limit", "10000")
        assert listed.returncode == 0, listed.stderr[-2000:]
        return json.loads(listed.stdout)

    def _processes(self) -> list[psutil.Process]:
        """Every process of the two nodes: they all name, run in, or write under ``root``."""
        root = str(self.root)
        found = []
        for proc in psutil.process_iter():
            try:
                if (any(root in arg for arg in proc.cmdline()) or proc.cwd().startswith(root)
                        or any(f.path.startswith(root) for f in proc.open_files())):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def stop(self) -> None:
        processes = self._processes()
        for proc in processes:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(processes, timeout=15)
        for proc in alive:  # Ray's agents can ignore SIGTERM once their raylet is gone
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)
        leftover = self._processes()
        shutil.rmtree(self.root, ignore_errors=True)
        assert not leftover, f"Ray processes still running: {[p.pid for p in leftover]}"


@pytest.fixture(scope="module")
def nodes():
    cluster = TwoRayNodes()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_two_nodes_joined_with_token_auth(nodes):
    alive = [n for n in nodes.state("nodes") if n["state"] == "ALIVE"]
    assert len(alive) == 2
    assert [n["resources_total"].get("train_driver") for n in alive if n["is_head_node"]] == [1.0]
    with pytest.raises(urllib.error.HTTPError) as refused:  # no token, no Jobs API
        urllib.request.urlopen(f"{nodes.dashboard}/api/jobs/", timeout=30)
    assert refused.value.code == 401


def test_rank_sweep_trains_each_ghn_on_both_nodes(nodes):
    storage = nodes.root / "shared" / "studies"
    job = nodes.ray(
        "job", "submit", "--address", nodes.dashboard, "--runtime-env", "cluster/runtime_env.yaml",
        "--submission-id", "rank-sweep-two-nodes", "--",
        "python", "studies/rank_sweep.py", "--preset", "smoke", "--train-workers", "2",
        "--storage", str(storage), "--name", "two-nodes",
        cwd=ROOT, timeout=STUDY_TIMEOUT_S)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]

    study = storage / "two-nodes"
    record = json.loads((study / "study.json").read_text())
    assert record["train_workers"] == 2 and record["finished_at"]
    table = pd.read_parquet(study / "trials.parquet")
    assert sorted(table["ghn_training.ghn.rank"]) == [2, 8]  # the smoke grid, both trials
    assert (table["status"] == "COMPLETE").all(), table["error"].tolist()
    assert table["best"].notna().all()

    node_ids = {n["node_id"] for n in nodes.state("nodes")}
    workers = nodes.state("actors", "--filter", "class_name=RayTrainWorker", "--detail")
    per_node = collections.Counter(w["node_id"] for w in workers)
    # Two GHN trainings, each with one worker on each of the two nodes.
    assert set(per_node) == node_ids and len(node_ids) == 2
    assert sorted(per_node.values()) == [len(table), len(table)]
