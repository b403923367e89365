"""Assertions shared by the test tiers."""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cosine_rows(a, b):
    """Row-wise cosine similarity of two (n, d) arrays."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@dataclass(frozen=True)
class Tolerance:
    """How far a served embedding may be from the in-process reference (torch, float32): per element, and the norm's
    relative difference (which catches a vector scaled by a constant, which a cosine cannot see)."""

    name: str
    element: float
    norm: float


# float32 (torch, or OpenVINO where the CPU has no bf16): the same arithmetic in another order and other padding.
# Measured: OpenVINO vs torch at most 1.9e-7 per element over 67 texts (AMD EPYC, 2026-12-02).
FLOAT32 = Tolerance('float32', element=1e-5, norm=1e-5)
# bfloat16: OpenVINO's default precision where the CPU has AMX (Intel Xeon) or AVX512_BF16 (AMD EPYC Zen 4).
# Measured against torch float32: OpenVINO's bf16 default at most 1.5e-3 per element and 2.4e-7 in norm over 203
# texts, cosine >= 0.99996 (AMD EPYC with avx512_bf16, 2026-12-02); torch run wholly in bfloat16 at most 3.8e-3 per
# element over 207 texts, cosine >= 0.99991 (AMD EPYC). A vector scaled by 0.5% or more fails the norm bound.
BFLOAT16 = Tolerance('bfloat16', element=2e-2, norm=5e-3)


@functools.cache
def served_tolerance(backend: str = 'openvino') -> Tolerance:
    """The tolerance for what the encoder computes on this machine: torch runs float32 on the CPU; OpenVINO the
    precision its CPU plugin picks here (the images pin the same OpenVINO as the test environment), unless
    OPENVINO_INFERENCE_PRECISION sets it."""
    if backend == 'torch':
        return FLOAT32
    precision = os.environ.get('OPENVINO_INFERENCE_PRECISION', '').strip()
    if not precision:
        import openvino

        precision = openvino.Core().get_property('CPU', 'INFERENCE_PRECISION_HINT').get_type_name()  # 'bf16', 'f32'
    # Zen 4 EPYCs (avx512_bf16) and Xeons with AMX get bf16 by default.
    return BFLOAT16 if precision.lower() in ('bf16', 'bfloat16') else FLOAT32


def embedding_mismatch(got, expected, tolerance: Tolerance | None = None) -> str:
    """'' when every row of `got` equals the same row of `expected`, element by element and in norm, within
    `tolerance` (default: what the OpenVINO encoder computes on this machine), and the shapes match (no row missing);
    else what differs."""
    import numpy as np

    tolerance = tolerance or served_tolerance()
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        return f'shape {got.shape}, expected {expected.shape}'
    if not np.isfinite(got).all():
        return f'non-finite values in rows {np.flatnonzero(~np.isfinite(got).all(axis=1))[:10].tolist()}'
    element_error = np.abs(got - expected).max(axis=1)
    if (off := np.flatnonzero(element_error > tolerance.element)).size:
        return (
            f'{off.size} row(s) differ from the reference by more than {tolerance.element:g} per element '
            f'({tolerance.name}): rows {off[:10].tolist()}, worst {element_error.max():.3g}'
        )
    norm_error = np.abs(np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1) - 1)
    if (off := np.flatnonzero(norm_error > tolerance.norm)).size:
        return (
            f'{off.size} row(s) have a norm off by more than {tolerance.norm:g} ({tolerance.name}): '
            f'rows {off[:10].tolist()}, worst {norm_error.max():.3g}'
        )
    return ''


def assert_same_embeddings(got, expected, tolerance: Tolerance | None = None) -> None:
    """See `embedding_mismatch`."""
    problem = embedding_mismatch(got, expected, tolerance)
    assert not problem, problem


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for servers the tests start."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def build_stack_images() -> None:
    """The images `make build` builds (kept as they are when built from the same sources: seconds)."""
    import subprocess

    subprocess.run([str(REPO / 'scripts' / 'build-images.sh'), 'cpu', 'gateway', 'tools'], cwd=REPO, check=True)


def gateway_flow(http_port: int, metrics_port: int | None = None, **encoder):
    """A local Flow of the project's gateway (gRPC on a free port, HTTP on `http_port`, both on 127.0.0.1; its
    Prometheus metrics on `metrics_port` if given) and one encoder deployment, `Flow.add(**encoder)` (uses=...,
    uses_with=..., name=...)."""
    from jina import Flow

    gateway = {'uses': str(REPO / 'gateway' / 'config.yml'), 'protocol': ['grpc', 'http'], 'host': '127.0.0.1'}
    if metrics_port:
        gateway |= {'monitoring': True, 'port_monitoring': metrics_port}
    return Flow().config_gateway(**gateway, port=[free_port(), http_port]).add(**encoder)


def metric_value(exposition: str, name: str) -> float:
    """The value of a Prometheus sample in a /metrics page (summed over its label sets); 0 if absent."""
    total = 0.0
    for line in exposition.splitlines():
        sample, _, value = line.rpartition(' ')
        if sample == name or sample.startswith(name + '{'):
            total += float(value)
    return total


# A stand-in for the NVIDIA driver's library (libcuda.so.1), as nvidia-container-toolkit would mount it:
# cuDriverGetVersion answers FAKE_CUDA (12020 is R535's CUDA 12.2), and initialising fails as on a driver too old for
# the CUDA runtime. Used by tests/unit/test_devices.py and tests/e2e/test_gpu_image.py.
FAKE_LIBCUDA = r"""
#include <stdlib.h>
int cuDriverGetVersion(int *version) { *version = atoi(getenv("FAKE_CUDA")); return 0; }
int cuInit(unsigned int flags) { return 35; }  /* CUDA_ERROR_INSUFFICIENT_DRIVER */
"""


def compile_fake_libcuda(directory: Path) -> Path:
    """`directory`, holding libcuda.so.1 compiled from FAKE_LIBCUDA with the host's C compiler (`cc`)."""
    import subprocess

    directory.chmod(0o755)  # the e2e test mounts it into a container whose user is not root
    (directory / 'libcuda.c').write_text(FAKE_LIBCUDA)
    subprocess.run(
        ['cc', '-shared', '-fPIC', '-o', str(directory / 'libcuda.so.1'), str(directory / 'libcuda.c')], check=True
    )
    return directory
