"""Export flow.yml with jina's own exporter into compose.yml (CPU) and compose.gpu.yml (the GPU overlay).

jina's `export docker-compose` gives the services, their commands and the GPU reservation; this script then adds
what a production compose file needs and the exporter leaves out (see normalise_*): healthchecks that cost
milliseconds, start-up ordering on health, restart policies, ports on 127.0.0.1, and values overridable from the
environment or `.env`. The GPU overlay is the delta of a second export of the same flow with the encoder on CUDA.

    python scripts/export_compose.py            # write compose.yml and compose.gpu.yml
    python scripts/export_compose.py --check    # exit 1 when the committed files differ from a fresh export
    python scripts/export_compose.py --replicas 2 --output-dir .build/replicas-2   # what `make up REPLICAS=2` runs

With N encoder replicas the exporter writes one service per replica (encoder-rep-0 ...) and gives the gateway all their
addresses; it balances across them and routes around one that is down. In the GPU overlay, replica i holds GPU i.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
FLOW = REPO / 'flow.yml'
GATEWAY_IMAGE = 'sentence-gateway:3.33.1'  # jina's version: the gateway image is jina itself
HEADER = '# generated from flow.yml by {generator} (make export) - do not edit\n'

API_KEY_SECRET = 'sentence_encoder_api_key'

# uses_with keys that the environment (or .env) may override, as ENV_NAME; the flow.yml value is the default.
OVERRIDABLE_USES_WITH = {
    'model': 'ENCODER_MODEL',
    'device': 'ENCODER_DEVICE',
    'batch_size': 'ENCODER_BATCH_SIZE',
    'normalize': 'ENCODER_NORMALIZE',
    'dtype': 'ENCODER_DTYPE',
    'max_docs_per_request': 'ENCODER_MAX_DOCS_PER_REQUEST',
    'backend': 'ENCODER_BACKEND',
}


def run_jina_export(kind: str, flow: dict, out_path: Path, *options: str) -> None:
    """Run `jina export <kind>` (docker-compose or kubernetes) on a flow definition, writing to out_path."""
    flow_path = out_path.parent / 'flow.yml'
    flow_path.write_text(yaml.safe_dump(flow, sort_keys=False))
    # Without JINA_GATEWAY_IMAGE the exporter asks Jina Hub (unreachable offline) which image to use.
    env = {**os.environ, 'JINA_GATEWAY_IMAGE': GATEWAY_IMAGE, 'JINA_HIDE_SURVEY': '1'}
    subprocess.run(
        [sys.executable, '-m', 'jina', 'export', kind, str(flow_path), str(out_path), *options],
        check=True,
        env=env,
        cwd=out_path.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def jina_export(flow: dict) -> dict:
    """Run `jina export docker-compose` on a flow definition and return the compose document it writes."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / 'compose.yml'
        run_jina_export('docker-compose', flow, out_path)
        return yaml.safe_load(out_path.read_text())


def gpu_flow(flow: dict) -> dict:
    """The same flow with its encoder on CUDA, in the GPU image, holding GPUs: what the overlay is the delta to."""
    flow = copy.deepcopy(flow)
    for executor in flow['executors']:
        executor['uses'] = executor['uses'].replace(':cpu', ':gpu')
        executor.setdefault('uses_with', {})['device'] = 'cuda'
        executor['uses_with']['backend'] = 'torch'  # OpenVINO has no NVIDIA GPU support
        executor['gpus'] = 'all'
    return flow


# The same for Jina's dynamic batching of /encode (--uses-dynamic-batching).
OVERRIDABLE_BATCHING = {'preferred_batch_size': 'ENCODER_PREFERRED_BATCH_SIZE', 'timeout': 'ENCODER_BATCH_WAIT_MS'}


def interpolated_json(values: dict, overridable: dict[str, str]) -> str:
    """JSON whose overridable values read the environment (compose interpolation), with these values as defaults."""
    fields = []
    for key, value in values.items():
        literal = json.dumps(value)
        if key in overridable:
            default = value if isinstance(value, str) else literal
            variable = f'${{{overridable[key]}:-{default}}}'
            literal = f'"{variable}"' if isinstance(value, str) else variable
        fields.append(f'"{key}": {literal}')
    return '{' + ', '.join(fields) + '}'


