"""Which device, dtype and inference backend the encoder runs on: checked once, at start-up, with one clear line when
the request cannot be met (a GPU that is not there, half precision on a CPU, OpenVINO on CUDA).

Needs only torch: the GPU benchmark (scripts/bench_gpu.py) imports it on machines without jina.
"""

import ctypes
import importlib.util

import torch

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
# Inference engines: sentence-transformers' own backends. OpenVINO runs the same model about 3x faster on x86 CPUs
# (docs/benchmarks.md) from an IR that `make model` writes into the model's files; torch is what CUDA runs.
BACKENDS = ('auto', 'torch', 'openvino')


class StartupError(RuntimeError):
    """The executor cannot serve as configured. The message is one line saying what is wrong and what to do."""


# The GPU images by their CUDA major, and the oldest NVIDIA driver each runs on (CUDA's minor-version compatibility;
# executor/constraints-cuda*.txt, README "GPU"). `make up-gpu` makes the same choice from the host's nvidia-smi.
GPU_IMAGES = {12: 'sentence-encoder:gpu-cu12', 13: 'sentence-encoder:gpu'}
OLDEST_DRIVERS = {12: '525.60.13 (R525)', 13: 'R580'}


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA the NVIDIA driver visible here runs (cuDriverGetVersion: 12040 is 12.4), or None when there is
    no driver library (a container not given a GPU). Asks the driver itself, so it answers even where torch's CUDA
    runtime refused to start because the driver is too old for it."""
    try:
        libcuda = ctypes.CDLL('libcuda.so.1')
        version = ctypes.c_int(0)
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
            return None
    except (OSError, AttributeError):
        return None
    return version.value // 1000, version.value % 1000 // 10


def why_no_gpu(torch_cuda: str | None, driver_cuda: tuple[int, int] | None) -> str:
    """Why torch sees no GPU, and what to do, from torch's CUDA build and the driver's CUDA version."""
    if not torch_cuda:
        return 'this torch is a CPU-only build (the CPU image): run the GPU image, `make up-gpu`'
    if driver_cuda is None:
        return (
            f'torch is built for CUDA {torch_cuda}, but no NVIDIA driver is visible here (no libcuda.so.1): the '
            'container was not given a GPU. Install the NVIDIA driver and the NVIDIA Container Toolkit on the host and '
            'use `make up-gpu` (the GPU overlay reserves the GPU), or `docker run --gpus all`'
        )
    image_major = int(torch_cuda.split('.')[0])
    driver = f'{driver_cuda[0]}.{driver_cuda[1]}'
    if driver_cuda[0] < image_major:
        fits = GPU_IMAGES.get(driver_cuda[0])
        if fits is None:
            return (
                f"the host's NVIDIA driver runs CUDA up to {driver}, too old for this image's CUDA {torch_cuda} and "
                f'for every GPU image of this project: upgrade the driver to {OLDEST_DRIVERS[12]} or newer '
                f'({GPU_IMAGES[12]}), or to {OLDEST_DRIVERS[13]} ({GPU_IMAGES[13]})'
            )
        return (
            f"the host's NVIDIA driver runs CUDA up to {driver}, too old for this image's CUDA {torch_cuda} "
            f'(it needs a driver {OLDEST_DRIVERS[image_major]} or newer). Use the image {fits} instead '
            f'(`make up-gpu` picks it from the driver; CUDA={driver_cuda[0]} with docker compose), '
            f'or upgrade the driver to {OLDEST_DRIVERS[image_major]}'
        )
    return (
        f"the host's NVIDIA driver (CUDA {driver}) runs this image's CUDA {torch_cuda}, yet torch finds no GPU: check "
        '`nvidia-smi` inside the container and NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES'
    )


def runs_on(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether torch built for `arch_list` (['sm_75', 'sm_80', ..., 'compute_120']) has kernels for a GPU of this
    compute capability: machine code for the same major and a minor up to its own, or PTX for it or older."""
    major, minor = capability
    for arch in arch_list:
        kind, _, number = arch.partition('_')
        if not number.isdigit():
            continue
        arch_major, arch_minor = divmod(int(number), 10)
        if kind == 'sm' and arch_major == major and arch_minor <= minor:
            return True
        if kind == 'compute' and (arch_major, arch_minor) <= (major, minor):
            return True
    return False


def compiled_archs() -> list[str]:
    """The GPU architectures this torch has kernels for (torch.cuda.get_arch_list without needing a GPU); [] on CPU."""
    flags = getattr(torch._C, '_cuda_getArchFlags', lambda: None)()
    return flags.split() if flags else []


