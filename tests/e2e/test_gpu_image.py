"""The two GPU images, CUDA 13 (`sentence-encoder:gpu`) and CUDA 12 (`sentence-encoder:gpu-cu12`), built here the
offline way (scripts/build-images.sh: a wheelhouse served on 127.0.0.1) and checked without a GPU:

- torch's CUDA major is the one the image is named for, `pip check` is clean, OpenVINO is left out;
- the image encodes on the CPU when told (device=cpu), equal to the model in-process;
- asked for a GPU on a host whose NVIDIA driver is too old for its CUDA, the encoder stops at start-up naming the
  image that driver runs. The driver is a stand-in libcuda.so.1 (compiled here, mounted into the container) answering
  cuDriverGetVersion as an R535 driver does: the image's own torch refuses it as it would refuse the real one;
- the GPU architectures each torch has kernels for are those `make up-gpu`'s choice assumes;
- compose's `build:` section under CUDA=12|13 is the same build as make's (every step the cached one) and names it so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from compose_stack import REPO
from helpers import FLOAT32, assert_same_embeddings, compile_fake_libcuda

pytestmark = [pytest.mark.e2e, pytest.mark.gpu_image]

IMAGES = {13: 'sentence-encoder:gpu', 12: 'sentence-encoder:gpu-cu12'}
# What `make up-gpu` assumes of each image (scripts/choose-gpu-image.sh): the oldest GPU it has kernels for.
CHOOSER = (REPO / 'scripts' / 'choose-gpu-image.sh').read_text()
OLDEST_GPU = {
    13: re.search(r'^CUDA13_COMPUTE=([\d.]+)', CHOOSER, re.M).group(1),
    12: re.search(r'^CUDA12_COMPUTE=([\d.]+)', CHOOSER, re.M).group(1),
}

PROBE = """
import importlib.util, json, subprocess, sys, torch
from docarray import DocList
from docarray.documents import TextDoc
from executor import SentenceEncoder
import devices
encoder = SentenceEncoder(device='cpu')
docs = encoder.encode(DocList[TextDoc]([TextDoc(text='hello world'), TextDoc(text='CUDA 12 or 13')]))
check = subprocess.run([sys.executable, '-m', 'pip', 'check'], capture_output=True, text=True)
print(json.dumps({
    'cuda_build': torch.version.cuda, 'archs': devices.compiled_archs(), 'backend': encoder.backend,
    'auto': SentenceEncoder(device='auto').device,
    'openvino': importlib.util.find_spec('openvino') is not None,
    'optimum': importlib.util.find_spec('optimum') is not None,
    'pip_check': [check.returncode, check.stdout.strip()],
    'embeddings': [doc.embedding.tolist() for doc in docs],
}))
"""


@pytest.fixture(scope='module', params=[13, 12], ids=['cuda13', 'cuda12'])
def gpu_image(request, images_built, gpu_wheels_fetched) -> tuple[int, str]:
    cuda = request.param
    environment = {**os.environ, 'CUDA': str(cuda)}
    environment.pop('ENCODER_GPU_IMAGE', None)  # the default tags: the ones make up-gpu and compose use
    subprocess.run([str(REPO / 'scripts' / 'build-images.sh'), 'gpu'], cwd=REPO, check=True, env=environment)
    return cuda, IMAGES[cuda]


@pytest.fixture(scope='module')
def fake_driver(tmp_path_factory) -> Path:
    return compile_fake_libcuda(tmp_path_factory.mktemp('fake-driver'))


def run_in(image: str, cache: Path, *args: str, env=None, mounts: tuple[str, ...] = (), entrypoint: str = 'jina'):
    """`docker run` of the image with the filled model cache, offline, as compose mounts it."""
    command = ['docker', 'run', '--rm', '--entrypoint', entrypoint, '-e', 'HF_HUB_OFFLINE=1',
               '-v', f'{cache}:/home/encoder/.cache/huggingface']  # fmt: skip
    for name, value in (env or {}).items():
        command += ['-e', f'{name}={value}']
    for mount in mounts:
        command += ['-v', mount]
    return subprocess.run([*command, image, *args], capture_output=True, text=True, timeout=300)


def test_the_image_has_its_cuda_a_clean_lock_no_openvino_and_encodes_on_cpu(
    gpu_image, filled_model_cache, reference_model
):
    cuda, image = gpu_image
    result = run_in(image, filled_model_cache, '-c', PROBE, entrypoint='python3')
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['cuda_build'].split('.')[0] == str(cuda)
    assert report['pip_check'] == [0, 'No broken requirements found.']
    assert (report['openvino'], report['optimum']) == (False, False)
    assert (report['auto'], report['backend']) == ('cpu', 'torch')  # auto without OpenVINO is torch
    oldest = min(int(arch[3:]) for arch in report['archs'] if arch.startswith('sm_'))
    assert f'{oldest // 10}.{oldest % 10}' == OLDEST_GPU[cuda], report['archs']
    embeddings = np.array(report['embeddings'])
    assert embeddings.shape == (2, 384)
    assert_same_embeddings(embeddings, reference_model.encode(['hello world', 'CUDA 12 or 13']), FLOAT32)


@pytest.mark.parametrize(
    ('driver_cuda', 'expected'),
    [
        (None, 'no NVIDIA driver is visible here (no libcuda.so.1): the container was not given a GPU'),
        ('12020', 'too old'),
        ('11040', 'too old'),
    ],
    ids=['no-driver', 'r535-driver', 'r470-driver'],
)
def test_a_driver_too_old_for_the_image_stops_the_start_naming_the_image_to_use(
    gpu_image, filled_model_cache, fake_driver, driver_cuda, expected
):
    """The encoder as compose starts it (jina executor, device=cuda), on a host whose driver is R535 (CUDA 12.2) or
    R470 (CUDA 11.4), or with no driver given to the container: it exits at start-up with one line saying why."""
    cuda, image = gpu_image
    env, mounts = {}, ()
    if driver_cuda is not None:
        env = {'FAKE_CUDA': driver_cuda, 'LD_LIBRARY_PATH': '/opt/fake-driver'}
        mounts = (f'{fake_driver}:/opt/fake-driver:ro',)
    result = run_in(
        image, filled_model_cache, 'executor', '--uses', 'config.yml', '--uses-with', '{"device": "cuda"}',
        env=env, mounts=mounts,
    )  # fmt: skip
    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if 'cannot start:' in line]
    assert lines, output[-3000:]
    line = lines[0]
    assert "device='cuda' was asked for but torch" in line and 'sees no CUDA GPU' in line
    if driver_cuda is None:
        assert expected in line
    elif driver_cuda == '12020' and cuda == 13:
        # The CUDA 13 image on R535: the CUDA 12 image is the one to use.
        assert (
            "the host's NVIDIA driver runs CUDA up to 12.2, too old for this image's CUDA 13.0 (it needs a driver "
            'R580 or newer). Use the image sentence-encoder:gpu-cu12 instead'
        ) in line
    elif driver_cuda == '12020':
        # The CUDA 12 image on R535 is the right image: the driver runs it, so "too old" is not what is wrong here.
        assert "the host's NVIDIA driver (CUDA 12.2) runs this image's CUDA 12.8, yet torch finds no GPU" in line
    else:
        assert "the host's NVIDIA driver runs CUDA up to 11.4, too old for this image's CUDA" in line
        assert 'upgrade the driver to 525.60.13 (R525) or newer (sentence-encoder:gpu-cu12)' in line


def test_compose_builds_the_image_its_cuda_names_as_make_does(gpu_image, tmp_path):
    """The GPU overlay's `build:` section (what `CUDA=12 docker compose -f compose.yml -f compose.gpu.yml up` runs on
    a host missing the image) is the same build as `make build-gpu`'s: with the base and wheel source make used, every
    step, the pip install included, is the cached one of the image built above, and the image holds that CUDA."""
    cuda, image = gpu_image
    base = subprocess.run(
        [str(REPO / 'scripts' / 'base-image.sh')], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    offline = base != 'python:3.11.14-slim-bookworm'  # as scripts/build-images.sh decides (OFFLINE=auto)
    tag = f'sentence-encoder:compose-test-cu{cuda}'
    environment = {
        **os.environ, 'DOCKER_BUILDKIT': '0', 'CUDA': str(cuda), 'BASE_IMAGE': base, 'ENCODER_GPU_IMAGE': tag,
        'WHEELHOUSE_URL': f'http://127.0.0.1:{os.environ.get("WHEELHOUSE_PORT", "3141")}/' if offline else '',
        'MODEL_CACHE_DIR': str(tmp_path),
    }  # fmt: skip
    try:
        built = subprocess.run(
            ['docker', 'compose', '-p', 'sentence-encoder-compose-build', '-f', 'compose.yml', '-f', 'compose.gpu.yml',
             'build', 'encoder'],
            cwd=REPO, env=environment, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        steps = re.split(r'^Step \d+/\d+ : ', built.stdout, flags=re.M)
        install = [step for step in steps if 'pip install' in step]
        assert len(install) == 1 and '---> Using cache' in install[0], built.stdout[-3000:]
        cuda_build = subprocess.run(
            ['docker', 'run', '--rm', '--entrypoint', 'python3', tag, '-c', 'import torch; print(torch.version.cuda)'],
            capture_output=True, text=True, timeout=120,
        ).stdout.strip()  # fmt: skip
        assert cuda_build.split('.')[0] == str(cuda)
    finally:
        subprocess.run(['docker', 'image', 'rm', '-f', tag], capture_output=True)
