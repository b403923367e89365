"""Drive a compose project of this repository for the tests: up/down/logs/exec on free 127.0.0.1 ports.

Each stack here runs as its own compose project on free ports, with its own model cache directory, so the tests
neither collide with a stack someone has up (`make up`) nor depend on the host's ~/.cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
from helpers import free_port

REPO = Path(__file__).resolve().parents[2]


# The stack with a key (tests/e2e/conftest.py's keyed_stack): its key, and its small gRPC message limit.
KEYED_STACK_API_KEY = 'e2e-test-key-not-a-secret-0123456789'
KEYED_STACK_MAX_GRPC_MESSAGE = 64 * 1024


def docker_available() -> bool:
    return (
        shutil.which('docker') is not None and subprocess.run(['docker', 'info'], capture_output=True).returncode == 0
    )


@dataclass
class Stack:
    """One compose project of compose.yml (and optional overlays), configured through the environment."""

    project: str
    env_overrides: dict[str, str]
    files: tuple[str, ...] = ('compose.yml',)
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = {**os.environ, 'COMPOSE_PROJECT_NAME': self.project, **self.env_overrides}

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        files = [arg for name in self.files for arg in ('-f', str(REPO / name))]
        return subprocess.run(
            ['docker', 'compose', '-p', self.project, *files, *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def up(self, wait_timeout: int = 300) -> subprocess.CompletedProcess:
        """Start it the way `make up` does (scripts/up.sh): returns once healthy, or fails fast with the reason."""
        variant = 'gpu' if 'compose.gpu.yml' in self.files else 'cpu'
        return subprocess.run(
            [str(REPO / 'scripts' / 'up.sh'), variant],
            env={**self.env, 'WAIT_TIMEOUT': str(wait_timeout)},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=wait_timeout + 60,
        )

    def logs(self, service: str = '') -> str:
        result = self.compose('logs', '--no-color', *([service] if service else []), check=False)
        return result.stdout + result.stderr

    def down(self) -> None:
        self.compose('down', '-v', '--remove-orphans', '-t', '10', check=False)

    def container(self, service: str):
        """The service's (first) container, through the docker SDK."""
        return docker.from_env().containers.get(self.compose('ps', '-a', '-q', service).stdout.split()[0])

    def container_state(self, service: str) -> dict:
        return self.container(service).attrs['State']

    @property
    def http_port(self) -> int:
        return int(self.env_overrides['HTTP_PORT'])

    @property
    def grpc_port(self) -> int:
        return int(self.env_overrides['GRPC_PORT'])


def fill_model_cache(cache: Path) -> subprocess.CompletedProcess:
    """Fill `cache` (a MODEL_CACHE_DIR) as `make model` does: fill_model_cache.py in the tools image, offline."""
    return subprocess.run(
        [str(REPO / 'scripts' / 'in-tools.sh'), 'scripts/fill_model_cache.py', '--offline'],
        env={**os.environ, 'MODEL_CACHE_DIR': str(cache)},
        capture_output=True,
        text=True,
    )


def stack_env(model_cache_dir: Path, **extra: str) -> dict[str, str]:
    return {
        'HTTP_PORT': str(free_port()),
        'GRPC_PORT': str(free_port()),
        'GATEWAY_METRICS_PORT': str(free_port()),
        'ENCODER_METRICS_PORT': str(free_port()),
        'MODEL_CACHE_DIR': str(model_cache_dir),
        **extra,
    }


@contextmanager
def own_stack(
    name: str, model_cache_dir: Path, files: tuple[str, ...] = ('compose.yml',), **extra: str
) -> Iterator[Stack]:
    """A stack of the test's own, up and healthy (for tests that stop or break it), removed at the end."""
    stack = Stack(
        project=f'sentence-encoder-test-{name}-{os.getpid()}',
        env_overrides=stack_env(model_cache_dir, **extra),
        files=files,
    )
    try:
        result = stack.up()
        if result.returncode != 0:
            pytest.fail(f'stack did not become healthy:\n{result.stderr}\n{stack.logs()[-5000:]}')
        yield stack
    finally:
        stack.down()
