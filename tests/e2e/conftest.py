"""Fixtures for the real compose stack: images built by `make build`'s script, a real Docker engine, 127.0.0.1 only."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from compose_stack import (
    KEYED_STACK_API_KEY,
    KEYED_STACK_MAX_GRPC_MESSAGE,
    Stack,
    docker_available,
    fill_model_cache,
    own_stack,
    stack_env,
)
from helpers import build_stack_images

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(session, config, items):
    """When the GPU image tests will run, their wheels (two CUDA stacks, about 3 GB each) download in the background
    while the CPU images build (CPU-bound; the download is network-bound): the offline build's wheelhouses are then
    filled by the time the GPU images build (scripts/wheelhouse.sh skips a filled one). OFFLINE=0 (an online build,
    which reads PyPI itself) skips it."""
    if os.environ.get('OFFLINE') == '0' or not any(item.get_closest_marker('gpu_image') for item in items):
        return
    import subprocess
    import tempfile

    log = tempfile.NamedTemporaryFile(prefix='gpu-wheels-', suffix='.log', delete=False)  # noqa: SIM115
    config.gpu_wheels = (
        subprocess.Popen(
            ['bash', '-c', 'scripts/wheelhouse.sh gpu-cu13 && scripts/wheelhouse.sh gpu-cu12'],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        ),
        log.name,
    )  # fmt: skip


@pytest.fixture(scope='session')
def gpu_wheels_fetched(request) -> None:
    """Waits for the background download above, if one was started; a failed one is printed and left to the build,
    which fills the wheelhouse itself (and fails there saying why)."""
    started = getattr(request.config, 'gpu_wheels', None)
    if started is None:
        return
    process, log = started
    if process.wait() != 0:
        print(f'the background GPU wheel download failed; the build retries it:\n{Path(log).read_text()[-2000:]}')


@pytest.fixture(scope='session')
def images_built() -> None:
    if not docker_available():
        pytest.fail('these tests need a running Docker engine with Compose v2: run `make engine` (or .ci/run)')
    build_stack_images()


@pytest.fixture(scope='session')
def filled_model_cache(images_built, tmp_path_factory) -> Path:
    """A host-side HF cache filled the way `make model` fills it (in the tools image), readable by the container's
    user."""
    cache = tmp_path_factory.mktemp('hf-cache-for-compose')
    cache.chmod(0o755)
    fill_model_cache(cache).check_returncode()
    return cache


@pytest.fixture(scope='session')
def stack(images_built, filled_model_cache) -> Iterator[Stack]:
    """The CPU stack, up and healthy; logs are printed if it fails to come up, and it is removed at the end."""
    running = Stack(project=f'sentence-encoder-test-{os.getpid()}', env_overrides=stack_env(filled_model_cache))
    try:
        started = time.monotonic()
        result = running.up()
        if result.returncode != 0:
            pytest.fail(f'stack did not become healthy:\n{result.stderr}\n{running.logs()[-5000:]}')
        print(f'stack healthy in {time.monotonic() - started:.0f} s')
        yield running
    finally:
        running.down()


@pytest.fixture(scope='session')
def keyed_stack(images_built, filled_model_cache, tmp_path_factory):
    """A stack with API_KEY given the documented way, a file (API_KEY_FILE) attached as a compose secret, a small
    MAX_GRPC_MESSAGE_BYTES and AUTO_TRUNCATE=false; shared by the key tests, the truncation policy's and the
    framework clients (whose texts are short)."""
    key_file = tmp_path_factory.mktemp('secrets') / 'api_key'
    key_file.write_text(KEYED_STACK_API_KEY + '\n')
    key_file.chmod(0o644)  # the gateway runs as uid 1000; the tests may run as root
    with own_stack(
        'api-key', filled_model_cache, API_KEY_FILE=str(key_file),
        MAX_GRPC_MESSAGE_BYTES=str(KEYED_STACK_MAX_GRPC_MESSAGE), AUTO_TRUNCATE='false',
    ) as stack:  # fmt: skip
        yield stack
