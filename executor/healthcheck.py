"""Container healthcheck: the executor answers the standard gRPC health check (grpc.health.v1) on its port.

Far lighter than `jina ping` (which imports all of jina: seconds of CPU beside a busy encoder, every interval).
Jina reports SERVING only once the executor is constructed, i.e. once the model is loaded.
    python3 healthcheck.py [PORT] [TIMEOUT_S]   (TIMEOUT_S: 3; keep it under the healthcheck's own timeout)
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

port = sys.argv[1] if len(sys.argv) > 1 else '8081'
timeout_s = float(sys.argv[2]) if len(sys.argv) > 2 else 3
try:
    with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
except grpc.RpcError as error:
    sys.exit(f'executor on port {port} not healthy: {error.code().name}')
if reply.status != health_pb2.HealthCheckResponse.SERVING:
    sys.exit(f'executor on port {port} reports {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}')
