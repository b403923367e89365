"""The gateway's DNS discovery of encoder replicas (gateway/discovery.py): Jina's connections follow what the name
resolves to. The resolver and the connection pool here are stand-ins that record; the swarm tier runs it for real."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / 'gateway'))
from discovery import ReplicaDiscovery, resolve  # noqa: E402


class RecordingPool:
    def __init__(self) -> None:
        self.connections: set[str] = set()

    def add_connection(self, deployment: str, address: str) -> None:
        assert deployment == 'encoder'
        self.connections.add(address)

    async def remove_connection(self, deployment: str, address: str) -> None:
        assert deployment == 'encoder'
        self.connections.discard(address)


def discovery_answering(answers: list, pool: RecordingPool, replica_counts: list[int]) -> ReplicaDiscovery:
    async def resolver(host: str, port: int) -> set[str]:
        assert (host, port) == ('tasks.encoder', 8081)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    pool.connections = {'tasks.encoder:8081'}  # what Jina connected to from --deployments-addresses
    return ReplicaDiscovery(
        pool, 'encoder', 'tasks.encoder:8081', ['tasks.encoder:8081'], logging.getLogger('test'),
        resolver=resolver, on_change=replica_counts.append,
    )  # fmt: skip


def test_connections_follow_the_tasks_the_name_resolves_to():
    pool, counts = RecordingPool(), []
    answers = [
        {'10.0.1.2:8081', '10.0.1.3:8081'},  # two tasks: the name's own connection is replaced by theirs
        OSError('no such host'),  # DNS hiccup: keep what there is
        set(),  # nothing resolved: keep what there is rather than drop every connection
        {'10.0.1.3:8081', '10.0.1.7:8081'},  # a task rescheduled elsewhere
    ]
    discovery = discovery_answering(answers, pool, counts)
    expected = [
        {'10.0.1.2:8081', '10.0.1.3:8081'},
        {'10.0.1.2:8081', '10.0.1.3:8081'},
        {'10.0.1.2:8081', '10.0.1.3:8081'},
        {'10.0.1.3:8081', '10.0.1.7:8081'},
    ]
    for connections in expected:
        asyncio.run(discovery.refresh())
        assert pool.connections == connections
    assert counts == [2, 2]  # told on each change, not on every look


@pytest.mark.parametrize('target', ['tasks.encoder', ':8081', 'tasks.encoder:port'])
def test_a_target_without_host_and_port_is_refused_naming_the_form(target):
    with pytest.raises(ValueError, match='host:port'):
        ReplicaDiscovery(RecordingPool(), 'encoder', target, [], logging.getLogger('test'))


def test_the_real_resolver_gives_host_port_for_each_address():
    """getaddrinfo on a name every host resolves without DNS (/etc/hosts): the addresses with the port, once each."""
    found = asyncio.run(resolve('localhost', 8081))
    assert '127.0.0.1:8081' in found
    assert all(address.endswith(':8081') and address.count(':8081') == 1 for address in found)
    assert asyncio.run(resolve('127.0.0.5', 9000)) == {'127.0.0.5:9000'}  # the name asked for, not the loopback


def test_a_target_with_colons_in_its_host_splits_at_the_last():
    discovery = ReplicaDiscovery(RecordingPool(), 'encoder', 'fd00::7:8081', [], logging.getLogger('test'))
    assert (discovery.host, discovery.port) == ('fd00::7', 8081)


def test_replicas_found_and_gone_are_logged_by_address(caplog):
    pool, counts = RecordingPool(), []
    discovery = discovery_answering([{'10.0.1.2:8081'}, OSError('no such host')], pool, counts)
    with caplog.at_level(logging.DEBUG, logger='test'):
        asyncio.run(discovery.refresh())
        asyncio.run(discovery.refresh())
    assert caplog.messages == [
        'encoder replica 10.0.1.2:8081 found: sending it requests',
        'encoder replica tasks.encoder:8081 gone: no longer sending it requests',
        "tasks.encoder did not resolve (no such host); keeping ['10.0.1.2:8081']",
    ]


def test_run_looks_again_every_interval():
    pool, counts = RecordingPool(), []
    answers = [{'10.0.1.2:8081'}, {'10.0.1.2:8081', '10.0.1.3:8081'}, {'10.0.1.3:8081'}] + [{'10.0.1.3:8081'}] * 100
    discovery = discovery_answering(answers, pool, counts)

    async def for_a_while():
        task = asyncio.ensure_future(discovery.run(interval=0.01))
        while len(counts) < 3:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(asyncio.wait_for(for_a_while(), 10))
    assert counts == [1, 2, 1] and pool.connections == {'10.0.1.3:8081'}
