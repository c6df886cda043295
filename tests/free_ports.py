"""Ports for the servers tests start (Ray nodes, PostgreSQL), picked free so that a test never
collides with another Ray or database on this machine — a study running beside the tests
holds Ray's fixed default ports (the dashboard agent's 52365, for one)."""

import socket


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct local ports nothing listens on (all bound at once, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def ray_node_ports(head: bool = False) -> list[str]:
    """``ray start`` options for the ports of one node that Ray would otherwise take from fixed
    defaults, each free (the Ray client server runs on the head only)."""
    names = ("node-manager", "object-manager", "metrics-export", "dashboard-agent-listen",
             "dashboard-agent-grpc", "runtime-env-agent") + (("ray-client-server",) if head else ())
    return [f"--{name}-port={port}" for name, port in zip(names, free_ports(len(names)))]
