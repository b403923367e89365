"""A real local Jina Flow: gateway speaking gRPC and HTTP on free 127.0.0.1 ports, the real executor behind it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from docarray import DocList
from docarray.documents import TextDoc
from helpers import assert_same_embeddings, free_port
from jina import Client, Flow
from jina.excepts import RuntimeFailToStart

from executor import SentenceEncoder


@pytest.fixture(scope='module')
def flow_ports():
    grpc_port, http_port = free_port(), free_port()
    flow = Flow(protocol=['grpc', 'http'], port=[grpc_port, http_port], host='127.0.0.1').add(
        uses=SentenceEncoder, uses_with={'device': 'cpu'}
    )
    with flow:
        yield grpc_port, http_port


def test_grpc_client_gets_1000_docs_back_in_order(flow_ports, reference_model):
    grpc_port, _ = flow_ports
    texts = [f'this is sentence number {i}' for i in range(1_000)]
    sent = DocList[TextDoc]([TextDoc(text=text) for text in texts])
    client = Client(host='127.0.0.1', port=grpc_port, protocol='grpc')
    # Dynamic batching finishes requests out of order: results_in_order puts them back as sent.
    docs = client.post(on='/encode', inputs=sent, request_size=32, return_type=DocList[TextDoc], results_in_order=True)
    assert list(docs.id) == list(sent.id)
    assert_same_embeddings(np.stack(docs.embedding), reference_model.encode(texts))


def test_http_post_encode_with_curl_shaped_json(flow_ports, reference_model):
    _, http_port = flow_ports
    response = requests.post(
        f'http://127.0.0.1:{http_port}/encode',
        json={'data': [{'text': 'hello world'}, {'text': 'good night'}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    data = response.json()['data']
    assert [doc['text'] for doc in data] == ['hello world', 'good night']
    embeddings = np.array([doc['embedding'] for doc in data])
    assert embeddings.shape == (2, 384)
    assert_same_embeddings(embeddings, reference_model.encode(['hello world', 'good night']))


def test_a_rejected_request_names_the_doc_and_the_next_request_works(flow_ports, reference_model):
    grpc_port, http_port = flow_ports
    response = requests.post(
        f'http://127.0.0.1:{http_port}/encode', json={'data': [{'text': 'ok'}, {'id': 'blank', 'text': ''}]}, timeout=30
    )
    assert 'empty text: ids blank' in response.text
    client = Client(host='127.0.0.1', port=grpc_port, protocol='grpc')
    docs = client.post(
        on='/encode', inputs=DocList[TextDoc]([TextDoc(text='still serving')]), return_type=DocList[TextDoc]
    )
    assert_same_embeddings(np.stack(docs.embedding), reference_model.encode(['still serving']))


def test_a_rejected_request_does_not_harm_the_requests_batched_with_it(flow_ports, reference_model):
    """Jina's dynamic batching joins concurrent requests; the bad one is refused before it joins a batch."""
    _, http_port = flow_ports

    def post(body: dict) -> requests.Response:
        return requests.post(f'http://127.0.0.1:{http_port}/encode', json=body, timeout=60)

    good = [{'data': [{'id': f'good-{i}', 'text': f'concurrent text {i}'}]} for i in range(24)]
    bad = {'data': [{'id': 'fine', 'text': 'fine'}, {'id': 'blank', 'text': '   '}]}
    with ThreadPoolExecutor(max_workers=25) as pool:
        replies = list(pool.map(post, [*good[:12], bad, *good[12:]]))
    refused = replies.pop(12)
    assert refused.status_code == 422 and 'empty text: ids blank' in refused.text
    assert [reply.status_code for reply in replies] == [200] * 24
    texts = [reply.json()['data'][0]['text'] for reply in replies]
    assert texts == [body['data'][0]['text'] for body in good]
    embeddings = np.array([reply.json()['data'][0]['embedding'] for reply in replies])
    assert_same_embeddings(embeddings, reference_model.encode(texts))


def test_a_request_bigger_than_the_batch_is_encoded_whole(flow_ports, reference_model):
    grpc_port, _ = flow_ports
    texts = [f'doc {i}' for i in range(2_001)]
    sent = DocList[TextDoc]([TextDoc(text=text) for text in texts])
    client = Client(host='127.0.0.1', port=grpc_port, protocol='grpc')
    docs = client.post(on='/encode', inputs=sent, request_size=2_001, return_type=DocList[TextDoc])
    assert list(docs.id) == list(sent.id)
    assert_same_embeddings(np.stack(docs.embedding), reference_model.encode(texts, batch_size=256))


def test_a_missing_gpu_fails_the_flow_start():
    flow = Flow(port=free_port(), host='127.0.0.1').add(
        uses=SentenceEncoder, uses_with={'device': 'cuda'}, timeout_ready=60_000
    )
    with pytest.raises(RuntimeFailToStart):
        with flow:
            pass


def test_an_empty_request_is_answered_at_once(flow_ports):
    """Jina's batch queue alone would never answer it (see executor.py)."""
    _, http_port = flow_ports
    reply = requests.post(f'http://127.0.0.1:{http_port}/encode', json={'data': []}, timeout=20)
    assert reply.status_code == 200 and reply.json()['data'] == []