def interpolated_uses_with(command: list[str]) -> list[str]:
    """Make the JSON after --uses-with (and --uses-dynamic-batching) read overridable values from the environment."""
    command = list(command)
    at = command.index('--uses-with') + 1
    command[at] = interpolated_json(json.loads(command[at]), OVERRIDABLE_USES_WITH)
    if '--uses-dynamic-batching' in command:
        at = command.index('--uses-dynamic-batching') + 1
        endpoints = json.loads(command[at])
        command[at] = (
            '{'
            + ', '.join(
                f'{json.dumps(endpoint)}: {interpolated_json(config, OVERRIDABLE_BATCHING)}'
                for endpoint, config in endpoints.items()
            )
            + '}'
        )
    return command


def image_variable(image: str) -> str:
    if image.endswith(':gpu'):
        # CUDA=12 names the CUDA 12 image (sentence-encoder:gpu-cu12, for drivers older than R580) and builds it so;
        # unset, the CUDA 13 one as ever. Never a tag that disagrees with the CUDA its build argument installs.
        return f'${{ENCODER_GPU_IMAGE:-{image}${{CUDA:+-cu}}${{CUDA:-}}}}'
    return f'${{ENCODER_IMAGE:-{image}}}'


def build_section(context: str, dockerfile: str, **args: str) -> dict:
    """How compose builds the image when it is missing (`docker compose up` on a host where a registry is
    reachable: the base image and PyPI). `make build` is the offline way: scripts/build-images.sh, a local base image
    and a wheelhouse served on 127.0.0.1 (BASE_IMAGE and WHEELHOUSE_URL here take the same values)."""
    return {
        'context': context,
        'dockerfile': dockerfile,
        'args': {
            **args,
            'BASE_IMAGE': '${BASE_IMAGE:-python:3.11.14-slim-bookworm}',
            'WHEELHOUSE_URL': '${WHEELHOUSE_URL:-}',
        },
    }


def overridable_env(line: str) -> str:
    """'NAME=value' as 'NAME=${NAME:-value}': compose takes NAME from the environment or .env when set there."""
    name, value = line.split('=', 1)
    return f'{name}=${{{name}:-{value}}}'


def encoder_service(exported: dict, replica: int, context: str) -> dict:
    """The encoder (one replica of it) as the exporter wrote it, plus what production needs."""
    port = exported['command'][exported['command'].index('--port') + 1]
    # flow.yml's `env` (HF_HUB_OFFLINE: 1: the model must already be in the mounted cache, `make model`;
    # OPENVINO_PERFORMANCE_HINT: THROUGHPUT), each overridable from the environment with flow.yml's value as default.
    environment = [overridable_env(line) for line in exported.get('environment', [])]
    service = {
        'image': image_variable(exported['image']),
        'build': build_section(context, 'executor/Dockerfile', DEVICE='cpu'),
        'entrypoint': exported['entrypoint'],
        'command': interpolated_uses_with(exported['command']),
        'environment': [
            'JINA_LOG_LEVEL=${JINA_LOG_LEVEL:-INFO}',
            *environment,
            # Input shapes OpenVINO keeps compiled kernels for (executor.py): bounds the encoder's memory.
            'OPENVINO_SHAPE_CACHE=${OPENVINO_SHAPE_CACHE:-200}',
            # The same bound as the gateway's on a caller's parameters.batch_size (executor/encode_inputs.py).
            'MAX_BATCH_SIZE=${MAX_BATCH_SIZE:-512}',
            # For gRPC callers, as the gateway for HTTP: texts over the model's limit cut (true) or refused (false),
            # and the prompt put before texts when a request names none (empty: the model's default, or none).
            'AUTO_TRUNCATE=${AUTO_TRUNCATE:-true}',
            'ENCODER_DEFAULT_PROMPT_NAME=${ENCODER_DEFAULT_PROMPT_NAME:-}',
            'JINA_OPTOUT_TELEMETRY=1',
        ],
        # Read-only: with HF_HUB_OFFLINE=1 (the default) the encoder only reads the model `make model` put there. For
        # HF_HUB_OFFLINE=0 (downloads at start), MODEL_CACHE_MOUNT_MODE=rw.
        'volumes': [
            volume.replace('~/.cache/huggingface:', '${MODEL_CACHE_DIR:-~/.cache/huggingface}:', 1)
            + ':${MODEL_CACHE_MOUNT_MODE:-ro}'
            for volume in exported['volumes']
        ],
        'healthcheck': {
            # jina's own `jina ping` costs seconds of CPU per probe; a gRPC health check costs milliseconds.
            'test': ['CMD', 'python3', '/app/healthcheck.py', port],
            'interval': '5s',
            'timeout': '5s',
            'retries': 3,
            'start_period': '${ENCODER_START_PERIOD:-180s}',  # model load, longer on a cold disk
        },
        'restart': '${RESTART_POLICY:-unless-stopped}',
        # Room for in-flight requests to finish on `docker compose stop` before SIGKILL (compose's default is 10 s).
        'stop_grace_period': '${STOP_GRACE_PERIOD:-30s}',
        'deploy': resource_limits('ENCODER', memory='4g', pids=1024),
        'networks': exported['networks'],
    }
    locked_down(service)
    # Every replica serves metrics on the same port inside its container; on the host each needs its own.
    variable = 'ENCODER_METRICS_PORT' if replica == 0 else f'ENCODER_METRICS_PORT_{replica}'
    return with_metrics_port(service, exported['command'], variable, host_offset=replica)


