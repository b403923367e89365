"""Encoder replicas found by DNS, for cluster engines that give a service's replicas no fixed addresses of their own.

In a Docker swarm, the encoder is one service of N tasks; with `endpoint_mode: dnsrr` its name (and `tasks.<name>`)
resolves to one address per running task, and the addresses change when a task is rescheduled or updated. Jina's
gateway keeps one gRPC connection per address it was given, balances requests across them, and retries a failed
request on another one; given one name for N tasks, gRPC would connect to one of them and stay there. So when
ENCODER_DISCOVERY names `host:port`, the gateway resolves it every ENCODER_DISCOVERY_INTERVAL_S seconds and gives
Jina a connection per address it finds, dropping those that are gone: requests spread over every replica, and a
replica that comes or goes is noticed within the interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable

DISCOVERY_TARGET = os.environ.get('ENCODER_DISCOVERY', '')  # e.g. tasks.encoder:8081; empty: the addresses as given
DISCOVERY_INTERVAL_S = float(os.environ.get('ENCODER_DISCOVERY_INTERVAL_S', '2'))

Resolver = Callable[[str, int], Awaitable[set[str]]]


async def resolve(host: str, port: int) -> set[str]:
    """Every address `host` resolves to, as host:port strings."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return {f'{info[4][0]}:{port}' for info in infos}


class ReplicaDiscovery:
    """Keeps a Jina connection pool's connections for one deployment equal to what a DNS name resolves to."""

    def __init__(
        self,
        connection_pool,
        deployment: str,
        target: str,
        configured: list[str],
        logger: logging.Logger | logging.LoggerAdapter,
        resolver: Resolver = resolve,
        on_change: Callable[[int], None] = lambda replicas: None,
    ) -> None:
        host, _, port = target.rpartition(':')
        if not host or not port.isdigit():
            raise ValueError(f'ENCODER_DISCOVERY must be host:port (e.g. tasks.encoder:8081), not {target!r}')
        self.pool, self.deployment, self.host, self.port = connection_pool, deployment, host, int(port)
        self.known = set(configured)  # the addresses Jina started with: replaced once the name resolves
        self.logger = logger
        self.resolver = resolver
        self.on_change = on_change  # told the number of replicas whenever it changes

    async def refresh(self) -> None:
        try:
            found = await self.resolver(self.host, self.port)
        except OSError as error:  # no task running yet, or DNS briefly unavailable: keep what there is
            self.logger.debug(f'{self.host} did not resolve ({error}); keeping {sorted(self.known)}')
            return
        if not found:
            return
        for address in sorted(found - self.known):
            self.pool.add_connection(self.deployment, address)
            self.logger.info(f'encoder replica {address} found: sending it requests')
        for address in sorted(self.known - found):
            await self.pool.remove_connection(self.deployment, address)
            self.logger.info(f'encoder replica {address} gone: no longer sending it requests')
        if found != self.known:
            self.on_change(len(found))
        self.known = found

    async def run(self, interval: float = DISCOVERY_INTERVAL_S) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(interval)
