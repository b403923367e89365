"""A model cache that is empty, unreadable, corrupt or on a full disk: `make up` fails fast with one line that names
the cause and the fix, the encoder's log says the same, and the gateway never starts (no crash loop hides the cause)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from compose_stack import Stack, fill_model_cache, stack_env

pytestmark = pytest.mark.e2e


def assert_fails_fast_with(cache: Path, *phrases: str, **env: str) -> None:
    broken = Stack(project=f'sentence-encoder-test-cache-{os.getpid()}', env_overrides=stack_env(cache, **env))
    try:
        result = broken.up(wait_timeout=300)
        assert result.returncode != 0, 'a stack without a usable model must not report healthy'
        # Fast means: up.sh saw the encoder exit and said so, rather than waiting out WAIT_TIMEOUT (no wall-clock
        # bound, which a busy machine can break).
        assert 'encoder failed to start' in result.stderr and 'WAIT_TIMEOUT' not in result.stderr, result.stderr[-3000:]
        # up.sh (what `make up` runs) puts the executor's one-line reason first in what it prints.
        reason = next((line for line in result.stderr.splitlines() if 'SentenceEncoder cannot start:' in line), '')
        assert all(phrase in reason for phrase in phrases), result.stderr[-3000:]
        assert 'SentenceEncoder cannot start:' in broken.logs('encoder')
        assert broken.container_state('gateway')['Status'] != 'running', 'the gateway must wait for a healthy encoder'
    finally:
        broken.down()


def copy_of(filled_model_cache: Path, tmp_path: Path) -> Path:
    cache = tmp_path / 'cache'
    shutil.copytree(filled_model_cache, cache, symlinks=True)
    cache.chmod(0o755)
    return cache


def test_an_empty_cache_names_make_model(images_built, tmp_path):
    empty_cache = tmp_path / 'empty-cache'
    empty_cache.mkdir()
    empty_cache.chmod(0o755)
    assert_fails_fast_with(empty_cache, 'could not be loaded from the Hugging Face cache', 'make model')


def test_an_unreadable_cache_names_the_permission_and_chmod(images_built, filled_model_cache, tmp_path):
    cache = copy_of(filled_model_cache, tmp_path)
    (cache / 'hub').chmod(0o700)  # root's, as a cache filled by `sudo` would be; the encoder runs as uid 1000
    assert_fails_fast_with(cache, 'is not readable by this user (uid 1000)', 'chmod -R a+rX')


@pytest.mark.parametrize(
    ('backend', 'weights_file'), [('openvino', 'openvino_model.bin'), ('torch', 'model.safetensors')]
)
def test_truncated_weights_name_the_corrupt_model_and_the_fix(
    images_built, filled_model_cache, tmp_path, backend, weights_file
):
    cache = copy_of(filled_model_cache, tmp_path)
    weights = next(cache.rglob(weights_file))  # the file this backend reads its weights from
    weights.write_bytes(weights.read_bytes()[: 2**20])  # a download or an export cut short
    assert_fails_fast_with(cache, 'is incomplete or corrupt', 'make model', ENCODER_BACKEND=backend)


def test_a_cache_without_the_openvino_ir_names_make_model(images_built, filled_model_cache, tmp_path):
    cache = copy_of(filled_model_cache, tmp_path)
    shutil.rmtree(next(cache.rglob('openvino')))  # a cache filled by an older `make model`
    assert_fails_fast_with(cache, 'has no OpenVINO IR', 'make model')


@pytest.fixture
def small_tmpfs(tmp_path) -> Path:
    """A 20 MB disk for the cache (the model needs 87 MB): mounting needs root, as .ci/run and Docker do."""
    if os.geteuid() != 0:
        pytest.skip('mounting a tmpfs needs root (.ci/run runs as root)')
    disk = tmp_path / 'small-disk'
    disk.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=20m,mode=755', 'tmpfs', str(disk)], check=True)
    yield disk
    subprocess.run(['umount', str(disk)], check=False)


def test_a_full_disk_fails_make_model_cleanly_and_the_encoder_says_not_cached(images_built, small_tmpfs):
    filling = fill_model_cache(small_tmpfs)  # in the tools image, as `make model` runs it
    assert filling.returncode == 1, filling.stderr
    assert 'No space left on device' in filling.stderr and 'MODEL_CACHE_DIR' in filling.stderr, filling.stderr
    assert 'Traceback' not in filling.stderr
    assert not list(small_tmpfs.rglob('model.safetensors')), 'a cut-short copy must not be left where a model goes'
    assert_fails_fast_with(small_tmpfs, 'not cached', 'make model')


def test_make_model_on_a_filled_cache_mounted_read_only_changes_nothing_and_succeeds(filled_model_cache):
    """The swarm's nodes and Kubernetes' restarted pods run the filler over a cache that may be read-only: with the
    model there, it must succeed without writing (a marker's removal tried to write, and failed on EROFS)."""
    result = subprocess.run(
        ['docker', 'run', '--rm', '--network', 'none', '--user', '1000:1000', '--read-only', '--tmpfs', '/tmp',
         '-v', f'{filled_model_cache}:/cache:ro', 'sentence-tools:cpu', '/app/fill_model_cache.py',
         '--cache-dir', '/cache/hub', '--offline'],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'is already in' in result.stdout
