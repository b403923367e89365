"""The compose stack, built and run for real: curl and jina's gRPC Client against 127.0.0.1, the model cache mount,
the GPU overlay, and secure defaults."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from compose_stack import Stack, stack_env
from docarray import DocList
from docarray.documents import TextDoc
from helpers import REPO, assert_same_embeddings
from jina import Client

pytestmark = pytest.mark.e2e


def curl_encode(port: int, body: str) -> dict:
    """The README's curl line, run as written (only the port differs)."""
    result = subprocess.run(
        ['curl', '-sS', '--max-time', '60', '-X', 'POST', f'http://127.0.0.1:{port}/encode',
         '-H', 'Content-Type: application/json', '-d', body],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_curl_returns_the_in_process_embedding(stack: Stack, reference_model):
    reply = curl_encode(stack.http_port, '{"data":[{"text":"hello world"}]}')
    embedding = np.array(reply['data'][0]['embedding'])
    assert embedding.shape == (384,)
    assert_same_embeddings([embedding], reference_model.encode(['hello world']))


def test_grpc_client_1000_docs_all_back_in_order(stack: Stack, reference_model):
    texts = [f'document number {i} about embeddings' for i in range(1_000)]
    sent = DocList[TextDoc]([TextDoc(text=text) for text in texts])
    client = Client(host='127.0.0.1', port=stack.grpc_port, protocol='grpc')
    docs = client.post(on='/encode', inputs=sent, request_size=32, return_type=DocList[TextDoc], results_in_order=True)
    assert list(docs.id) == list(sent.id)
    assert list(docs.text) == texts
    assert_same_embeddings(np.stack(docs.embedding), reference_model.encode(texts))


def test_the_model_came_through_the_bind_mount_offline(stack: Stack):
    environment = stack.compose('exec', '-T', 'encoder', 'printenv', 'HF_HUB_OFFLINE').stdout.strip()
    assert environment == '1', 'the encoder must not be able to download: the model can only come from the mount'
    listing = stack.compose('exec', '-T', 'encoder', 'ls', '/home/encoder/.cache/huggingface/hub').stdout
    assert 'models--sentence-transformers--all-MiniLM-L6-v2' in listing


def test_containers_run_as_non_root_and_publish_on_loopback(stack: Stack):
    for service in ('encoder', 'gateway'):
        uid = stack.compose('exec', '-T', service, 'id', '-u').stdout.strip()
        assert uid != '0', f'{service} runs as root'
    published = stack.compose('port', 'gateway', '8080').stdout.strip()
    assert published.startswith('127.0.0.1:'), published


def test_containers_are_locked_down_and_still_serve(stack: Stack, reference_model):
    """Read-only root, scratch only on tmpfs, no capabilities, no privilege gain, a process cap, the model cache
    mounted read-only, Jina's telemetry off: read back from the running containers, which answered the other tests."""
    for service, pids in (('encoder', 1024), ('gateway', 512)):
        inspected = stack.container(service).attrs
        host = inspected['HostConfig']
        assert host['ReadonlyRootfs'] is True, service
        assert host['Tmpfs'] == {'/tmp': 'mode=1777'}, service  # and HOME=/tmp, where Jina writes
        assert host['CapDrop'] == ['ALL'] and not host['CapAdd'], service
        assert 'no-new-privileges:true' in host['SecurityOpt'], service
        assert host['PidsLimit'] == pids, service
        (cache,) = [m for m in inspected['Mounts'] if m['Destination'] == f'/home/{service}/.cache/huggingface']
        assert cache['RW'] is False, f'{service} can write to the host model cache'
        assert {'JINA_OPTOUT_TELEMETRY=1', 'HOME=/tmp'} <= set(inspected['Config']['Env']), service
        refused = stack.compose('exec', '-T', service, 'touch', f'/home/{service}/written', check=False)
        assert refused.returncode != 0 and 'Read-only file system' in refused.stderr, service
    reply = curl_encode(stack.http_port, '{"data":[{"text":"locked down"}]}')
    assert_same_embeddings([reply['data'][0]['embedding']], reference_model.encode(['locked down']))


def test_gpu_overlay_reserves_nvidia_devices_for_the_encoder_only(tmp_path):
    overlay = Stack(
        project='sentence-encoder-config', env_overrides=stack_env(tmp_path), files=('compose.yml', 'compose.gpu.yml')
    )
    config = json.loads(overlay.compose('config', '--format', 'json').stdout)
    encoder, gateway = config['services']['encoder'], config['services']['gateway']
    devices = encoder['deploy']['resources']['reservations']['devices']
    assert devices == [{'driver': 'nvidia', 'count': -1, 'capabilities': ['gpu']}]  # count 'all'
    assert 'reservations' not in gateway.get('deploy', {}).get('resources', {})
    assert encoder['image'] == 'sentence-encoder:gpu'
    assert encoder['build']['args']['CUDA'] == '13'
    assert '"device": "cuda"' in ' '.join(encoder['command'])
    # everything else about the encoder comes from compose.yml unchanged
    assert encoder['healthcheck']['test'][-2:] == ['/app/healthcheck.py', '8081']
    assert encoder['volumes'][0]['target'] == '/home/encoder/.cache/huggingface'


def test_compose_builds_missing_images_from_the_repository(tmp_path):
    """`docker compose -f compose.yml -f compose.gpu.yml up` builds a missing image (CUDA torch for the overlay)
    instead of failing to pull it; `make build` is the offline way."""
    for files, device in ((('compose.yml',), 'cpu'), (('compose.yml', 'compose.gpu.yml'), 'gpu')):
        stack = Stack(project='sentence-encoder-config', env_overrides=stack_env(tmp_path), files=files)
        services = json.loads(stack.compose('config', '--format', 'json').stdout)['services']
        encoder, gateway = services['encoder']['build'], services['gateway']['build']
        assert Path(encoder['context']) == Path(gateway['context']) == REPO
        assert (REPO / encoder['dockerfile']).is_file() and (REPO / gateway['dockerfile']).is_file()
        assert encoder['args']['DEVICE'] == device
        assert encoder['args']['BASE_IMAGE'] == gateway['args']['BASE_IMAGE'] == 'python:3.11.14-slim-bookworm'


@pytest.mark.parametrize(
    ('cuda', 'image', 'build_arg'),
    [
        ('12', 'sentence-encoder:gpu-cu12', '12'),
        ('13', 'sentence-encoder:gpu-cu13', '13'),
        (None, 'sentence-encoder:gpu', '13'),
    ],
)
def test_cuda_names_the_gpu_image_and_builds_it_so(tmp_path, cuda, image, build_arg):
    """CUDA=12 is the one setting for a driver older than R580 with plain docker compose: the image's tag and the CUDA
    its build installs never disagree (scripts/build-images.sh tags the CUDA 13 image :gpu and :gpu-cu13)."""
    overrides = {'CUDA': cuda or ''}  # empty: as unset
    overlay = Stack(
        project='sentence-encoder-config', env_overrides=stack_env(tmp_path, **overrides),
        files=('compose.yml', 'compose.gpu.yml'),
    )  # fmt: skip
    encoder = json.loads(overlay.compose('config', '--format', 'json').stdout)['services']['encoder']
    assert (encoder['image'], encoder['build']['args']['CUDA']) == (image, build_arg)
    assert encoder['build']['args']['DEVICE'] == 'gpu'


def test_gpu_count_is_configurable(tmp_path):
    overlay = Stack(
        project='sentence-encoder-config',
        env_overrides=stack_env(tmp_path, GPU_COUNT='2'),
        files=('compose.yml', 'compose.gpu.yml'),
    )
    config = json.loads(overlay.compose('config', '--format', 'json').stdout)
    assert config['services']['encoder']['deploy']['resources']['reservations']['devices'][0]['count'] == 2


def test_services_run_with_memory_limits_and_a_stop_grace_period(stack: Stack, tmp_path):
    for service, limit in (('encoder', 4 * 1024**3), ('gateway', 1024**3)):
        inspected = stack.container(service).attrs
        assert inspected['HostConfig']['Memory'] == limit, service
        assert inspected['Config'].get('StopTimeout') == 30, service
    overridden = Stack(
        project='sentence-encoder-config',
        env_overrides=stack_env(tmp_path, ENCODER_MEMORY_LIMIT='2g', ENCODER_CPUS='1.5'),
    )
    limits = json.loads(overridden.compose('config', '--format', 'json').stdout)['services']['encoder']['deploy']
    assert limits['resources']['limits'] == {'memory': str(2 * 1024**3), 'cpus': 1.5, 'pids': 1024}
