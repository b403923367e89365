"""Which device, dtype and inference backend the encoder runs on: checked once, at start-up, with one clear line when
the request cannot be met (a GPU that is not there, half precision on a CPU, OpenVINO on CUDA).

Needs only torch: the GPU benchmark (scripts/bench_gpu.py) imports it on machines without jina.
"""

import torch

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
# Inference engines: sentence-transformers' own backends. OpenVINO runs the same model about 3x faster on x86 CPUs
# (docs/benchmarks.md) from an IR that `make model` writes into the model's files; torch is what CUDA runs.
BACKENDS = ('auto', 'torch', 'openvino')


class StartupError(RuntimeError):
    """The executor cannot serve as configured. The message is one line saying what is wrong and what to do."""


def resolve_device(requested: str) -> str:
    """Turn `auto` / `cpu` / `cuda` / `cuda:N` into a torch device that exists on this host, or fail clearly."""
    requested = (requested or 'auto').strip().lower()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == 'auto':
        return 'cuda' if gpus else 'cpu'
    if requested == 'cpu':
        return 'cpu'
    if requested == 'cuda' or requested.startswith('cuda:'):
        if gpus == 0:
            raise StartupError(
                f"device='{requested}' was asked for but torch {torch.__version__} sees no CUDA GPU "
                f'(CUDA build: {torch.version.cuda or "none, this is a CPU-only torch"}). '
                "Use device='cpu' or 'auto', or run on a host with an NVIDIA GPU and driver "
                '(with Docker: nvidia-container-toolkit and `make up-gpu`).'
            )
        index = requested.partition(':')[2]
        if index and (not index.isdigit() or int(index) >= gpus):
            raise StartupError(
                f"device='{requested}' does not exist: torch sees {gpus} CUDA GPU(s), cuda:0 to cuda:{gpus - 1}. "
                "Use one of those, or 'cuda' for the first."
            )
        return requested
    raise StartupError(f"device='{requested}' is not one of 'auto', 'cpu', 'cuda', 'cuda:N'.")


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise StartupError(f"dtype='{dtype}' is not one of {', '.join(DTYPES)}.")
    if dtype != 'float32' and not device.startswith('cuda'):
        # Half precision on CPU is slower than float32 and some kernels lack it: refuse rather than surprise.
        raise StartupError(f"dtype='{dtype}' needs a CUDA device (device resolved to '{device}'); use dtype='float32'.")
    return DTYPES[dtype]


def resolve_backend(requested: str, device: str) -> str:
    """`auto` is OpenVINO on the CPU and torch on CUDA; OpenVINO cannot drive an NVIDIA GPU."""
    requested = (requested or 'auto').strip().lower()
    if requested not in BACKENDS:
        raise StartupError(f"backend='{requested}' is not one of {', '.join(BACKENDS)}.")
    on_cuda = device.startswith('cuda')
    if requested == 'auto':
        return 'torch' if on_cuda else 'openvino'
    if requested == 'openvino' and on_cuda:
        raise StartupError(
            f"backend='openvino' runs on the CPU only (OpenVINO has no NVIDIA GPU support), and device resolved to "
            f"'{device}'. Use backend='torch' (or 'auto') with a CUDA device, or device='cpu' for OpenVINO."
        )
    return requested
