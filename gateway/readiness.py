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


class EncoderReadiness:
    def __init__(self, addresses: list[str], interval_s: float = READY_CHECK_INTERVAL_S) -> None:
        self.addresses = addresses
        self.interval_s = interval_s
        self.serving: dict[str, bool] = dict.fromkeys(addresses, False)
        self._first_round = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def current(self) -> dict[str, bool]:
        """Each replica's last answer. The first call starts the background check and waits for its first round."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name='encoder-readiness')
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_round.wait(), CHECK_TIMEOUT_S + 1)
        return dict(self.serving)

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
