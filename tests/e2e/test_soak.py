"""A 60-second soak of the real stack (`make soak` runs the long one): 64 clients, gRPC and HTTP, 1- and 32-doc
requests. Zero errors, every reply complete, in order and equal to the in-process model, and no container's memory
growing phase after phase (scripts/soak.py's `memory_growth`: a gateway keeping 8 KB per HTTP request fails it)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from compose_stack import REPO, Stack

pytestmark = pytest.mark.e2e

SOAK_SECONDS = 60


def test_soak_with_64_mixed_clients(stack: Stack, tmp_path):
    summary_path = tmp_path / 'soak.json'
    subprocess.run(
        [sys.executable, str(REPO / 'scripts' / 'soak.py'), '--clients', '64', '--duration', str(SOAK_SECONDS),
         '--http-port', str(stack.http_port), '--grpc-port', str(stack.grpc_port), '--project', stack.project,
         '--json', str(summary_path)],
        check=True, timeout=SOAK_SECONDS + 300, env=stack.env,
    )  # fmt: skip
    summary = json.loads(summary_path.read_text())
    print(json.dumps({key: value for key, value in summary.items() if key != 'memory_samples'}))
    assert summary['errors'] == 0, summary['first_errors']
    assert summary['requests'] > 64
    growth = summary['memory_growth']
    assert len(growth) == 2, f'memory was not read from both containers: {growth}'
    leaking = {container: figures for container, figures in growth.items() if figures['leak']}
    assert not leaking, f'memory grows phase after phase under steady load: {leaking}'
