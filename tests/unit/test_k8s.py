"""`make k8s` output: in sync with flow.yml, valid against the Kubernetes schemas (strict, offline), and complete
(probes, model cache claim, limits, non-root, one GPU per replica in the GPU overlay). No cluster runs here: the
manifests are validated, not applied."""

from __future__ import annotations

import copy
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from helpers import REPO

K8S = REPO / 'k8s'
KUBERNETES_VERSION = '1.37.0'


def documents(path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def base_documents() -> list[dict]:
    kustomization = documents(K8S / 'kustomization.yaml')[0]
    return [doc for resource in kustomization['resources'] for doc in documents(K8S / resource)]


def kind(name: str) -> dict:
    return next(doc for doc in base_documents() if doc['kind'] == name)


def test_k8s_is_in_sync_with_flow_yml():
    result = subprocess.run(
        [sys.executable, str(REPO / 'scripts' / 'export_k8s.py'), '--check'], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('document', base_documents(), ids=lambda d: f'{d["kind"]}/{d["metadata"]["name"]}')
def test_every_manifest_validates_strictly(document):
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_no_resource_needs_a_crd():
    assert {doc['apiVersion'] for doc in base_documents()} <= {'v1', 'apps/v1', 'networking.k8s.io/v1'}


def test_pods_run_as_non_root_with_probes_and_limits():
    for workload in (kind('StatefulSet'), kind('Deployment')):
        pod = workload['spec']['template']['spec']
        assert pod['securityContext']['runAsNonRoot'] is True and pod['securityContext']['runAsUser'] == 1000
        assert pod['terminationGracePeriodSeconds'] > 20, 'above the gateway drain (DRAIN_TIMEOUT_S=20)'
        (container,) = pod['containers']
        assert container['securityContext']['allowPrivilegeEscalation'] is False
        assert {'startupProbe', 'readinessProbe', 'livenessProbe'} <= container.keys()
        assert 'jina' not in str(container['livenessProbe']), 'jina ping costs seconds of CPU per probe'
        assert container['resources']['requests'] and container['resources']['limits']['memory']


def test_pods_are_locked_down_as_in_compose():
    """Read-only root with one writable emptyDir at /tmp (HOME), no capabilities, no service-account token."""
    for workload in (kind('StatefulSet'), kind('Deployment')):
        pod = workload['spec']['template']['spec']
        (container,) = pod['containers']
        assert pod['automountServiceAccountToken'] is False
        assert container['securityContext'] == {
            'allowPrivilegeEscalation': False,
            'capabilities': {'drop': ['ALL']},
            'readOnlyRootFilesystem': True,
        }
        assert {'name': 'tmp', 'mountPath': '/tmp'} in container['volumeMounts']
        assert {'name': 'tmp', 'emptyDir': {'sizeLimit': '256Mi'}} in pod['volumes']
    for configmap in (doc for doc in base_documents() if doc['kind'] == 'ConfigMap'):
        assert configmap['data']['HOME'] == '/tmp' and configmap['data']['JINA_OPTOUT_TELEMETRY'] == '1'


def test_the_gateway_reads_its_api_key_from_a_secret_file_and_none_is_committed():
    pod = kind('Deployment')['spec']['template']['spec']
    (container,) = pod['containers']
    secret = next(volume for volume in pod['volumes'] if volume['name'] == 'api-key')['secret']
    assert secret['secretName'] == 'sentence-encoder-api-key' and not secret.get('optional')
    assert {'name': 'api-key', 'mountPath': '/run/secrets', 'readOnly': True} in container['volumeMounts']
    gateway_config = next(
        d for d in base_documents() if d['kind'] == 'ConfigMap' and d['metadata']['name'] == 'gateway-configmap'
    )
    assert gateway_config['data']['API_KEY_FILE'] == '/run/secrets/api_key'
    assert 'API_KEY' not in gateway_config['data']
    assert all(doc['kind'] != 'Secret' for doc in base_documents()), 'the operator creates the key (README)'


def network_policy(name: str) -> dict:
    return next(doc for doc in base_documents() if doc['kind'] == 'NetworkPolicy' and doc['metadata']['name'] == name)


def test_from_outside_the_namespace_only_the_gateways_http_port_is_reachable():
    policy = network_policy('gateway-http-from-anywhere')
    assert policy['spec']['podSelector'] == {'matchLabels': {'app': 'gateway'}}
    assert policy['spec']['policyTypes'] == ['Ingress']
    http_anywhere, same_namespace = policy['spec']['ingress']
    # The HTTP port is the one the readiness probe asks /ready on (the exporter numbers the gateway's ports).
    http_port = kind('Deployment')['spec']['template']['spec']['containers'][0]['readinessProbe']['httpGet']['port']
    assert http_anywhere == {'ports': [{'port': http_port, 'protocol': 'TCP'}]}
    assert same_namespace == {'from': [{'podSelector': {}}]}, 'a podSelector alone: pods of this namespace only'


def test_only_the_gateway_reaches_the_encoders_grpc_port():
    policy = network_policy('encoder-from-gateway-only')
    assert policy['spec']['podSelector'] == {'matchLabels': {'app': 'encoder'}}
    assert policy['spec']['policyTypes'] == ['Ingress']
    from_gateway, metrics = policy['spec']['ingress']
    assert from_gateway == {'from': [{'podSelector': {'matchLabels': {'app': 'gateway'}}}]}
    args = kind('StatefulSet')['spec']['template']['spec']['containers'][0]['args']
    metrics_port = int(args[args.index('--port-monitoring') + 1])
    assert metrics == {'ports': [{'port': metrics_port, 'protocol': 'TCP'}]}
    assert metrics_port != int(args[args.index('--port') + 1]), 'the gRPC port is not the metrics port'
    assert kind('StatefulSet')['spec']['template']['metadata']['labels']['app'] == 'encoder'
    assert kind('Deployment')['spec']['template']['metadata']['labels']['app'] == 'gateway'


def test_the_model_cache_is_a_claim_mounted_where_the_encoder_reads_it():
    statefulset = kind('StatefulSet')
    (claim,) = statefulset['spec']['volumeClaimTemplates']
    mounts = statefulset['spec']['template']['spec']['containers'][0]['volumeMounts']
    cache = {'name': claim['metadata']['name'], 'mountPath': '/home/encoder/.cache/huggingface', 'readOnly': True}
    assert cache in mounts


def merged(base: dict, patch: dict) -> dict:
    """The part of kustomize's strategic merge the GPU patch uses: containers by name, maps merged, lists replaced."""

    def merge(into, change):
        for key, value in change.items():
            if key == 'containers':
                for container in value:
                    target = next(c for c in into[key] if c['name'] == container['name'])
                    merge(target, container)
            elif isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    result = copy.deepcopy(base)
    merge(result, patch)
    return result


def test_the_gpu_overlay_gives_each_encoder_replica_one_gpu_and_cuda():
    overlay = documents(K8S / 'gpu' / 'kustomization.yaml')[0]
    assert overlay['resources'] == ['..']
    (patch,) = [doc for entry in overlay['patches'] for doc in documents(K8S / 'gpu' / entry['path'])]
    statefulset = merged(kind('StatefulSet'), patch)
    kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)
    (container,) = statefulset['spec']['template']['spec']['containers']
    assert container['resources']['limits']['nvidia.com/gpu'] == 1
    assert container['resources']['limits']['memory'] == '4Gi', 'the patch adds to the base limits'
    assert container['image'].endswith(':gpu') and '"device": "cuda"' in ' '.join(container['args'])


def test_the_model_cache_is_filled_once_by_an_init_container_and_read_offline():
    """Neither long-running container reaches the hub: an init container from the tools image fills the cache (the
    hub at the pinned revision, or the packaged copy), the encoder and the gateway mount it read-only."""
    encoder_pod = kind('StatefulSet')['spec']['template']['spec']
    gateway_pod = kind('Deployment')['spec']['template']['spec']
    model = 'sentence-transformers/all-MiniLM-L6-v2'
    for pod, home, openvino in ((encoder_pod, '/home/encoder', True), (gateway_pod, '/home/gateway', False)):
        (filler,) = pod['initContainers']
        (container,) = pod['containers']
        cache = f'{home}/.cache/huggingface'
        assert filler['image'] == 'sentence-tools:cpu'
        assert filler['args'][:5] == ['/app/fill_model_cache.py', '--model', model, '--cache-dir', f'{cache}/hub']
        assert ('--no-openvino' not in filler['args']) is openvino, 'the gateway needs the tokenizer only'
        assert {'name': 'model-cache', 'mountPath': cache} in filler['volumeMounts']
        assert {'name': 'model-cache', 'mountPath': cache, 'readOnly': True} in container['volumeMounts']
        assert filler['securityContext'] == container['securityContext']
    assert {'name': 'model-cache', 'emptyDir': {'sizeLimit': '512Mi'}} in gateway_pod['volumes']
    for configmap in (doc for doc in base_documents() if doc['kind'] == 'ConfigMap'):
        assert configmap['data']['HF_HUB_OFFLINE'] == '1', configmap['metadata']['name']
    tools_dockerfile = (REPO / 'executor' / 'tools.Dockerfile').read_text()
    assert 'COPY scripts/fill_model_cache.py /app/fill_model_cache.py' in tools_dockerfile
    assert '!scripts/fill_model_cache.py' in (REPO / '.dockerignore').read_text().splitlines()


def test_every_grpc_hop_bounds_its_messages():
    """Jina leaves gRPC messages unlimited (-1); the gateway's channels to the encoder and the encoder's server are
    bounded alike (flow.yml), in every export."""
    import json

    bound = {'grpc.max_send_message_length': 67108864, 'grpc.max_receive_message_length': 67108864}
    encoder_args = kind('StatefulSet')['spec']['template']['spec']['containers'][0]['args']
    gateway_args = kind('Deployment')['spec']['template']['spec']['containers'][0]['args']
    assert json.loads(encoder_args[encoder_args.index('--grpc-server-options') + 1]) == bound
    assert json.loads(gateway_args[gateway_args.index('--grpc-channel-options') + 1]) == bound
    for path in ('compose.yml', 'swarm.yml'):
        services = yaml.safe_load((REPO / path).read_text())['services']
        encoder, gateway = services['encoder']['command'], services['gateway']['command']
        assert json.loads(encoder[encoder.index('--grpc-server-options') + 1]) == bound, path
        assert json.loads(gateway[gateway.index('--grpc-channel-options') + 1]) == bound, path
