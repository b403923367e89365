"""`make up-gpu`'s choice of GPU image from the host's NVIDIA driver (scripts/choose-gpu-image.sh).

A stand-in `nvidia-smi` on PATH answers the two queries the script makes (driver_version, compute_cap), as the real
one does: one line per GPU. What is under test is the mapping from driver and GPU to image, word for word.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHOOSE = REPO / 'scripts' / 'choose-gpu-image.sh'
NEEDS = (
    'the CUDA 13 image needs a driver R580 or newer, the CUDA 12 one 525.60.13 or newer '
    '(CUDA=12|13 chooses without reading the driver)'
)
# The tools the script and make use, and nothing else: a real nvidia-smi (a GPU host's /usr/bin) must not be found.
TOOLS = ('bash', 'sh', 'grep', 'sort', 'head', 'tr', 'printf', 'timeout', 'cat', 'dirname', 'make', 'env', 'echo')


def tools_only(tmp_path: Path) -> Path:
    """A PATH directory holding links to TOOLS only."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    return bin_dir


def choose(tmp_path: Path, driver: str | None, compute: str = '8.6', exit_code: int = 0, stderr: str = '', **env):
    """Run the chooser with a stand-in nvidia-smi (none when driver is None); return (rc, stdout, stderr)."""
    bin_dir = tools_only(tmp_path)
    if driver is not None:
        drivers = '\n'.join([driver] * len(compute.split()))
        caps = '\n'.join(compute.split())
        (bin_dir / 'nvidia-smi').write_text(
            '#!/bin/sh\n'
            f'[ {exit_code} = 0 ] || {{ echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA '
            f'driver."; exit {exit_code}; }}\n'
            f'echo "{stderr}" >&2\n'
            f'case "$*" in *driver_version*) printf "%s\\n" "{drivers}";; *compute_cap*) printf "%s\\n" "{caps}";; '
            'esac\n'
        )
        (bin_dir / 'nvidia-smi').chmod(0o755)
    environment = {'PATH': str(bin_dir), **env}
    done = subprocess.run(['bash', str(CHOOSE)], env=environment, capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout.strip(), done.stderr.strip()


@pytest.mark.parametrize(
    ('driver', 'cuda', 'said'),
    [
        ('525.60.13', '12', 'runs CUDA 12, not 13 (CUDA 13 needs R580 or newer): sentence-encoder:gpu-cu12'),
        ('535.183.01', '12', 'runs CUDA 12, not 13 (CUDA 13 needs R580 or newer): sentence-encoder:gpu-cu12'),
        ('550.54.15', '12', 'runs CUDA 12, not 13 (CUDA 13 needs R580 or newer): sentence-encoder:gpu-cu12'),
        ('570.195.03', '12', 'runs CUDA 12, not 13 (CUDA 13 needs R580 or newer): sentence-encoder:gpu-cu12'),
        ('575.64.05', '12', 'runs CUDA 12, not 13 (CUDA 13 needs R580 or newer): sentence-encoder:gpu-cu12'),
        ('580.65.06', '13', 'runs CUDA 13: sentence-encoder:gpu (CUDA=12 for the CUDA 12 image)'),
        ('590.44.01', '13', 'runs CUDA 13: sentence-encoder:gpu (CUDA=12 for the CUDA 12 image)'),
    ],
)
def test_each_driver_branch_gets_the_image_it_runs(tmp_path, driver, cuda, said):
    rc, out, err = choose(tmp_path, driver)
    assert (rc, out) == (0, cuda)
    assert err == f'[up-gpu] NVIDIA driver {driver} {said}'


@pytest.mark.parametrize('driver', ['470.256.02', '515.105.01', '525.60.12'])
def test_a_driver_too_old_for_both_images_is_refused_in_one_line(tmp_path, driver):
    rc, out, err = choose(tmp_path, driver)
    assert (rc, out) == (1, '')
    assert err == (
        f'make up-gpu: NVIDIA driver {driver} is too old for either GPU image: {NEEDS}. '
        'Upgrade the driver, or make up (CPU).'
    )


def test_no_driver_is_refused_naming_the_drivers_needed(tmp_path):
    rc, out, err = choose(tmp_path, None)
    assert (rc, out) == (1, '')
    assert err == (
        f'make up-gpu: no NVIDIA driver found (nvidia-smi is not on PATH): {NEEDS}. Without a GPU, make up (CPU).'
    )


def test_an_nvidia_smi_that_fails_is_refused_with_its_own_words(tmp_path):
    rc, out, err = choose(tmp_path, '580.65.06', exit_code=9)
    assert (rc, out) == (1, '')
    assert err == (
        "make up-gpu: nvidia-smi failed (NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
        f'driver.): is the NVIDIA driver loaded? {NEEDS}.'
    )


def test_warnings_on_stderr_do_not_hide_a_good_driver(tmp_path):
    rc, out, _ = choose(
        tmp_path, '580.65.06', stderr='WARNING: persistence mode is disabled on device 00000000:00:1E.0'
    )
    assert (rc, out) == (0, '13')


@pytest.mark.parametrize('answer', ['[N/A]', 'No devices were found', ''])
def test_no_readable_driver_version_is_refused_saying_what_nvidia_smi_said(tmp_path, answer):
    rc, out, err = choose(tmp_path, answer)
    assert (rc, out) == (1, '')
    assert err == (f"make up-gpu: nvidia-smi reported no GPU or no readable driver version ('{answer}'): {NEEDS}.")


def test_a_volta_gpu_gets_the_cuda_12_image_even_on_a_new_driver(tmp_path):
    """CUDA 13 dropped compute capability 7.0 (V100): the lowest GPU of the host decides."""
    rc, out, err = choose(tmp_path, '580.65.06', compute='8.0 7.0')
    assert (rc, out) == (0, '12')
    assert err == (
        "[up-gpu] NVIDIA driver 580.65.06 runs CUDA 12, not 13 (the GPU's compute capability 7.0 is below CUDA 13's "
        '7.5): sentence-encoder:gpu-cu12'
    )


def test_a_gpu_older_than_both_images_is_refused(tmp_path):
    rc, out, err = choose(tmp_path, '580.65.06', compute='6.1')
    assert (rc, out) == (1, '')
    assert err == (
        "make up-gpu: the GPU's compute capability 6.1 is below 7.0, the oldest either image's torch has kernels "
        'for. Use make up (CPU).'
    )


@pytest.mark.parametrize(('override', 'image'), [('12', 'sentence-encoder:gpu-cu12'), ('13', 'sentence-encoder:gpu')])
def test_cuda_overrides_the_driver(tmp_path, override, image):
    rc, out, err = choose(tmp_path, '470.256.02', CUDA=override)  # a driver that would be refused
    assert (rc, out) == (0, override)
    assert err == f"[up-gpu] CUDA={override} given: {image} (the host's driver is not read)"


@pytest.mark.parametrize(
    ('override', 'shown'),
    [
        ('11', '11'),
        ('12.8', '12.8'),
        ('cu12', 'cu12'),
        ('12\n13', '12?13'),
        ('9' * 5000, '9' * 20),
        ('x;rm -rf /', 'x?rm?-rf??'),
    ],
)
def test_an_unknown_cuda_override_is_refused_in_one_short_line(tmp_path, override, shown):
    rc, out, err = choose(tmp_path, '580.65.06', CUDA=override)
    assert (rc, out) == (1, '')
    assert err == (
        f'make up-gpu: CUDA={shown}: the GPU images are CUDA 12 and CUDA 13 (CUDA=12 or CUDA=13, or unset to read '
        'the driver)'
    )


def test_make_up_gpu_stops_on_the_choice_before_building_anything(tmp_path):
    """The refusal is the whole output of `make up-gpu` on a host without a driver: no build, no docker call."""
    bin_dir = tools_only(tmp_path)
    docker_calls = tmp_path / 'docker-calls'
    (bin_dir / 'docker').write_text(f'#!/bin/sh\necho "$*" >> {docker_calls}\n')  # `make engine` asks docker info
    (bin_dir / 'docker').chmod(0o755)
    environment = {**os.environ, 'PATH': str(bin_dir)}
    environment.pop('CUDA', None)
    environment.pop('MAKEFLAGS', None)
    done = subprocess.run(
        ['make', '--no-print-directory', 'up-gpu'], cwd=REPO, env=environment, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert f'make up-gpu: no NVIDIA driver found (nvidia-smi is not on PATH): {NEEDS}.' in done.stderr
    assert not docker_calls.exists() or 'build' not in docker_calls.read_text()
