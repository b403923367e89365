"""Faults against the real stack: refused input, a crashed encoder, and `make down` leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import docker
import pytest
import requests
from compose_stack import REPO, Stack
from helpers import assert_same_embeddings

pytestmark = pytest.mark.e2e

HELLO = {'data': [{'text': 'hello world'}]}


def post_encode(stack: Stack, body: dict, timeout: float = 10) -> requests.Response:
    return requests.post(f'http://127.0.0.1:{stack.http_port}/encode', json=body, timeout=timeout)


def test_refused_input_is_a_422_naming_the_doc_and_the_next_request_works(stack: Stack):
    refused = post_encode(stack, {'data': [{'id': 'good', 'text': 'fine'}, {'id': 'blank', 'text': ''}]})
    assert refused.status_code == 422
    assert 'empty text: ids blank' in refused.json()['detail']
    assert post_encode(stack, HELLO).status_code == 200


@pytest.fixture(scope='module')
def hello_embedding(reference_model):
    return reference_model.encode(['hello world'])


def watch_recovery(stack: Stack, started: float, expected, deadline_s: float = 180) -> tuple[float, list[int]]:
    """Poll POST /encode until a 200 that carries the model's embedding; return the time to recovery and every
    status seen (-1: connection refused)."""
    statuses: list[int] = []
    while time.monotonic() < started + deadline_s:
        try:
            reply = post_encode(stack, HELLO, timeout=15)
        except requests.ConnectionError:
            statuses.append(-1)
        else:
            statuses.append(reply.status_code)
            if reply.status_code == 503:
                assert 'encoder is unavailable' in reply.json()['detail']
                assert reply.headers.get('Retry-After')
            if reply.status_code == 200:
                assert_same_embeddings([reply.json()['data'][0]['embedding']], expected)
                break
        time.sleep(0.5)
    return time.monotonic() - started, statuses


def sigkill_main_process(stack: Stack, service: str) -> float:
    """SIGKILL of a service's main process from the host, as the OOM killer would (`docker kill` would count as a
    manual stop, to which restart policies do not apply)."""
    assert post_encode(stack, HELLO).status_code == 200
    os.kill(stack.container_state(service)['Pid'], signal.SIGKILL)
    return time.monotonic()


def test_a_crashed_encoder_answers_503_then_comes_back_by_itself(stack: Stack, hello_embedding):
    recovery, statuses = watch_recovery(stack, sigkill_main_process(stack, 'encoder'), hello_embedding)
    print(f'encoder recovered {recovery:.1f} s after SIGKILL; statuses seen: {sorted(set(statuses))}')
    assert statuses[-1] == 200, f'no recovery within 180 s: {statuses[-10:]}'
    # The encoder reloads its model for seconds after the restart: requests meanwhile must get the 503.
    assert 503 in statuses and set(statuses) <= {200, 503}, f'503 while down, then 200: {statuses}'
    assert stack.container_state('encoder')['Status'] == 'running'


def test_a_crashed_gateway_comes_back_by_itself(stack: Stack, hello_embedding):
    recovery, statuses = watch_recovery(stack, sigkill_main_process(stack, 'gateway'), hello_embedding)
    print(f'gateway recovered {recovery:.1f} s after SIGKILL; statuses seen: {sorted(set(statuses))}')
    assert statuses[-1] == 200, f'no recovery within 180 s: {statuses[-10:]}'
    # While the gateway is down nothing listens: connections are refused at once (no hang, no 500).
    assert set(statuses) <= {200, 503, -1}, statuses


def test_compose_restart_of_the_encoder_is_served_again(stack: Stack, hello_embedding):
    started = time.monotonic()
    stack.compose('restart', 'encoder')
    recovery, statuses = watch_recovery(stack, started, hello_embedding)
    print(f'encoder back {recovery:.1f} s after `docker compose restart encoder`; statuses {sorted(set(statuses))}')
    assert statuses[-1] == 200 and 503 in statuses and set(statuses) <= {200, 503}, statuses


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
        engine, label = docker.from_env(), {'label': f'com.docker.compose.project={project}'}
        assert not engine.containers.list(all=True, filters=label) and not engine.networks.list(filters=label)
    finally:
        stack.down()
