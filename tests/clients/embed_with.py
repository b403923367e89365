"""Embed texts and a query through one framework's own client, the way the README's "From your framework" section
shows it, and print the vectors as JSON. Run by tests/e2e/test_framework_clients.py with the clients' environment
(.venv-clients: these frameworks need pydantic 2, Jina needs pydantic 1):

    .venv-clients/bin/python tests/clients/embed_with.py CLIENT BASE_URL API_KEY < {"texts": [...], "query": "..."}

prints {"texts": [[...], ...], "query": [...]}.
"""

from __future__ import annotations

import json
import sys

MODEL = 'sentence-transformers/all-MiniLM-L6-v2'


def with_openai(base: str, key: str, texts: list[str], query: str):
    from openai import OpenAI

    client = OpenAI(base_url=f'{base}/v1', api_key=key)
    documents = client.embeddings.create(model=MODEL, input=texts)
    single = client.embeddings.create(model=MODEL, input=query)
    return [item.embedding for item in documents.data], single.data[0].embedding


def with_langchain(base: str, key: str, texts: list[str], query: str):
    from langchain_openai import OpenAIEmbeddings

    # check_embedding_ctx_length=False: send the texts, not tiktoken's ids of them (which this server refuses).
    embeddings = OpenAIEmbeddings(model=MODEL, base_url=f'{base}/v1', api_key=key, check_embedding_ctx_length=False)
    return embeddings.embed_documents(texts), embeddings.embed_query(query)


def with_llama_index_openai(base: str, key: str, texts: list[str], query: str):
    from llama_index.embeddings.openai import OpenAIEmbedding

    # LlamaIndex accepts only OpenAI's model names here; the server answers with its own model whatever is named.
    embeddings = OpenAIEmbedding(model_name='text-embedding-3-small', api_base=f'{base}/v1', api_key=key)
    return embeddings.get_text_embedding_batch(texts), embeddings.get_query_embedding(query)


def with_haystack(base: str, key: str, texts: list[str], query: str):
    from haystack import Document
    from haystack.components.embedders import OpenAIDocumentEmbedder, OpenAITextEmbedder
    from haystack.utils import Secret

    settings = {'api_key': Secret.from_token(key), 'api_base_url': f'{base}/v1', 'model': MODEL}
    documents = OpenAIDocumentEmbedder(**settings, progress_bar=False).run([Document(content=t) for t in texts])
    single = OpenAITextEmbedder(**settings).run(query)
    return [document.embedding for document in documents['documents']], single['embedding']


def with_llama_index_tei(base: str, key: str, texts: list[str], query: str):
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    # TEI's API (POST /embed); the client sends `Authorization: Bearer <auth_token>`.
    embeddings = TextEmbeddingsInference(model_name=MODEL, base_url=base, auth_token=key)
    return embeddings.get_text_embedding_batch(texts), embeddings.get_query_embedding(query)


CLIENTS = {
    'openai': with_openai,
    'langchain-openai': with_langchain,
    'llama-index-openai': with_llama_index_openai,
    'haystack': with_haystack,
    'llama-index-tei': with_llama_index_tei,
}


def main() -> None:
    client, base, key = sys.argv[1:4]
    request = json.load(sys.stdin)
    texts, query = CLIENTS[client](base, key, request['texts'], request['query'])
    json.dump({'texts': [list(map(float, vector)) for vector in texts], 'query': list(map(float, query))}, sys.stdout)


if __name__ == '__main__':
    main()
