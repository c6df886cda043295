"""Ray Train storage on a cluster of two nodes (two raylets on this machine, which share its
file system as NFS clients would): a path both nodes see passes the check, each node is probed."""

import pytest

from logah.distributed import check_storage_shared
from ray_start import start_ray_retrying

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    import ray
    from ray.cluster_utils import Cluster

    made = []

    def start():
        made.append(Cluster(initialize_head=True, head_node_args={"num_cpus": 1}))
        made[-1].add_node(num_cpus=1)
        return made[-1]

    def undo():
        if made:
            made.pop().shutdown()

    cluster = start_ray_retrying(start, undo)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.wait_for_nodes()
    yield ray
    ray.shutdown()
    cluster.shutdown()


def test_a_path_every_node_sees_is_accepted(two_nodes, tmp_path):
    assert sum(1 for n in two_nodes.nodes() if n["Alive"]) == 2
    check_storage_shared(str(tmp_path / "storage"))
    assert list((tmp_path / "storage").iterdir()) == []      # the probe's marker is gone
