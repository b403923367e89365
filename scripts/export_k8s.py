"""Export flow.yml with jina's own Kubernetes exporter into k8s/ (make k8s), plus what the exporter leaves out.

jina's `export kubernetes` gives a StatefulSet + Service for the encoder and a Deployment + Services for the gateway.
This script then fixes and completes them for production:

- probes that cost milliseconds (the images' healthcheck.py, HTTP /ready and /health) instead of `jina ping`;
- the model cache as a PersistentVolumeClaim per encoder replica (the Kubernetes counterpart of the `~/.cache`
  bind mount; the exporter writes the compose-style volume string as a mountPath), filled once by an init container
  from the tools image (scripts/fill_model_cache.py: the hub at a pinned revision, checked against the pinned
  checksums, or the packaged copy), so that the encoder runs with HF_HUB_OFFLINE=1 and never downloads at start;
  the gateway's tokenizer (exact usage counts) from its own emptyDir cache, filled the same way;
- resource requests and limits, a termination grace period above the gateway's drain, and the lock-down of
  compose.yml: non-root, a read-only root with an emptyDir /tmp as HOME, no capabilities, no service-account token;
- the API key from a Secret the operator creates (never in the repository), mounted as a file the gateway reads
  (API_KEY_FILE): the gateway does not start without it, so neither port of the Service serves data to anyone;
- NetworkPolicies: the encoder's gRPC port takes requests from the gateway's pods only (its metrics port from any),
  and of the gateway's ports only HTTP takes traffic from outside the namespace;
- `updateStrategy` instead of the Deployment-only `strategy` the exporter puts on StatefulSets (the API rejects it);
- no ServiceMonitor: it needs the Prometheus operator's CRD, without which `kubectl apply` fails (docs/scaling.md);
- a Namespace, a kustomization (`kubectl apply -k k8s/`) and a GPU overlay (`kubectl apply -k k8s/gpu/`), which
  puts the encoder on CUDA in the GPU image with one `nvidia.com/gpu` per replica.

    python scripts/export_k8s.py            # write k8s/
    python scripts/export_k8s.py --check    # exit 1 when the committed k8s/ differs from a fresh export
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml
from export_compose import FLOW, REPO, gpu_flow, run_jina_export, write_or_check

NAMESPACE = 'sentence-encoder'
OUTPUT = REPO / 'k8s'
HEADER = '# generated from flow.yml by scripts/export_k8s.py (make k8s) - do not edit\n'
DRAIN_GRACE_SECONDS = 30  # above the gateway's DRAIN_TIMEOUT_S (20 s), as compose's stop_grace_period

POD_SECURITY = {
    'runAsNonRoot': True,
    'runAsUser': 1000,  # the images' user (encoder / gateway, uid 1000)
    'runAsGroup': 1000,
    'fsGroup': 1000,  # the model cache claim becomes writable by that user
    'seccompProfile': {'type': 'RuntimeDefault'},
}
CONTAINER_SECURITY = {
    'allowPrivilegeEscalation': False,
    'capabilities': {'drop': ['ALL']},
    'readOnlyRootFilesystem': True,
}
# The one writable place besides the model cache: /tmp, also HOME (jina writes ~/.jina and ~/.cache/jina at start).
TMP_VOLUME = {'name': 'tmp', 'emptyDir': {'sizeLimit': '256Mi'}}
TMP_MOUNT = {'name': 'tmp', 'mountPath': '/tmp'}
# `kubectl -n sentence-encoder create secret generic sentence-encoder-api-key --from-literal=api_key=...` (README).
API_KEY_SECRET = 'sentence-encoder-api-key'
SECRETS_DIR = '/run/secrets'
TOOLS_IMAGE = 'sentence-tools:cpu'  # scripts/build-images.sh tools: the encoder image plus fill_model_cache.py


def cache_filler(model: str, cache_mount: dict, openvino: bool) -> dict:
    """An init container that puts the model into the cache volume once (a later start finds it and exits)."""
    args = ['/app/fill_model_cache.py', '--model', model, '--cache-dir', f'{cache_mount["mountPath"]}/hub']
    return {
        'name': 'fill-model-cache',
        'image': TOOLS_IMAGE,
        'args': args if openvino else [*args, '--no-openvino'],
        'env': [{'name': 'HOME', 'value': '/tmp'}, {'name': 'JINA_OPTOUT_TELEMETRY', 'value': '1'}],
        'securityContext': CONTAINER_SECURITY,
        'resources': {'requests': {'cpu': '250m', 'memory': '512Mi'}, 'limits': {'memory': '2Gi'}},
        'volumeMounts': [cache_mount, TMP_MOUNT],
    }


def served_model(container: dict) -> str:
    """The encoder's model, from the exporter's --uses-with (flow.yml's uses_with)."""
    args = container['args']
    return json.loads(args[args.index('--uses-with') + 1])['model']


def locked_down(pod: dict) -> dict:
    pod['securityContext'] = POD_SECURITY
    pod['automountServiceAccountToken'] = False  # neither container talks to the Kubernetes API
    pod['terminationGracePeriodSeconds'] = DRAIN_GRACE_SECONDS
    pod['volumes'] = [*pod.get('volumes', []), TMP_VOLUME]
    pod['containers'][0]['securityContext'] = CONTAINER_SECURITY
    return pod


def jina_k8s_export(flow: dict) -> dict[str, list[dict]]:
    """The exporter's documents, per deployment (encoder, gateway)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'k8s'
        run_jina_export('kubernetes', flow, out, '--k8s-namespace', NAMESPACE)
        return {
            path.parent.name: [d for d in yaml.safe_load_all(path.read_text()) if d] for path in out.glob('*/*.yml')
        }


def encoder_statefulset(statefulset: dict) -> dict:
    spec = statefulset['spec']
    spec.pop('strategy', None)
    spec['updateStrategy'] = {'type': 'RollingUpdate'}
    pod = locked_down(spec['template']['spec'])
    container = pod['containers'][0]
    port = str(container['ports'][0]['containerPort'])
    probe = {'exec': {'command': ['python3', '/app/healthcheck.py', port]}, 'timeoutSeconds': 5}
    container['startupProbe'] = {**probe, 'periodSeconds': 5, 'failureThreshold': 60}  # download + load: 5 min
    container['readinessProbe'] = {**probe, 'periodSeconds': 5, 'failureThreshold': 2}
    container['livenessProbe'] = {**probe, 'periodSeconds': 10, 'failureThreshold': 3}
    container['resources'] = {'requests': {'cpu': '1', 'memory': '1Gi'}, 'limits': {'memory': '4Gi'}}
    cache = {'name': 'model-cache', 'mountPath': '/home/encoder/.cache/huggingface'}
    container['volumeMounts'] = [{**cache, 'readOnly': True}, TMP_MOUNT]
    pod['initContainers'] = [cache_filler(served_model(container), cache, openvino=True)]
    spec['volumeClaimTemplates'] = [
        {
            'metadata': {'name': 'model-cache'},
            # One claim per replica, in the cluster's default storage class: ReadWriteOnce works everywhere.
            'spec': {'accessModes': ['ReadWriteOnce'], 'resources': {'requests': {'storage': '1Gi'}}},
        }
    ]
    return statefulset


def gateway_deployment(deployment: dict, model: str) -> dict:
    pod = locked_down(deployment['spec']['template']['spec'])
    pod['volumes'].append({'name': 'api-key', 'secret': {'secretName': API_KEY_SECRET, 'defaultMode': 0o440}})
    # The tokenizer, for exact usage counts and cutting texts as the model does: its own small cache (the encoder's
    # claims are one per replica, ReadWriteOnce), filled at the pod's start without the OpenVINO IR.
    pod['volumes'].append({'name': 'model-cache', 'emptyDir': {'sizeLimit': '512Mi'}})
    cache = {'name': 'model-cache', 'mountPath': '/home/gateway/.cache/huggingface'}
    pod['initContainers'] = [cache_filler(model, cache, openvino=False)]
    container = pod['containers'][0]
    container['volumeMounts'] = [
        TMP_MOUNT,
        {'name': 'api-key', 'mountPath': SECRETS_DIR, 'readOnly': True},
        {**cache, 'readOnly': True},
    ]
    http_port = gateway_http_port(container['args'])
    container['startupProbe'] = {'httpGet': {'path': '/health', 'port': http_port}, 'periodSeconds': 2}
    # Ready once an encoder replica answers: a gateway without one is taken out of the Service.
    container['readinessProbe'] = {'httpGet': {'path': '/ready', 'port': http_port}, 'periodSeconds': 5}
    container['livenessProbe'] = {'httpGet': {'path': '/health', 'port': http_port}, 'periodSeconds': 10}
    container['resources'] = {'requests': {'cpu': '250m', 'memory': '256Mi'}, 'limits': {'memory': '1Gi'}}
    return deployment


def ingress_policy(name: str, app: str, ingress: list[dict]) -> dict:
    """A NetworkPolicy: the pods labelled `app` take only the `ingress` listed."""
    return {
        'apiVersion': 'networking.k8s.io/v1',
        'kind': 'NetworkPolicy',
        'metadata': {'name': name, 'namespace': NAMESPACE},
        'spec': {'podSelector': {'matchLabels': {'app': app}}, 'policyTypes': ['Ingress'], 'ingress': ingress},
    }


def encoder_network_policy(statefulset: dict) -> dict:
    """Requests reach the encoder from the gateway's pods only; its metrics port stays open to scrapers."""
    args = statefulset['spec']['template']['spec']['containers'][0]['args']
    metrics_port = int(args[args.index('--port-monitoring') + 1]) if '--port-monitoring' in args else None
    ingress = [{'from': [{'podSelector': {'matchLabels': {'app': 'gateway'}}}]}]
    if metrics_port:
        ingress.append({'ports': [{'port': metrics_port, 'protocol': 'TCP'}]})
    return ingress_policy('encoder-from-gateway-only', 'encoder', ingress)


def gateway_network_policy(deployment: dict) -> dict:
    """From outside the namespace, the gateway's HTTP port only; its gRPC and metrics ports from inside it."""
    http_port = gateway_http_port(deployment['spec']['template']['spec']['containers'][0]['args'])
    ingress = [{'ports': [{'port': http_port, 'protocol': 'TCP'}]}, {'from': [{'podSelector': {}}]}]
    return ingress_policy('gateway-http-from-anywhere', 'gateway', ingress)


def gateway_http_port(args: list[str]) -> int:
    """The HTTP one of the gateway's two ports (`--port A B` in the order of `--protocol GRPC HTTP`)."""
    ports = args[args.index('--port') + 1 : args.index('--port') + 3]
    protocols = args[args.index('--protocol') + 1 : args.index('--protocol') + 3]
    return int(ports[protocols.index('HTTP')])


def configmap(document: dict, deployment: str) -> dict:
    # The init containers fill the caches: the encoder and the gateway never reach the hub themselves.
    document['data']['HF_HUB_OFFLINE'] = '1'
    if deployment != 'encoder':
        document['data']['API_KEY_FILE'] = f'{SECRETS_DIR}/api_key'
        document['data']['DRAIN_TIMEOUT_S'] = '20'
        # The gateway's joining of concurrent HTTP requests (gateway/coalescer.py), as compose.yml sets it.
        document['data'].update(HTTP_BATCH_MAX_DOCS='64', HTTP_BATCH_WAIT_MS='20', HTTP_BATCHES_IN_FLIGHT='1')
    document['data'].update(HOME='/tmp', JINA_OPTOUT_TELEMETRY='1')
    return document


def completed(documents: list[dict], deployment: str, model: str) -> list[dict]:
    out = []
    for document in documents:
        kind = document['kind']
        if kind == 'ServiceMonitor':
            continue
        if kind == 'StatefulSet':
            document = encoder_statefulset(document)
            out.append(encoder_network_policy(document))
        elif kind == 'Deployment':
            document = gateway_deployment(document, model)
            out.append(gateway_network_policy(document))
        elif kind == 'ConfigMap':
            document = configmap(document, deployment)
        out.append(document)
    return out


def gpu_patch(gpu_documents: list[dict]) -> dict:
    """A strategic-merge patch of the encoder StatefulSet: the GPU export's image and args, one GPU per replica."""
    statefulset = next(d for d in gpu_documents if d['kind'] == 'StatefulSet')
    container = statefulset['spec']['template']['spec']['containers'][0]
    return {
        'apiVersion': 'apps/v1',
        'kind': 'StatefulSet',
        'metadata': {'name': statefulset['metadata']['name'], 'namespace': NAMESPACE},
        'spec': {
            'template': {
                'spec': {
                    'containers': [
                        {
                            'name': container['name'],
                            'image': container['image'],
                            'args': container['args'],
                            # The exporter emits a GPU limit only for integer `gpus`; one per replica is the rule here.
                            'resources': {'limits': {'nvidia.com/gpu': 1}},
                        }
                    ]
                }
            }
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes a value shared by two containers twice, not as a YAML anchor and alias (harder to read and review)."""

    def ignore_aliases(self, data) -> bool:
        return True


def render(documents: list[dict]) -> str:
    return HEADER + '---\n'.join(yaml.dump(d, Dumper=_PlainDumper, sort_keys=False, width=1000) for d in documents)


def build_outputs(flow: dict) -> dict[Path, str]:
    cpu, gpu = jina_k8s_export(flow), jina_k8s_export(gpu_flow(flow))
    namespace = {'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': NAMESPACE}}
    outputs = {OUTPUT / 'namespace.yml': render([namespace])}
    model = flow['executors'][0]['uses_with']['model']
    for deployment in sorted(cpu):
        outputs[OUTPUT / deployment / f'{deployment}.yml'] = render(completed(cpu[deployment], deployment, model))
    kustomize = {'apiVersion': 'kustomize.config.k8s.io/v1beta1', 'kind': 'Kustomization'}
    resources = [str(path.relative_to(OUTPUT)) for path in outputs]
    outputs[OUTPUT / 'kustomization.yaml'] = render([{**kustomize, 'resources': resources}])
    outputs[OUTPUT / 'gpu' / 'encoder-gpu.yml'] = render([gpu_patch(gpu['encoder'])])
    overlay = {**kustomize, 'resources': ['..'], 'patches': [{'path': 'encoder-gpu.yml'}]}
    outputs[OUTPUT / 'gpu' / 'kustomization.yaml'] = render([overlay])
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='compare with the committed k8s/ instead of writing')
    args = parser.parse_args()
    outputs = build_outputs(yaml.safe_load(FLOW.read_text()))
    write_or_check(outputs, args.check, 'make k8s')


if __name__ == '__main__':
    main()
