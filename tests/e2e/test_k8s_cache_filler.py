"""The Kubernetes export's init container (k8s/gateway/gateway.yml), run as the manifest says, by Docker: from the
tools image, as uid 1000, with a read-only root, no capabilities and no network (as on a cluster without the hub),
into an empty volume. It must leave the model where the gateway's tokenizer looks, at the pinned revision, and a
second start (a pod restarted) must find it and succeed without writing."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from helpers import REPO

pytestmark = pytest.mark.e2e

PINNED_REVISION = 'c9745ed1d9f207416be6d2e6f8de32d1f16199bf'  # scripts/fill_model_cache.py's PACKAGED_REVISION


def gateway_cache_filler() -> dict:
    documents = yaml.safe_load_all((REPO / 'k8s' / 'gateway' / 'gateway.yml').read_text())
    deployment = next(doc for doc in documents if doc and doc['kind'] == 'Deployment')
    (filler,) = deployment['spec']['template']['spec']['initContainers']
    return filler


def run_as_kubernetes_would(filler: dict, volume) -> subprocess.CompletedProcess:
    (cache_mount,) = [m for m in filler['volumeMounts'] if m['name'] == 'model-cache']
    security = filler['securityContext']
    assert security['readOnlyRootFilesystem'] and security['capabilities'] == {'drop': ['ALL']}
    command = ['docker', 'run', '--rm', '--network', 'none', '--read-only', '--tmpfs', '/tmp:mode=1777',
               '--user', '1000:1000', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
               '-v', f'{volume}:{cache_mount["mountPath"]}']  # fmt: skip
    for variable in filler['env']:
        command += ['-e', f'{variable["name"]}={variable["value"]}']
    return subprocess.run([*command, filler['image'], *filler['args']], capture_output=True, text=True, timeout=300)


def test_the_init_container_fills_an_empty_volume_at_the_pinned_revision_and_restarts(images_built, tmp_path):
    volume = tmp_path / 'model-cache'
    volume.mkdir()
    volume.chmod(0o777)  # what the pod's fsGroup gives uid 1000 on a fresh emptyDir
    filler = gateway_cache_filler()

    first = run_as_kubernetes_would(filler, volume)
    assert first.returncode == 0, first.stderr[-3000:]
    model = volume / 'hub' / 'models--sentence-transformers--all-MiniLM-L6-v2'
    assert (model / 'refs' / 'main').read_text() == PINNED_REVISION
    snapshot = model / 'snapshots' / PINNED_REVISION
    assert {'tokenizer.json', 'modules.json', 'model.safetensors'} <= {p.name for p in snapshot.iterdir()}
    assert not (snapshot / 'openvino').exists(), "the gateway's filler skips the OpenVINO IR"

    before = sorted((str(p), p.stat().st_mtime_ns) for p in model.rglob('*'))
    again = run_as_kubernetes_would(filler, volume)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'already in' in again.stdout
    assert sorted((str(p), p.stat().st_mtime_ns) for p in model.rglob('*')) == before
