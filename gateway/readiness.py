"""Whether the encoder replicas are up, kept by a background check, for GET /ready.

Each replica is asked the standard gRPC health check every READY_CHECK_INTERVAL_S over a channel kept open, and
/ready answers from the last round. It used to open a new channel to every replica on every call: a caller looping
on /ready (a probe, or anyone) made the gateway dial the encoders as fast as it asked.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

READY_CHECK_INTERVAL_S = 2.0
CHECK_TIMEOUT_S = 2.0
# How long the first call waits for the first round: under a probe's usual 1 s timeout (Kubernetes' default). Not
# done by then (an encoder slow to answer), it says "not ready", which is what a later round will confirm or change.
FIRST_ROUND_WAIT_S = 0.8


class EncoderReadiness:
    def __init__(self, addresses: list[str], logger=None, interval_s: float = READY_CHECK_INTERVAL_S) -> None:
        self.addresses = addresses
        self.interval_s = interval_s
        self.serving: dict[str, bool] = dict.fromkeys(addresses, False)
        self._logger = logger
        self._first_round = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def current(self) -> dict[str, bool]:
        """Each replica's last answer. The first call starts the background check and waits briefly for its first
        round; a check that died (it should not) is logged and started again, so /ready never serves a frozen state."""
        if self._task is not None and self._task.done():
            error = None if self._task.cancelled() else self._task.exception()
            if self._logger:
                self._logger.warning(f'the readiness check stopped ({error!r}): starting it again')
            self._task = None
            self.serving = dict.fromkeys(self.addresses, False)
            self._first_round = asyncio.Event()  # the new check's first round, waited for as at the start
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name='encoder-readiness')
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_round.wait(), FIRST_ROUND_WAIT_S)
        return dict(self.serving)

    async def aclose(self) -> None:
        """Stop the background check and close its channels (at the gateway's shutdown)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # its end, not its exception; a cancellation of this caller still goes

    async def _run(self) -> None:
        channels = {address: grpc.aio.insecure_channel(address.split('://')[-1]) for address in self.addresses}
        try:
            while True:
                answers = await asyncio.gather(*(self._serving(channel) for channel in channels.values()))
                self.serving = dict(zip(channels, answers, strict=True))
                self._first_round.set()
                await asyncio.sleep(self.interval_s)
        finally:
            for channel in channels.values():
                await channel.close()

    @staticmethod
    async def _serving(channel: grpc.aio.Channel) -> bool:
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=CHECK_TIMEOUT_S)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING
