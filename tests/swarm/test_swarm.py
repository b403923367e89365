"""The stack on a real three-node Docker swarm (conftest.py, cluster.py): `make swarm-up` and `make swarm-down` as a
user runs them on a manager, then a rolling update and the loss of a node, both under load. The tests run in this
order on one deployment: each leaves the stack serving for the next."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
from cluster import Cluster
from helpers import assert_same_embeddings, embedding_mismatch
from swarm_stack import API_KEY, STACK, TEXTS, make, post_embeddings

pytestmark = pytest.mark.swarm


def running_encoder_tasks(cluster: Cluster) -> list[dict]:
    service = cluster.client().services.get(f'{STACK}_encoder')
    return [
        task for task in service.tasks(filters={'desired-state': 'running'}) if task['Status']['State'] == 'running'
    ]


def node_of(cluster: Cluster, task: dict) -> str:
    return cluster.client().nodes.get(task['NodeID']).attrs['Description']['Hostname']


def task_address(task: dict) -> str:
    return next(address.split('/')[0] for net in task['NetworksAttachments'] for address in net['Addresses'])


@dataclass
class Load:
    """`clients` threads posting TEXTS back to back; every reply is recorded, and every 200 checked in full."""

    port: int
    reference: np.ndarray
    clients: int = 8
    # (when it was sent, '200' | status | exception name): judged by when sent, as a request sent before a recovery
    # may end after it (one that hung on the lost node until its timeout, say)
    outcomes: list[tuple[float, str]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]

    def _client(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status, body = post_embeddings(self.port, TEXTS, timeout=60)
                outcome = str(status)
                if status == 200:
                    vectors = np.array([item['embedding'] for item in body['data']])
                    if vectors.shape != self.reference.shape or embedding_mismatch(vectors, self.reference):
                        self.wrong.append(f'a 200 with wrong or missing embeddings: shape {vectors.shape}')
            except OSError as error:  # refused, reset, timed out: the gap while a node is lost
                outcome = type(error).__name__
            except (KeyError, TypeError, ValueError) as error:  # a 200 whose body is not the embeddings
                outcome = 'bad body'
                self.wrong.append(f'a 200 with an unreadable body: {error!r}')
            self.outcomes.append((started, outcome))
            self.latencies.append(time.monotonic() - started)
            time.sleep(0.05)  # a steady load that leaves the 2 cores room for the nodes' own work

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)

    def counts(self) -> Counter:
        return Counter(outcome for _, outcome in self.outcomes)

    def latency(self) -> str:
        return f'p50 {1000 * float(np.median(self.latencies)):.0f} ms, max {max(self.latencies):.1f} s'


@pytest.fixture(scope='module')
def deployed(cluster: Cluster) -> Cluster:
    up = make(cluster, 'swarm-up', REPLICAS='2')
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-5000:]
    return cluster


@pytest.fixture(scope='module')
def reference(reference_model) -> np.ndarray:
    return reference_model.encode(TEXTS)


def test_swarm_up_serves_http_and_grpc_with_the_encoders_on_different_nodes(deployed, http_port, reference):
    tasks = running_encoder_tasks(deployed)
    assert len(tasks) == 2
    assert len({task['NodeID'] for task in tasks}) == 2, 'two encoder tasks on one node'

    status, body = post_embeddings(http_port, TEXTS)
    assert status == 200
    assert_same_embeddings(np.array([item['embedding'] for item in body['data']]), reference)
    assert post_embeddings(http_port, TEXTS, key=None)[0] == 401, 'the published HTTP port must need the API key'

    # gRPC is not published: a client on the manager reaches it over the stack's overlay network, with the key.
    def on_the_overlay(script: str):
        return deployed.manager.docker(
            'run', '--rm', '--network', f'{STACK}_jina-network', '--entrypoint', 'python3', 'sentence-gateway:3.33.1',
            '-c', script, check=False,
        )  # fmt: skip

    client = (
        'import json; from docarray import DocList; from docarray.documents import TextDoc; from jina import Client;'
        f'docs = DocList[TextDoc]([TextDoc(id=str(i), text=t) for i, t in enumerate({TEXTS!r})]);'
        "out = Client(host='gateway', port=50051).post('/encode', docs, return_type=DocList[TextDoc],"
        f" metadata=(('authorization', 'Bearer {API_KEY}'),));"
        'print(json.dumps([[d.id, d.text, d.embedding.tolist()] for d in out]))'
    )
    without_key = (
        'import grpc; from google.protobuf import empty_pb2; from jina.proto import jina_pb2_grpc\n'
        'try:\n'
        "    jina_pb2_grpc.JinaInfoRPCStub(grpc.insecure_channel('gateway:50051'))._status(empty_pb2.Empty())\n"
        '    print("ANSWERED")\n'
        'except grpc.RpcError as error:\n'
        '    print(error.code().name)'
    )
    refused = on_the_overlay(without_key)
    assert refused.stdout.strip().splitlines()[-1:] == ['UNAUTHENTICATED'], refused.stdout + refused.stderr[-2000:]
    run = on_the_overlay(client)
    assert run.returncode == 0, run.stderr[-3000:]
    replies = json.loads(run.stdout.strip().splitlines()[-1])
    assert [(doc_id, text) for doc_id, text, _ in replies] == [(str(i), text) for i, text in enumerate(TEXTS)]
    assert_same_embeddings(np.array([vector for _, _, vector in replies]), reference)


def test_a_rolling_update_under_load_fails_no_request(deployed, http_port, reference):
    before = {task['ID'] for task in running_encoder_tasks(deployed)}
    with Load(http_port, reference) as load:
        time.sleep(5)
        started = time.monotonic()
        update = make(deployed, 'swarm-up', REPLICAS='2', ENCODER_BATCH_SIZE='16')
        took = time.monotonic() - started
        time.sleep(5)
    assert update.returncode == 0, update.stdout[-3000:] + update.stderr[-5000:]
    after = running_encoder_tasks(deployed)
    assert not before & {task['ID'] for task in after}, 'every encoder task must have been replaced'
    assert all('"batch_size": 16' in ' '.join(task['Spec']['ContainerSpec']['Args']) for task in after)
    counts = load.counts()
    print(f'rolling update: {took:.0f} s, replies {dict(counts)}, {load.latency()}')
    assert not load.wrong, load.wrong[:3]
    assert set(counts) == {'200'}, f'requests failed during the update: {dict(counts)}'


def test_losing_a_node_under_load(deployed, http_port, reference):
    tasks = running_encoder_tasks(deployed)
    on_worker = next(task for task in tasks if node_of(deployed, task) != deployed.manager.name)
    lost = next(node for node in deployed.workers if node.name == node_of(deployed, on_worker))
    with Load(http_port, reference) as load:
        time.sleep(5)
        killed_at = time.monotonic()
        lost.container.kill()  # the node is gone: no shutdown, no goodbye to the swarm
        deadline = killed_at + 240
        while True:
            replacement = [
                task for task in running_encoder_tasks(deployed) if task['ID'] not in {t['ID'] for t in tasks}
            ]
            if replacement:
                break
            assert time.monotonic() < deadline, 'the lost encoder task was not rescheduled in 240 s'
            time.sleep(1)
        rescheduled_in = time.monotonic() - killed_at
        new_address = task_address(replacement[0])
        time.sleep(10)  # the gateway resolves the tasks every 2 s
    assert node_of(deployed, replacement[0]) != lost.name
    gateway_log = deployed.manager.docker('service', 'logs', '--raw', f'{STACK}_gateway', check=False)
    assert f'encoder replica {new_address}:8081 found' in gateway_log.stdout + gateway_log.stderr

    counts = load.counts()
    failures = {outcome: n for outcome, n in counts.items() if outcome != '200'}
    failed_times = [at - killed_at for at, outcome in load.outcomes if outcome != '200']
    gap = f'sent {min(failed_times):.0f}-{max(failed_times):.0f} s after the kill' if failed_times else 'none'
    print(f'node loss: rescheduled in {rescheduled_in:.0f} s; replies {dict(counts)}; failures {gap}; {load.latency()}')
    assert not load.wrong, load.wrong[:3]
    assert set(failures) <= {'503', '502', '504', 'ConnectionResetError', 'RemoteDisconnected', 'TimeoutError',
                             'URLError', 'ConnectionRefusedError'}, failures  # fmt: skip
    assert counts['200'] > 0
    last = [outcome for at, outcome in load.outcomes if at > killed_at + rescheduled_in + 5]
    assert last and set(last) == {'200'}, f'requests sent after the replacement was up failed: {Counter(last)}'


def test_swarm_down_leaves_nothing_behind(deployed):
    down = make(deployed, 'swarm-down')
    assert down.returncode == 0, down.stderr[-3000:]
    client = deployed.client()
    assert not client.services.list()
    assert not client.networks.list(filters={'label': f'com.docker.stack.namespace={STACK}'})
    assert not client.secrets.list()
