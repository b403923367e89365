# Sentence embeddings with Jina + Docker Compose. `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
# The frameworks' embedding clients (LangChain, LlamaIndex, Haystack: pydantic 2) for their tests, apart from .venv.
VENV_CLIENTS ?= .venv-clients
# REPLICAS=N runs N encoder replicas: flow.yml exported with N into .build/replicas-N/ (docs/scaling.md). For up-gpu,
# GPU_COUNT=N (a number) means one replica per GPU, so REPLICAS defaults to it there.
REPLICAS ?= $(if $(filter up-gpu,$(MAKECMDGOALS)),$(filter-out all,$(GPU_COUNT)))
export COMPOSE_DIR := $(if $(filter-out 1,$(REPLICAS)),.build/replicas-$(REPLICAS),.)
COMPOSE := docker compose -f $(COMPOSE_DIR)/compose.yml
COMPOSE_GPU := $(COMPOSE) -f $(COMPOSE_DIR)/compose.gpu.yml
PYTEST_ARGS ?=

.PHONY: help install model engine build build-gpu up up-gpu swarm-up swarm-down down logs ps export k8s smoke bench soak test test-gpu-image mutants lint

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Environment
install: $(VENV)/.installed $(VENV_CLIENTS)/.installed ## Create .venv (CPU torch: tests, scripts, export) and .venv-clients, pinned

# Only the tests, the benchmark, `make export` / `make k8s` and the offline image build's wheelhouse use it: `make up`
# with current images runs its Python in the tools image.
$(VENV)/.installed: requirements-dev.txt executor/requirements.txt executor/requirements-openvino.txt constraints.txt
	@[ -n "$(PYTHON)" ] && $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	  echo "make install needs Python 3.11 (found: $(or $(PYTHON),none)): make install PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check "pip<26"
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(VENV_PYTHON) gateway/patch_jina.py
	@touch $@

$(VENV_CLIENTS)/.installed: requirements-clients.txt constraints-clients.txt | $(VENV)/.installed
	$(PYTHON) -m venv $(VENV_CLIENTS)
	$(VENV_CLIENTS)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-clients.txt \
	  -c constraints-clients.txt
	@touch $@

model: build ## Put the model (ENCODER_MODEL) and its OpenVINO IR into the host's HF cache (MODEL_CACHE_DIR), once
	scripts/in-tools.sh scripts/fill_model_cache.py $(if $(ENCODER_MODEL),--model $(ENCODER_MODEL))

engine: ## Install and start a Docker engine with Compose v2 if there is none (Debian 12/13, root)
	@docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 || scripts/install-docker.sh

##@ Images
build: engine ## Build the CPU encoder, gateway and tools images (an image built from the same sources is kept)
	scripts/build-images.sh cpu gateway tools

build-gpu: engine ## Build the GPU encoder (CUDA 13 torch; CUDA=12 for the CUDA 12 one) and the gateway images
	scripts/build-images.sh gpu gateway

##@ Stack
up: build model $(COMPOSE_DIR)/compose.yml ## Start the CPU stack (REPLICAS=N), wait until healthy, print a curl line
	scripts/up.sh cpu

# The image is the one the host's driver runs (scripts/choose-gpu-image.sh: CUDA 13 on R580+, CUDA 12 on R525+);
# CUDA=12|13 overrides. The chosen CUDA then names the image for the build and for compose alike: scripts/up-gpu.sh.
up-gpu: engine ## Start the GPU stack (NVIDIA driver + nvidia-container-toolkit; GPU_COUNT=N; CUDA=12|13)
	scripts/up-gpu.sh $(COMPOSE_DIR)/compose.yml

.build/replicas-%/compose.yml: flow.yml scripts/export_compose.py | build
	scripts/in-tools.sh scripts/export_compose.py --replicas $* --output-dir $(@D)

swarm-up: build model ## Deploy the stack to this engine's swarm (a single-node one if none; API_KEY=..., REPLICAS=N)
	scripts/swarm-up.sh

swarm-down: ## Remove the swarm stack and its API key and TLS secrets
	scripts/swarm-down.sh

down: ## Stop and remove the stack
	$(COMPOSE_GPU) down --remove-orphans

logs: ## Follow the stack's logs
	$(COMPOSE) logs -f

ps: ## Show the stack's containers and their health
	$(COMPOSE) ps

smoke: ## Send one curl request to the running stack and check the embedding
	scripts/smoke.sh

bench: install ## Benchmark the running stack against in-process encoding and infinity-emb; writes docs/benchmarks.*
	HF_HUB_OFFLINE=1 $(VENV_PYTHON) scripts/bench.py --infinity --markdown docs/benchmarks.md --chart docs/benchmarks.png

soak: install ## Load the running stack: 64 mixed gRPC/HTTP clients for 5 minutes (CLIENTS=, DURATION=)
	HF_HUB_OFFLINE=1 $(VENV_PYTHON) scripts/soak.py --clients $(or $(CLIENTS),64) --duration $(or $(DURATION),300)

##@ Development
export: install ## Regenerate compose.yml, compose.gpu.yml and swarm.yml from flow.yml with jina's exporter
	$(VENV_PYTHON) scripts/export_compose.py
	$(VENV_PYTHON) scripts/export_swarm.py

k8s: install ## Export flow.yml to Kubernetes manifests in k8s/ (kubectl apply -k k8s/, or k8s/gpu/)
	$(VENV_PYTHON) scripts/export_k8s.py

# One pytest process per tier: a local Flow forks its executor, and a child forked from a process that already ran
# OpenVINO (the unit tier) hangs compiling its model; the e2e tier's grpc.aio threads break forks too. Every tier runs
# even when one fails; the target fails if any did. Each tier has its own pytest-timeout per test body, a few times
# its slowest test on these 2 cores (unit 62 s, flow 13 s, e2e 115 s), so a hung server fails within minutes.
# The e2e tier builds both GPU images too (CUDA 12 and 13, a few GB of wheels each): `make test-gpu-image` runs only
# those. --durations puts the slowest steps in every run's log.
TEST_TIERS := tests/unit tests/flow tests/e2e tests/swarm

test: engine install ## Run all tests: unit, local Flow, the real compose stack and a 3-node swarm (builds the images)
	@failed=""; for tier in $(TEST_TIERS); do \
	  case $$tier in tests/unit) limit=300;; tests/flow) limit=600;; *) limit=1200;; esac; \
	  echo "=== $$tier (pytest-timeout $${limit}s a test)"; \
	  $(VENV_PYTHON) -m pytest $$tier --timeout=$$limit --durations=15 $(PYTEST_ARGS) \
	    || failed="$$failed $$tier"; \
	done; [ -z "$$failed" ] || { echo "failed tiers:$$failed"; exit 1; }

test-gpu-image: engine install ## Build both GPU encoder images and check them (no GPU needed; part of make test)
	$(VENV_PYTHON) -m pytest tests/e2e -m gpu_image --timeout=1200 $(PYTEST_ARGS)

mutants: install ## Mutation testing (mutmut) of the unit-tested modules; scores in .build/mutation/scores.json
	$(VENV_PYTHON) scripts/mutants.py $(MODULES)

lint: install ## Lint and check formatting with ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
