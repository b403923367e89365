"""Driving the swarm stack from the host, as a user on a manager would: make targets against the manager's engine,
HTTP requests to the gateway's published port."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request

from cluster import Cluster
from helpers import REPO

STACK = 'sentence-encoder'
API_KEY = 'swarm-test-key-not-a-secret-0123456789'
TEXTS = ['a swarm of engines', 'one node fewer', 'rolling, one task at a time']


def make(cluster: Cluster, *args: str, **env: str) -> subprocess.CompletedProcess:
    """A make target of the checkout, run against the manager's engine as on the manager itself."""
    settings = {
        'DOCKER_HOST': cluster.docker_host,
        'MODEL_CACHE_DIR': os.environ['HF_HOME'],
        'API_KEY': API_KEY,
        # A deploy loads the model on nodes that share 2 cores: room for a slower machine, not a bound on speed.
        'WAIT_TIMEOUT': '600',
    }
    return subprocess.run(
        ['make', '--no-print-directory', *args], cwd=REPO, env={**os.environ, **settings, **env},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip


# The certificate `make swarm-up` generated for the published port (self-signed, for 127.0.0.1 among others).
SWARM_CERT = REPO / '.build' / 'swarm-tls' / 'cert.pem'


def post_embeddings(
    port: int, texts: list[str], key: str | None = API_KEY, timeout: float = 60, scheme: str = 'https'
) -> tuple[int, dict]:
    """POST /v1/embeddings to the swarm's published port, over HTTPS checked against SWARM_CERT (read each time:
    every deploy makes its own)."""
    context = ssl.create_default_context(cafile=str(SWARM_CERT)) if scheme == 'https' else None
    request = urllib.request.Request(
        f'{scheme}://127.0.0.1:{port}/v1/embeddings',
        data=json.dumps({'input': texts, 'model': 'sentence-transformers/all-MiniLM-L6-v2'}).encode(),
        headers={'Content-Type': 'application/json', **({'Authorization': f'Bearer {key}'} if key else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, {}
