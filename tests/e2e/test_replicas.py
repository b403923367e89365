"""Two encoder replicas from the same flow.yml (`make up REPLICAS=2`): the gateway uses both, routes around one that
crashed, and the crashed one comes back by itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from compose_stack import REPO, Stack, own_stack, stack_env
from helpers import assert_same_embeddings, free_port

pytestmark = pytest.mark.e2e

REPLICAS = ('encoder-rep-0', 'encoder-rep-1')


@pytest.fixture(scope='module')
def two_replicas(images_built, filled_model_cache, tmp_path_factory) -> Iterator[Stack]:
    compose_dir = tmp_path_factory.mktemp('replicas-2')
    export = [sys.executable, str(REPO / 'scripts' / 'export_compose.py'), '--replicas', '2']
    subprocess.run([*export, '--output-dir', str(compose_dir)], check=True, capture_output=True)
    with own_stack(
        'replicas',
        filled_model_cache,
        files=(str(compose_dir / 'compose.yml'),),
        COMPOSE_DIR=str(compose_dir),
        ENCODER_METRICS_PORT_1=str(free_port()),
    ) as stack:
        yield stack


def docs_encoded(stack: Stack, replica: str) -> float:
    """The replica's own counter, read from its Prometheus port on 127.0.0.1."""
    variable = 'ENCODER_METRICS_PORT' if replica.endswith('-0') else 'ENCODER_METRICS_PORT_1'
    metrics = requests.get(f'http://127.0.0.1:{stack.env_overrides[variable]}/', timeout=5).text
    line = next(line for line in metrics.splitlines() if line.startswith('jina_sentence_encoder_docs_encoded_total'))
    return float(line.split()[-1])


def encode(stack: Stack, text: str) -> requests.Response:
    return requests.post(f'http://127.0.0.1:{stack.http_port}/encode', json={'data': [{'text': text}]}, timeout=30)


def test_the_export_has_one_service_per_replica_and_the_gateway_knows_both(two_replicas: Stack):
    services = two_replicas.compose('config', '--services').stdout.split()
    assert sorted(services) == ['encoder-rep-0', 'encoder-rep-1', 'gateway']
    gateway_command = ' '.join(two_replicas.compose('config').stdout.split())
    assert 'encoder-rep-0:8081' in gateway_command and 'encoder-rep-1:8081' in gateway_command


def test_requests_reach_both_replicas(two_replicas: Stack, reference_model):
    before = {replica: docs_encoded(two_replicas, replica) for replica in REPLICAS}
    texts = [f'request {i} about replicas' for i in range(20)]
    for text in texts:
        reply = encode(two_replicas, text)
        assert reply.status_code == 200
        assert_same_embeddings([reply.json()['data'][0]['embedding']], reference_model.encode([text]))
    served = {replica: docs_encoded(two_replicas, replica) - before[replica] for replica in REPLICAS}
    print(f'20 one-doc requests served per replica: {served}')
    assert all(count >= 5 for count in served.values()), served
    assert sum(served.values()) == 20


def test_a_crashed_replica_is_routed_around_and_comes_back(two_replicas: Stack, reference_model):
    before = two_replicas.container_state('encoder-rep-1')
    os.kill(before['Pid'], signal.SIGKILL)  # as the OOM killer would
    killed_at = time.monotonic()

    def back() -> bool:
        """Restarted (a state read just after the kill can still be the old, healthy one) and healthy again."""
        state = two_replicas.container_state('encoder-rep-1')
        return state['StartedAt'] != before['StartedAt'] and state.get('Health', {}).get('Status') == 'healthy'

    statuses = []
    while not back():
        assert time.monotonic() - killed_at < 180, 'the killed replica did not come back within 180 s'
        reply = encode(two_replicas, 'while one replica is down')
        statuses.append(reply.status_code)
        if reply.status_code == 200:
            embedding = np.array(reply.json()['data'][0]['embedding'])
            assert_same_embeddings([embedding], reference_model.encode(['while one replica is down']))
        time.sleep(0.2)
    back_after = time.monotonic() - killed_at
    print(
        f'{len(statuses)} requests while rep-1 was down: statuses {sorted(set(statuses))}; back in {back_after:.1f} s'
    )
    assert statuses and set(statuses) == {200}, f'requests must keep succeeding on the other replica: {statuses}'

    before = docs_encoded(two_replicas, 'encoder-rep-1')
    for i in range(10):
        assert encode(two_replicas, f'after the restart {i}').status_code == 200
    assert docs_encoded(two_replicas, 'encoder-rep-1') > before, 'the restarted replica must serve again'


def test_the_gpu_overlay_pins_replica_i_to_gpu_i(tmp_path):
    export = [sys.executable, str(REPO / 'scripts' / 'export_compose.py'), '--replicas', '3']
    subprocess.run([*export, '--output-dir', str(tmp_path)], check=True, capture_output=True)
    files = (str(tmp_path / 'compose.yml'), str(tmp_path / 'compose.gpu.yml'))
    overlay = Stack(project='sentence-encoder-config', env_overrides=stack_env(tmp_path), files=files)
    services = json.loads(overlay.compose('config', '--format', 'json').stdout)['services']
    for i in range(3):
        (device,) = services[f'encoder-rep-{i}']['deploy']['resources']['reservations']['devices']
        assert device['device_ids'] == [str(i)] and 'count' not in device, device
        assert '"device": "cuda"' in ' '.join(services[f'encoder-rep-{i}']['command'])
    assert 'deploy' not in services['gateway'] or 'reservations' not in services['gateway']['deploy']['resources']
