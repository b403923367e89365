"""Faults against the real stack: refused input, a crashed encoder, and `make down` leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import requests
from compose_stack import REPO, Stack

pytestmark = pytest.mark.e2e

HELLO = {'data': [{'text': 'hello world'}]}


def post_encode(stack: Stack, body: dict, timeout: float = 10) -> requests.Response:
    return requests.post(f'http://127.0.0.1:{stack.http_port}/encode', json=body, timeout=timeout)


def test_refused_input_is_a_422_naming_the_doc_and_the_next_request_works(stack: Stack):
    refused = post_encode(stack, {'data': [{'id': 'good', 'text': 'fine'}, {'id': 'blank', 'text': ''}]})
    assert refused.status_code == 422
    assert 'empty text: ids blank' in refused.json()['detail']
    assert post_encode(stack, HELLO).status_code == 200


def test_a_crashed_encoder_answers_503_then_comes_back_by_itself(stack: Stack):
    """SIGKILL of the encoder's main process from the host, as the OOM killer would (`docker kill` would count as a
    manual stop, to which restart policies do not apply)."""
    assert post_encode(stack, HELLO).status_code == 200
    pid = stack.container_state('encoder')['Pid']
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    statuses: list[int] = []
    deadline = killed_at + 180
    while time.monotonic() < deadline:
        try:
            reply = post_encode(stack, HELLO, timeout=15)
        except requests.ConnectionError:
            statuses.append(-1)  # the gateway itself must not go away
        else:
            statuses.append(reply.status_code)
            if reply.status_code == 503:
                assert 'encoder is unavailable' in reply.json()['detail']
                assert reply.headers.get('Retry-After')
            if reply.status_code == 200:
                assert len(reply.json()['data'][0]['embedding']) == 384
                break
        time.sleep(0.5)
    recovery = time.monotonic() - killed_at
    print(f'encoder recovered {recovery:.1f} s after SIGKILL; statuses seen: {sorted(set(statuses))}')
    assert statuses[-1] == 200, f'no recovery within 180 s: {statuses[-10:]}'
    assert set(statuses) <= {200, 503}, f'only 503 while down, then 200: {statuses}'
    assert stack.container_state('encoder')['Status'] == 'running'


def test_make_down_leaves_no_containers_or_networks(images_built, filled_model_cache):
    from compose_stack import stack_env

    project = f'sentence-encoder-test-down-{os.getpid()}'
    stack = Stack(project=project, env_overrides=stack_env(filled_model_cache))
    try:
        stack.compose('up', '-d', '--no-start')  # create containers and network without the cost of starting
        assert stack.compose('ps', '-a', '-q').stdout.strip()
        subprocess.run(
            ['make', '--no-print-directory', 'down'], cwd=REPO, env=stack.env, check=True, capture_output=True
        )
        label = f'label=com.docker.compose.project={project}'
        containers = subprocess.run(['docker', 'ps', '-a', '-q', '--filter', label], capture_output=True, text=True)
        networks = subprocess.run(['docker', 'network', 'ls', '-q', '--filter', label], capture_output=True, text=True)
        assert containers.stdout.strip() == '' and networks.stdout.strip() == ''
    finally:
        stack.down()
