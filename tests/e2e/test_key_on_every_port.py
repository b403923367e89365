"""With API_KEY set, the key guards both ports of the compose stack that serve data. On gRPC (gateway/grpc_guard.py)
every method but the health check needs it, /encode_unbatched is closed to clients, and a message over
MAX_GRPC_MESSAGE_BYTES is refused.

In the e2e tier, not the flow tier: a local Flow forks its pods from the pytest process, and a child forked after
this process has used gRPC channels (these tests, or Jina's Client in earlier ones) can spin in its event loop and
never exit (seen: the flow's teardown waited for ever).
"""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
import requests
from compose_stack import KEYED_STACK_API_KEY as API_KEY
from compose_stack import KEYED_STACK_MAX_GRPC_MESSAGE as MAX_MESSAGE
from docarray import DocList
from docarray.documents import TextDoc
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers import assert_same_embeddings
from jina import Client
from jina.proto import jina_pb2_grpc
from jina.types.request.data import DataRequest

pytestmark = pytest.mark.e2e

KEY = (('authorization', f'Bearer {API_KEY}'),)


def test_the_key_file_stays_out_of_the_containers_environment(keyed_stack):
    inspected = keyed_stack.container('gateway').attrs
    assert API_KEY not in ' '.join(inspected['Config']['Env'])
    assert 'API_KEY_FILE=/run/secrets/api_key' in inspected['Config']['Env']
    (secret,) = [m for m in inspected['Mounts'] if m['Destination'] == '/run/secrets/api_key']
    assert secret['RW'] is False


@pytest.fixture
def grpc_port(keyed_stack):
    return keyed_stack.grpc_port


@pytest.fixture
def channel(grpc_port):
    with grpc.insecure_channel(f'127.0.0.1:{grpc_port}') as opened:
        yield opened


def data_request(texts: list[str], endpoint: str = '/encode') -> DataRequest:
    request = DataRequest()
    request.header.exec_endpoint = endpoint
    request.data.docs = DocList[TextDoc]([TextDoc(text=text) for text in texts])
    return request


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


