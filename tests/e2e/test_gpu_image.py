"""The GPU image (CUDA torch) builds here, and without a GPU it still encodes when told device=cpu.

Run by `make test-gpu-image` (not `make test`: the build takes minutes). No GPU is needed: the same image that
`make up-gpu` runs is started with plain `docker run`, no device reservation.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from compose_stack import REPO
from helpers import FLOAT32, assert_same_embeddings

pytestmark = [pytest.mark.e2e, pytest.mark.gpu_image]

GPU_IMAGE = 'sentence-encoder:gpu'
PROBE = """
import json, torch
from docarray import DocList
from docarray.documents import TextDoc
from executor import SentenceEncoder, StartupError
try:
    SentenceEncoder(device='cuda')
    cuda_error = None
except StartupError as error:
    cuda_error = str(error)
encoder = SentenceEncoder(device='cpu', backend='torch')
docs = encoder.encode(DocList[TextDoc]([TextDoc(text='hello world')]))
print(json.dumps({'cuda_build': torch.version.cuda, 'auto': SentenceEncoder(device='auto').device,
                  'cuda_error': cuda_error, 'embedding': docs[0].embedding.tolist()}))
"""


@pytest.fixture(scope='module')
def gpu_image(images_built) -> str:
    subprocess.run([str(REPO / 'scripts' / 'build-images.sh'), 'gpu'], cwd=REPO, check=True)
    return GPU_IMAGE


def test_the_gpu_image_encodes_on_cpu_when_told(gpu_image, filled_model_cache, reference_model):
    result = subprocess.run(
        ['docker', 'run', '--rm', '--entrypoint', 'python3',
         '-v', f'{filled_model_cache}:/home/encoder/.cache/huggingface', '-e', 'HF_HUB_OFFLINE=1',
         gpu_image, '-c', PROBE],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['cuda_build'], 'the GPU image must carry the CUDA build of torch'
    assert report['auto'] == 'cpu'
    assert 'no CUDA GPU' in report['cuda_error']
    embedding = np.array(report['embedding'])
    assert embedding.shape == (384,)
    assert_same_embeddings([embedding], reference_model.encode(['hello world']), FLOAT32)  # torch on the CPU
