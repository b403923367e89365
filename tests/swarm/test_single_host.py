"""The README's swarm commands as written, on one engine that is in no swarm yet: `make swarm-up` refuses to deploy
without an API key, then makes the engine a single-node swarm and deploys; a changed setting rolls out; `make
swarm-down` removes the stack."""

from __future__ import annotations

import http.client
import urllib.error

import numpy as np
import pytest
from helpers import assert_same_embeddings
from swarm_stack import STACK, TEXTS, make, post_embeddings

pytestmark = pytest.mark.swarm


def test_swarm_up_and_down_on_a_host_in_no_swarm(lone_engine, http_port, reference_model):
    refused = make(lone_engine, 'swarm-up', API_KEY='')
    assert refused.returncode != 0
    assert 'set API_KEY' in refused.stderr, refused.stderr[-2000:]
    short = make(lone_engine, 'swarm-up', API_KEY='change-me')
    assert short.returncode != 0
    assert 'API_KEY has 9 characters: use at least 32' in short.stderr, short.stderr[-2000:]

    up = make(lone_engine, 'swarm-up')
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-5000:]
    assert 'making it a single-node swarm' in up.stderr
    assert 'generated a self-signed certificate' in up.stderr
    status, body = post_embeddings(http_port, TEXTS)
    assert status == 200
    # HTTPS only: a plaintext request gets no answer (the TLS handshake fails), so the key never crosses in clear.
    with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
        post_embeddings(http_port, TEXTS, scheme='http', timeout=30)
    embeddings = np.array([item['embedding'] for item in body['data']])
    assert_same_embeddings(embeddings, reference_model.encode(TEXTS))

    # One node, one replica: the update still has room for its new task beside the old one.
    update = make(lone_engine, 'swarm-up', ENCODER_BATCH_SIZE='16')
    assert update.returncode == 0, update.stdout[-3000:] + update.stderr[-5000:]
    (task,) = lone_engine.client().services.get(f'{STACK}_encoder').tasks(filters={'desired-state': 'running'})
    assert '"batch_size": 16' in ' '.join(task['Spec']['ContainerSpec']['Args'])
    assert post_embeddings(http_port, TEXTS)[0] == 200

    down = make(lone_engine, 'swarm-down')
    assert down.returncode == 0, down.stderr[-3000:]
    assert not lone_engine.client().services.list() and not lone_engine.client().secrets.list()