def check_gpu_runs_this_torch(index: int) -> None:
    """A GPU too old for this torch's kernels (a Volta with the CUDA 13 image) fails at start-up, not at the first
    request ("no kernel image is available for execution on the device")."""
    arch_list = compiled_archs()
    if not arch_list:
        return
    capability = torch.cuda.get_device_capability(index)
    if runs_on(capability, arch_list):
        return
    name = torch.cuda.get_device_name(index)
    cuda_major = int((torch.version.cuda or '0').split('.')[0])
    # The CUDA 12 image has kernels from compute capability 7.0 (scripts/choose-gpu-image.sh, CUDA12_COMPUTE).
    fits = cuda_major > 12 and capability >= (7, 0)
    instead = f' Use the image {GPU_IMAGES[12]} (CUDA=12) instead, or device=cpu.' if fits else ' Use device=cpu.'
    raise StartupError(
        f'cuda:{index} ({name}, compute capability {capability[0]}.{capability[1]}) is older than every GPU this '
        f'torch {torch.__version__} (CUDA {torch.version.cuda}) has kernels for ({", ".join(arch_list)}).{instead}'
    )


def resolve_device(requested: str) -> str:
    """Turn `auto` / `cpu` / `cuda` / `cuda:N` into a torch device that exists on this host, or fail clearly."""
    requested = (requested or 'auto').strip().lower()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == 'auto':
        if gpus:
            check_gpu_runs_this_torch(0)
        return 'cuda' if gpus else 'cpu'
    if requested == 'cpu':
        return 'cpu'
    if requested == 'cuda' or requested.startswith('cuda:'):
        if gpus == 0:
            reason = why_no_gpu(torch.version.cuda, driver_cuda_version())
            raise StartupError(
                f"device='{requested}' was asked for but torch {torch.__version__} sees no CUDA GPU: {reason}. "
                "Or use device='cpu' (ENCODER_DEVICE=cpu)."
            )
        index = requested.partition(':')[2]
        if index and (not index.isdigit() or int(index) >= gpus):
            raise StartupError(
                f"device='{requested}' does not exist: torch sees {gpus} CUDA GPU(s), cuda:0 to cuda:{gpus - 1}. "
                "Use one of those, or 'cuda' for the first."
            )
        check_gpu_runs_this_torch(int(index or 0))
        return requested
    raise StartupError(f"device='{requested}' is not one of 'auto', 'cpu', 'cuda', 'cuda:N'.")


def cpu_fallback_warning(requested: str, resolved: str) -> str | None:
    """`auto` on a CUDA torch (a GPU image) that found no GPU runs on the CPU, several times slower: a line for the
    log saying why, or None when that is not what happened."""
    if (requested or 'auto').strip().lower() != 'auto' or resolved != 'cpu' or not torch.version.cuda:
        return None
    reason = why_no_gpu(torch.version.cuda, driver_cuda_version())
    return f"device='auto' runs on the CPU, though this torch is built for CUDA {torch.version.cuda}: {reason}"


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise StartupError(f"dtype='{dtype}' is not one of {', '.join(DTYPES)}.")
    if dtype != 'float32' and not device.startswith('cuda'):
        # Half precision on CPU is slower than float32 and some kernels lack it: refuse rather than surprise.
        raise StartupError(f"dtype='{dtype}' needs a CUDA device (device resolved to '{device}'); use dtype='float32'.")
    return DTYPES[dtype]


def openvino_installed() -> bool:
    """The CPU image and the dev environment have OpenVINO; the GPU images leave it out (executor/Dockerfile)."""
    return importlib.util.find_spec('openvino') is not None and importlib.util.find_spec('optimum') is not None


def resolve_backend(requested: str, device: str, has_openvino: bool | None = None) -> str:
    """`auto` is OpenVINO on the CPU (where installed) and torch on CUDA; OpenVINO cannot drive an NVIDIA GPU."""
    requested = (requested or 'auto').strip().lower()
    if requested not in BACKENDS:
        raise StartupError(f"backend='{requested}' is not one of {', '.join(BACKENDS)}.")
    on_cuda = device.startswith('cuda')
    has_openvino = openvino_installed() if has_openvino is None else has_openvino
    if requested == 'auto':
        return 'openvino' if has_openvino and not on_cuda else 'torch'
    if requested == 'openvino' and not has_openvino:
        raise StartupError(
            "backend='openvino' is not in this image (the GPU images leave OpenVINO out: it has no NVIDIA GPU "
            "support). Use backend='torch' (ENCODER_BACKEND=torch), or the CPU image sentence-encoder:cpu (`make up`)."
        )
    if requested == 'openvino' and on_cuda:
        raise StartupError(
            f"backend='openvino' runs on the CPU only (OpenVINO has no NVIDIA GPU support), and device resolved to "
            f"'{device}'. Use backend='torch' (or 'auto') with a CUDA device, or device='cpu' for OpenVINO."
        )
    return requested
