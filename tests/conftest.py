"""Shared test set-up: a real model in a private Hugging Face cache, offline, and the executor importable.

The cache is filled by the same script `make model` runs, so the tests also prove that a model name resolves
offline from a cache laid out that way. It is set up before anything imports huggingface_hub, which reads its
cache location once, at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = 'sentence-transformers/all-MiniLM-L6-v2'

# TEST_HF_HOME: a cache this file filled before, reused as it is (scripts/mutants.py starts pytest once per mutant,
# and filling costs seconds each time). Otherwise a new one, filled now.
_REUSED_HF_HOME = os.environ.get('TEST_HF_HOME')
_TEST_HF_HOME = Path(_REUSED_HF_HOME or tempfile.mkdtemp(prefix='test-hf-home-'))
os.environ['HF_HOME'] = str(_TEST_HF_HOME)
os.environ['HF_HUB_CACHE'] = str(_TEST_HF_HOME / 'hub')
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('JINA_HIDE_SURVEY', '1')
if not _REUSED_HF_HOME:
    subprocess.run(
        [sys.executable, str(REPO / 'scripts' / 'fill_model_cache.py'), '--offline'],
        check=True,
        stdout=subprocess.DEVNULL,
    )
sys.path.insert(0, str(REPO / 'executor'))
sys.path.insert(0, str(REPO / 'tests'))


@pytest.fixture(scope='session')
def reference_model():
    """The in-process sentence-transformers model every served embedding is compared with."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(MODEL_NAME, device='cpu')