def locked_down(service: dict) -> dict:
    """Least privilege for a service that only serves: the root filesystem read-only, no Linux capabilities, and no
    gaining privileges through setuid files. (The cap on processes is in resource_limits.)

    Jina writes at import, in the user's home (~/.cache/jina for its locks, ~/.jina for its hub client): HOME is the
    one writable place, a memory-backed /tmp. (tmpfs mounts at those two paths instead came back owned by root after
    the container restarted, mode=1777 or not, on Docker 20.10, and the restarted encoder could not start.)"""
    service['environment'].append('HOME=/tmp')
    service.update(
        {
            'read_only': True,
            'tmpfs': ['/tmp:mode=1777'],
            'cap_drop': ['ALL'],
            'security_opt': ['no-new-privileges:true'],
        }
    )
    return service


def resource_limits(prefix: str, memory: str, pids: int) -> dict:
    """Memory, CPU and process caps, overridable (<PREFIX>_MEMORY_LIMIT, <PREFIX>_CPUS, 0 meaning no cap, and
    <PREFIX>_PIDS_LIMIT: processes and threads, a few times what the service runs with jina's, grpc's and OpenVINO's
    threads). Compose refuses a top-level pids_limit beside deploy limits, so the cap is here."""
    limits = {
        'memory': f'${{{prefix}_MEMORY_LIMIT:-{memory}}}',
        'cpus': f'${{{prefix}_CPUS:-0}}',
        'pids': f'${{{prefix}_PIDS_LIMIT:-{pids}}}',
    }
    return {'resources': {'limits': limits}}


def with_metrics_port(service: dict, command: list[str], variable: str, host_offset: int = 0) -> dict:
    """Publish jina's Prometheus port on the host's loopback (the exporter publishes it on every interface)."""
    if '--monitoring' in command:
        metrics_port = command[command.index('--port-monitoring') + 1]
        service['ports'] = [*service.get('ports', []), published(metrics_port, variable, host_offset)]
    return service


def published(port: str | int, variable: str, host_offset: int = 0) -> str:
    return f'${{BIND_ADDRESS:-127.0.0.1}}:${{{variable}:-{int(port) + host_offset}}}:{port}'


