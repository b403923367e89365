"""A host with Docker and nothing else: `make up` in a fresh copy of the checkout, with no Python on PATH and an empty
model cache, fills the cache and writes the OpenVINO IR in the tools image, brings the stack up, and the README's curl
returns the model's embedding. These machines reach no image registry, so the images are built first, with Python (the
images_built fixture): `make up` must then find them current and use no host Python at all."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from compose_stack import REPO, Stack, stack_env
from helpers import assert_same_embeddings
from test_compose_stack import curl_encode

pytestmark = pytest.mark.e2e

# What a Docker-only host has on PATH besides coreutils (added from dpkg's list of the package's programs).
HOST_PROGRAMS = ('docker', 'make', 'bash', 'sh', 'grep', 'sed', 'awk', 'curl')


def docker_only_path(directory: Path) -> str:
    """A PATH of one directory holding links to docker, make, a shell, coreutils, grep, sed, awk and curl."""
    directory.mkdir()
    listed = subprocess.run(['dpkg', '-L', 'coreutils'], capture_output=True, text=True, check=True).stdout.split()
    coreutils = {Path(path).name for path in listed if '/bin/' in path}
    for name in sorted(coreutils | set(HOST_PROGRAMS)):
        if found := shutil.which(name):
            (directory / name).symlink_to(found)
    assert not any(shutil.which(python, path=str(directory)) for python in ('python', 'python3', 'python3.11'))
    return str(directory)


def fresh_copy(target: Path) -> Path:
    """The checkout as a fresh clone has it: tracked and new files, nothing git ignores (.venv, .build)."""
    listed = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split('\0')  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_make_up_with_only_docker_on_the_host(images_built, tmp_path, reference_model):
    checkout = fresh_copy(tmp_path / 'checkout')
    cache = tmp_path / 'model-cache'  # does not exist yet: `make model` makes it, as the host user
    settings = stack_env(cache, COMPOSE_PROJECT_NAME=f'sentence-encoder-test-docker-only-{os.getpid()}')
    host_env = {
        'PATH': docker_only_path(tmp_path / 'bin'),
        'HOME': os.environ.get('HOME', '/root'),
        **settings,
    }
    stack = Stack(project=settings['COMPOSE_PROJECT_NAME'], env_overrides=settings)  # only for the clean-up
    try:
        up = subprocess.run(['make', 'up'], cwd=checkout, env=host_env, capture_output=True, text=True, timeout=900)
        output = up.stdout + up.stderr
        assert up.returncode == 0, output[-5000:]
        assert output.count('is current') == 3, f'make up rebuilt an image (or skipped the check): {output[-3000:]}'
        assert 'wheelhouse' not in output, output[-3000:]
        assert 'wrote the OpenVINO IR' in output, output[-3000:]

        reply = curl_encode(int(settings['HTTP_PORT']), '{"data":[{"text":"hello world"}]}')
        embedding = np.array(reply['data'][0]['embedding'])
        assert_same_embeddings([embedding], reference_model.encode(['hello world']))

        down = subprocess.run(['make', 'down'], cwd=checkout, env=host_env, capture_output=True, text=True)
        assert down.returncode == 0, down.stdout + down.stderr
    finally:
        stack.down()

    # The encoder (uid 1000) can read everything `make model` wrote, and it all belongs to the host user.
    written = [cache, *cache.rglob('*')]
    assert any(path.name == 'openvino_model.xml' for path in written)
    for path in written:
        info = path.lstat()
        assert info.st_uid == os.getuid(), f'{path} belongs to uid {info.st_uid}, not the host user'
        if stat.S_ISDIR(info.st_mode):
            assert info.st_mode & 0o005 == 0o005, f'{path} is not listable by others: {oct(info.st_mode)}'
        elif stat.S_ISREG(info.st_mode):
            assert info.st_mode & 0o004, f'{path} is not readable by others: {oct(info.st_mode)}'
    shutil.rmtree(cache)  # and the host user can delete it