@pytest.mark.parametrize('metadata', [None, (('authorization', 'Bearer wrong'),), (('authorization', API_KEY),)])
def test_without_the_key_every_method_is_unauthenticated(channel, metadata):
    calls = {
        'Call': lambda: list(jina_pb2_grpc.JinaRPCStub(channel).Call(iter([data_request(['x'])]), metadata=metadata)),
        'process_single_data': lambda: jina_pb2_grpc.JinaSingleDataRequestRPCStub(channel).process_single_data(
            data_request(['x']), metadata=metadata
        ),
        '_status': lambda: jina_pb2_grpc.JinaInfoRPCStub(channel)._status(empty_pb2.Empty(), metadata=metadata),
        'endpoint_discovery': lambda: jina_pb2_grpc.JinaDiscoverEndpointsRPCStub(channel).endpoint_discovery(
            empty_pb2.Empty(), metadata=metadata
        ),
        'dry_run': lambda: jina_pb2_grpc.JinaGatewayDryRunRPCStub(channel).dry_run(
            empty_pb2.Empty(), metadata=metadata
        ),
        'reflection': lambda: list(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services='')]), metadata=metadata
            )
        ),
        'a method that does not exist': lambda: channel.unary_unary('/jina.Nothing/here')(b'', metadata=metadata),
    }
    for name, call in calls.items():
        error = refusal(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (name, error.code(), error.details())
        assert error.details() == 'missing or wrong API key: send the metadata `authorization: Bearer <API_KEY>`'
        assert API_KEY not in error.details()


def test_the_health_check_stays_open_and_the_key_opens_the_rest(channel):
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    status = jina_pb2_grpc.JinaInfoRPCStub(channel)._status(empty_pb2.Empty(), metadata=KEY)
    assert status.jina['jina']
    endpoints = jina_pb2_grpc.JinaDiscoverEndpointsRPCStub(channel).endpoint_discovery(empty_pb2.Empty(), metadata=KEY)
    assert '/encode' in endpoints.endpoints


def test_jinas_client_with_the_key_gets_every_embedding(grpc_port, reference_model):
    texts = [f'text number {i} about gRPC and keys' for i in range(40)]
    client = Client(host='127.0.0.1', port=grpc_port, protocol='grpc')
    docs = client.post(
        '/encode', DocList[TextDoc]([TextDoc(text=t) for t in texts]), request_size=16, metadata=KEY,
        results_in_order=True,
        return_type=DocList[TextDoc],
    )  # fmt: skip
    assert list(docs.text) == texts
    assert_same_embeddings(np.stack(docs.embedding), reference_model.encode(texts))


def test_the_internal_endpoint_is_refused_with_the_key_too(channel):
    for call in (
        lambda: list(
            jina_pb2_grpc.JinaRPCStub(channel).Call(iter([data_request(['x'], '/encode_unbatched')]), metadata=KEY)
        ),  # fmt: skip
        lambda: jina_pb2_grpc.JinaSingleDataRequestRPCStub(channel).process_single_data(
            data_request(['x'], '/encode_unbatched'), metadata=KEY
        ),
    ):
        error = refusal(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
        assert error.details() == '`/encode_unbatched` is internal to the gateway: send your docs to `/encode`'
    reply = jina_pb2_grpc.JinaSingleDataRequestRPCStub(channel).process_single_data(data_request(['y']), metadata=KEY)
    assert len(reply.docs) == 1


def test_a_stream_that_turns_to_the_internal_endpoint_is_answered_up_to_it_then_refused(channel):
    """The refusal ends the call from its handler, after the requests before it are answered (Jina reads the stream
    in a task of its own: aborting there left the handler waiting). The gateway serves the next call."""
    stream = iter([data_request(['first']), data_request(['second'], '/encode_unbatched'), data_request(['third'])])
    answered = []
    with pytest.raises(grpc.RpcError) as raised:
        for response in jina_pb2_grpc.JinaRPCStub(channel).Call(stream, metadata=KEY, timeout=60):
            answered.append(response)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (raised.value.code(), raised.value.details())
    assert [len(response.docs) for response in answered] == [1], 'the request before the refused one is answered'
    after = list(jina_pb2_grpc.JinaRPCStub(channel).Call(iter([data_request(['again'])]), metadata=KEY, timeout=60))
    assert [len(response.docs) for response in after] == [1]


IN_ORDER = (*KEY, ('__results_in_order__', 'true'))  # what Jina's Client sends for results_in_order=True


def test_results_in_order_a_refused_first_request_ends_the_call_at_once(channel):
    """Jina, asked for results in order, waited for ever once the requests ended with every response sent."""
    stream = iter([data_request(['x'], '/encode_unbatched'), data_request(['y'])])
    error = refusal(lambda: list(jina_pb2_grpc.JinaRPCStub(channel).Call(stream, metadata=IN_ORDER, timeout=30)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())


def test_results_in_order_a_stream_that_ends_after_its_answer_is_complete(channel):
    """A client whose request stream closes only after its answer arrived (a producer that waits) gets the answer
    and the end of the call, not a call held open until its deadline."""
    answered = threading.Event()

    def producer():
        yield data_request(['only'])
        answered.wait(timeout=60)  # the stream ends once its one answer is back

    replies = []
    for reply in jina_pb2_grpc.JinaRPCStub(channel).Call(producer(), metadata=IN_ORDER, timeout=90):
        replies.append(reply)
        answered.set()
    assert [len(reply.docs) for reply in replies] == [1]


def test_a_message_over_the_limit_is_refused_and_the_next_one_served(channel):
    error = refusal(
        lambda: jina_pb2_grpc.JinaSingleDataRequestRPCStub(channel).process_single_data(
            data_request(['x' * (MAX_MESSAGE + 1)]), metadata=KEY
        )
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
    reply = jina_pb2_grpc.JinaSingleDataRequestRPCStub(channel).process_single_data(data_request(['y']), metadata=KEY)
    assert len(reply.docs) == 1


def test_the_http_port_of_the_same_stack_wants_the_same_key(keyed_stack):
    stack_http = f'http://127.0.0.1:{keyed_stack.http_port}'
    refused = requests.post(f'{stack_http}/v1/embeddings', json={'input': 'x'}, timeout=30)
    assert refused.status_code == 401 and refused.headers['WWW-Authenticate'] == 'Bearer'
    served = requests.post(f'{stack_http}/v1/embeddings', json={'input': 'x'}, timeout=60,
                           headers={'Authorization': f'Bearer {API_KEY}'})  # fmt: skip
    assert served.status_code == 200 and len(served.json()['data'][0]['embedding']) == 384