def gateway_service(exported: dict, encoder_names: list[str], model: str, context: str) -> dict:
    """The gateway as the exporter wrote it, published on 127.0.0.1 and started once the encoder is healthy."""
    command = exported['command']
    at = command.index('--port') + 1
    grpc_port, http_port = command[at], command[at + 1]
    service = {
        'image': f'${{GATEWAY_IMAGE:-{exported["image"]}}}',
        'build': build_section(context, 'gateway/Dockerfile'),
        'entrypoint': exported['entrypoint'],
        'command': command,
        'environment': [
            'JINA_LOG_LEVEL=${JINA_LOG_LEVEL:-INFO}',
            # The served model's name (GET /v1/models) and its tokenizer (usage counts) must match the encoder's.
            f'ENCODER_MODEL=${{ENCODER_MODEL:-{model}}}',
            # The key: from a file (API_KEY_FILE on the host, attached as the compose secret below, so that it stays
            # out of `docker inspect`), or for convenience the environment value API_KEY. Empty when no file is given.
            'API_KEY=${API_KEY:-}',
            'API_KEY_FILE=${API_KEY_FILE:+/run/secrets/api_key}',
            # Without a key, requests under DNS names other than localhost and gateway are refused (DNS rebinding: a
            # web page's own name made to resolve to this host); ALLOWED_HOSTS names others (gateway/http_origin.py).
            'ALLOWED_HOSTS=${ALLOWED_HOSTS:-}',
            'MAX_BODY_BYTES=${MAX_BODY_BYTES:-8388608}',
            'MAX_GRPC_MESSAGE_BYTES=${MAX_GRPC_MESSAGE_BYTES:-8388608}',
            'MAX_INPUTS_PER_REQUEST=${MAX_INPUTS_PER_REQUEST:-2048}',
            # The served model's contract: the truncation policy and the default prompt as the encoder's (flow.yml),
            # and the shorter dimensions served on request for a model trained for them (gateway/model_info.py).
            'AUTO_TRUNCATE=${AUTO_TRUNCATE:-true}',
            'ENCODER_DEFAULT_PROMPT_NAME=${ENCODER_DEFAULT_PROMPT_NAME:-}',
            'MATRYOSHKA_DIMENSIONS=${MATRYOSHKA_DIMENSIONS:-}',
            'ENCODER_DTYPE=${ENCODER_DTYPE:-float32}',  # TEI's /info names the encoder's compute dtype
            # Bounds on what clients control (gateway/settings.py; docs/reliability.md has why each default).
            'MAX_BATCH_SIZE=${MAX_BATCH_SIZE:-512}',
            'MAX_CONCURRENT_REQUESTS=${MAX_CONCURRENT_REQUESTS:-512}',
            'MAX_QUEUED_TEXTS=${MAX_QUEUED_TEXTS:-4096}',
            'MAX_BODY_BYTES_IN_FLIGHT=${MAX_BODY_BYTES_IN_FLIGHT:-67108864}',
            'MAX_CONNECTIONS=${MAX_CONNECTIONS:-1024}',
            'MAX_HEADER_BYTES=${MAX_HEADER_BYTES:-16384}',
            'HEADER_TIMEOUT_S=${HEADER_TIMEOUT_S:-5}',
            'BODY_TIMEOUT_S=${BODY_TIMEOUT_S:-30}',
            # On SIGTERM, requests in flight get this long to finish (under stop_grace_period, then SIGKILL).
            'DRAIN_TIMEOUT_S=${DRAIN_TIMEOUT_S:-20}',
            # Joining concurrent HTTP requests into one encoder request (gateway/coalescer.py; README, Configuration).
            'HTTP_BATCH_MAX_DOCS=${HTTP_BATCH_MAX_DOCS:-64}',
            'HTTP_BATCH_WAIT_MS=${HTTP_BATCH_WAIT_MS:-20}',
            'HTTP_BATCHES_IN_FLIGHT=${HTTP_BATCHES_IN_FLIGHT:-1}',
            'ACCESS_LOG=${ACCESS_LOG:-0}',
            'JINA_OPTOUT_TELEMETRY=1',
        ],
        # Read-only: the gateway only reads the tokenizer from the cache the encoder's weights come from.
        'volumes': ['${MODEL_CACHE_DIR:-~/.cache/huggingface}:/home/gateway/.cache/huggingface:ro'],
        'secrets': [{'source': API_KEY_SECRET, 'target': 'api_key'}],
        'ports': [published(grpc_port, 'GRPC_PORT'), published(http_port, 'HTTP_PORT')],
        'depends_on': {name: {'condition': 'service_healthy'} for name in encoder_names},
        'healthcheck': {
            'test': ['CMD', 'python3', '/app/healthcheck.py', http_port],
            'interval': '5s',
            'timeout': '5s',
            'retries': 3,
            'start_period': '60s',
        },
        'restart': '${RESTART_POLICY:-unless-stopped}',
        'stop_grace_period': '${STOP_GRACE_PERIOD:-30s}',
        'deploy': resource_limits('GATEWAY', memory='1g', pids=512),
        'networks': exported['networks'],
    }
    locked_down(service)
    return with_metrics_port(service, command, 'GATEWAY_METRICS_PORT')


