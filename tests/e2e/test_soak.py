"""A 60-second soak of the real stack (`make soak` runs the long one): 64 clients, gRPC and HTTP, 1- and 32-doc
requests. Zero errors, every reply complete, in order and equal to the in-process model, memory flat."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from compose_stack import REPO, Stack

pytestmark = pytest.mark.e2e

SOAK_SECONDS = 60
MAX_MEMORY_GROWTH = 0.10


def test_sixty_second_soak_with_64_mixed_clients(stack: Stack, tmp_path):
    summary_path = tmp_path / 'soak.json'
    subprocess.run(
        [sys.executable, str(REPO / 'scripts' / 'soak.py'), '--clients', '64', '--duration', str(SOAK_SECONDS),
         '--http-port', str(stack.http_port), '--grpc-port', str(stack.grpc_port), '--project', stack.project,
         '--json', str(summary_path)],
        check=True, timeout=SOAK_SECONDS + 300, env=stack.env,
    )  # fmt: skip
    summary = json.loads(summary_path.read_text())
    print(json.dumps(summary))
    assert summary['errors'] == 0, summary['first_errors']
    assert summary['requests'] > 64
    before, after = summary['memory_mib_after_warm_up'], summary['memory_mib_at_end']
    assert set(before) == set(after) and len(before) == 2, (before, after)
    for container, used in after.items():
        assert used <= before[container] * (1 + MAX_MEMORY_GROWTH), f'{container}: {before[container]} -> {used} MiB'
