"""Assertions shared by the test tiers."""

from __future__ import annotations

import socket
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cosine_rows(a, b):
    """Row-wise cosine similarity of two (n, d) arrays."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for servers the tests start."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def build_stack_images() -> None:
    """The images `make build` builds (kept as they are when built from the same sources: seconds)."""
    import subprocess

    subprocess.run([str(REPO / 'scripts' / 'build-images.sh'), 'cpu', 'gateway', 'tools'], cwd=REPO, check=True)


def gateway_flow(http_port: int, **encoder):
    """A local Flow of the project's gateway (gRPC on a free port, HTTP on `http_port`, both on 127.0.0.1) and one
    encoder deployment, `Flow.add(**encoder)` (uses=..., uses_with=..., name=...)."""
    from jina import Flow

    gateway = {'uses': str(REPO / 'gateway' / 'config.yml'), 'protocol': ['grpc', 'http'], 'host': '127.0.0.1'}
    return Flow().config_gateway(**gateway, port=[free_port(), http_port]).add(**encoder)