def with_replicas(flow: dict, replicas: int | None) -> dict:
    if replicas is None:
        return flow
    if replicas < 1:
        sys.exit(f'--replicas must be at least 1, not {replicas}')
    flow = copy.deepcopy(flow)
    flow['executors'][0]['replicas'] = replicas
    return flow


def gpu_reservation(device: dict, replica: int, replicas: int) -> dict:
    """One replica holds GPU_COUNT GPUs (all by default); with N replicas, replica i holds GPU i only."""
    device = copy.deepcopy(device)
    if replicas == 1:
        device['count'] = '${GPU_COUNT:-all}'
    else:
        device.pop('count', None)  # compose refuses count beside device_ids
        device['device_ids'] = [str(replica)]
    return device


def build_compose_files(flow: dict, context: str = '.') -> tuple[dict, dict]:
    """The CPU compose file and the GPU overlay; `context` is the repository, relative to where they are written."""
    cpu, gpu = jina_export(flow), jina_export(gpu_flow(flow))
    encoder_names = [name for name in cpu['services'] if name != 'gateway']
    services = {name: encoder_service(cpu['services'][name], i, context) for i, name in enumerate(encoder_names)}
    model = flow['executors'][0].get('uses_with', {}).get('model', 'sentence-transformers/all-MiniLM-L6-v2')
    services['gateway'] = gateway_service(cpu['services']['gateway'], encoder_names, model, context)
    compose = {
        'name': 'sentence-encoder',
        'services': services,
        'networks': cpu['networks'],
        # Compose bind-mounts a file secret at /run/secrets/<target>. Without API_KEY_FILE, /dev/null: always there,
        # and the gateway does not read it (its API_KEY_FILE is empty then).
        'secrets': {API_KEY_SECRET: {'file': '${API_KEY_FILE:-/dev/null}'}},
    }

    overlay_services = {}
    for i, name in enumerate(encoder_names):
        exported = gpu['services'][name]
        devices = exported['deploy']['resources']['reservations']['devices']
        overlay_services[name] = {
            'image': image_variable(exported['image']),
            # merged into the CPU file's build section: CUDA torch, of the CUDA major the image's tag names
            'build': {'args': {'DEVICE': 'gpu', 'CUDA': '${CUDA:-13}'}},
            'command': interpolated_uses_with(exported['command']),
            'deploy': {
                'resources': {'reservations': {'devices': [gpu_reservation(d, i, len(encoder_names)) for d in devices]}}
            },
        }
    return compose, {'services': overlay_services}


def render(document: dict, title: str, generator: str = 'scripts/export_compose.py') -> str:
    return HEADER.format(generator=generator) + f'# {title}\n' + yaml.safe_dump(document, sort_keys=False, width=1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='compare with the committed files instead of writing')
    parser.add_argument('--replicas', type=int, help="encoder replicas (default: flow.yml's)")
    parser.add_argument('--output-dir', type=Path, default=REPO, help='where to write (default: the repository)')
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    context = os.path.relpath(REPO, args.output_dir.resolve())
    compose, overlay = build_compose_files(with_replicas(yaml.safe_load(FLOW.read_text()), args.replicas), context)
    outputs = {
        args.output_dir / 'compose.yml': render(compose, 'The CPU stack: make up, or docker compose up -d --wait'),
        args.output_dir / 'compose.gpu.yml': render(
            overlay, 'GPU overlay: make up-gpu, or docker compose -f compose.yml -f compose.gpu.yml up -d --wait'
        ),
    }
    write_or_check(outputs, args.check, 'make export')


def write_or_check(outputs: dict[Path, str], check: bool, command: str) -> None:
    """Write the generated files, or with check exit 1 when the committed ones differ from them."""

    def shown(path: Path) -> str:
        return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)

    stale = [shown(path) for path, text in outputs.items() if not path.exists() or path.read_text() != text]
    if check:
        if stale:
            sys.exit(f'{", ".join(stale)} differ from a fresh export of flow.yml: run `{command}` and commit them')
        print(f'{", ".join(shown(path) for path in outputs)}: in sync with flow.yml')
        return
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f'wrote {", ".join(shown(path) for path in outputs)}' + (f' (changed: {", ".join(stale)})' if stale else ''))


if __name__ == '__main__':
    main()
