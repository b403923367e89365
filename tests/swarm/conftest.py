"""A three-node Docker swarm (Docker-in-Docker nodes on this machine, cluster.py) with the stack's images on every
node, the model cache and the checkout at their host paths on every node (as `make model` and a clone would leave them
on each real node), and the manager's port 8080 on a 127.0.0.1 port of the host. The host's own engine joins no swarm.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cluster import Cluster, swarm_cluster
from helpers import REPO, build_stack_images, free_port

ENCODER_IMAGE = 'sentence-encoder:cpu'
GATEWAY_IMAGE = 'sentence-gateway:3.33.1'
TOOLS_IMAGE = 'sentence-tools:cpu'


@pytest.fixture(scope='session')
def images_built() -> None:
    build_stack_images()


@pytest.fixture(scope='module')
def http_port() -> int:
    return free_port()


@contextmanager
def nodes(name: str, tmp_path_factory, http_port: int, workers: int, form_swarm: bool) -> Iterator[Cluster]:
    model_cache = Path(os.environ['HF_HOME'])  # filled by tests/conftest.py, as `make model` fills one
    model_cache.chmod(0o755)
    with swarm_cluster(
        f'sentence-swarm-test-{name}-{os.getpid()}',
        socket_dir=tmp_path_factory.mktemp(f'{name}-engine'),
        workers=workers,
        images=(ENCODER_IMAGE,),
        manager_images=(GATEWAY_IMAGE, TOOLS_IMAGE),  # the gateway runs on a manager; `make model` runs there
        mounts={str(model_cache): str(model_cache), str(REPO): str(REPO)},
        published={8080: http_port},
        form_swarm=form_swarm,
    ) as running:
        yield running


@pytest.fixture(scope='module')
def cluster(images_built, http_port, tmp_path_factory) -> Iterator[Cluster]:
    """A manager and two workers, already a swarm."""
    with nodes('three', tmp_path_factory, http_port, workers=2, form_swarm=True) as running:
        yield running


@pytest.fixture(scope='module')
def lone_engine(images_built, http_port, tmp_path_factory) -> Iterator[Cluster]:
    """One engine in no swarm: a host where `make swarm-up` runs for the first time."""
    with nodes('one', tmp_path_factory, http_port, workers=0, form_swarm=False) as running:
        yield running
