"""The served model is all-MiniLM-L6-v2: its files match the published checksums (checked by `make model`), and the
in-process reference model reproduces a golden file of embeddings made from those files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import FLOAT32, REPO, assert_same_embeddings

FILL = [sys.executable, str(REPO / 'scripts' / 'fill_model_cache.py'), '--offline', '--no-openvino']
GOLDEN = REPO / 'tests' / 'golden' / 'all-MiniLM-L6-v2.json'


def test_the_reference_model_reproduces_the_golden_embeddings(reference_model):
    golden = json.loads(GOLDEN.read_text())
    got = reference_model.encode(golden['texts'], batch_size=1)
    assert_same_embeddings(got, np.array(golden['embeddings']), FLOAT32)


def test_make_model_refuses_files_that_are_not_the_published_ones(tmp_path: Path):
    cache = tmp_path / 'hub'
    subprocess.run([*FILL, '--cache-dir', str(cache)], check=True, capture_output=True, text=True)
    snapshot = next(cache.glob('models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*'))
    tokenizer = snapshot / 'tokenizer.json'
    tokenizer.chmod(0o644)
    tokenizer.write_text(tokenizer.read_text().replace('"[UNK]"', '"[UNKNOWN]"', 1))

    refused = subprocess.run([*FILL, '--cache-dir', str(cache)], capture_output=True, text=True)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and 'tokenizer.json' in lines[0] and 'not the published' in lines[0], refused.stderr
    assert 'make model' in lines[0]


def test_a_download_cut_short_is_filled_again_not_taken_as_cached(tmp_path: Path):
    """A hub download killed midway leaves its marker: the next run fills the model again (here from the packaged
    copy, offline) instead of taking a model without all its files as cached, and removes the marker."""
    cache = tmp_path / 'hub'
    subprocess.run([*FILL, '--cache-dir', str(cache)], check=True, capture_output=True, text=True)
    model = cache / 'models--sentence-transformers--all-MiniLM-L6-v2'
    snapshot = next(model.glob('snapshots/*'))
    (snapshot / 'model.safetensors').unlink()  # what a cut download may lack
    (model / '.fill_model_cache-downloading').touch()

    again = subprocess.run([*FILL, '--cache-dir', str(cache)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert 'copied the packaged' in again.stdout
    assert (snapshot / 'model.safetensors').is_file()
    assert not (model / '.fill_model_cache-downloading').exists()
    cached = subprocess.run([*FILL, '--cache-dir', str(cache)], capture_output=True, text=True)
    assert 'is already in' in cached.stdout
