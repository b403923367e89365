"""AUTO_TRUNCATE=false on the real stack (the keyed stack runs with it), over gRPC, where the encoder's dynamic
batching joins concurrent clients' requests: a client's text over the model's limit fails that client's request,
naming its doc, and never a request that was joined with it."""

from __future__ import annotations

import pytest
import requests
from compose_stack import KEYED_STACK_API_KEY
from docarray import DocList
from docarray.documents import TextDoc
from jina import Client

pytestmark = pytest.mark.e2e

KEY = (('authorization', f'Bearer {KEYED_STACK_API_KEY}'),)
LONG_TEXT = ' '.join(['word'] * 300)  # 302 tokens: over all-MiniLM-L6-v2's 256


def test_a_long_text_fails_only_its_own_request_in_a_dynamic_batch(keyed_stack):
    """One doc per request, streamed at once: the encoder joins them into dynamic batches (10 ms, 32 docs), so the
    long doc's request shares a batch with others. Only it may fail."""
    ids = [f'short-{n}' for n in range(12)]
    ids.insert(6, 'long')
    docs = DocList[TextDoc]([TextDoc(id=i, text=LONG_TEXT if i == 'long' else f'text {i}') for i in ids])
    outcomes: dict[str, tuple[int, str]] = {}

    def note(response) -> None:
        status = response.header.status
        for doc in response.docs:
            outcomes[doc.id] = (status.code, status.description)

    client = Client(host='127.0.0.1', port=keyed_stack.grpc_port, protocol='grpc')
    client.post('/encode', docs, request_size=1, metadata=KEY, on_always=note, continue_on_error=True)
    assert set(outcomes) == set(ids)
    failed = {doc_id: description for doc_id, (code, description) in outcomes.items() if code != 0}
    assert list(failed) == ['long'], failed
    assert 'docs long (302 tokens) are longer than the 256 tokens the model reads' in failed['long']


def test_http_clients_get_the_refusal_by_index(keyed_stack):
    refused = requests.post(
        f'http://127.0.0.1:{keyed_stack.http_port}/v1/embeddings', json={'input': ['fine', LONG_TEXT]},
        headers={'Authorization': f'Bearer {KEYED_STACK_API_KEY}'}, timeout=60,
    )  # fmt: skip
    assert refused.status_code == 400
    assert 'texts [1] (302 tokens) are longer than the 256 tokens the model reads' in refused.json()['error']['message']
