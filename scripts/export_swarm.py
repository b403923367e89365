"""Export flow.yml into swarm.yml: the same stack for Docker swarm (`docker stack deploy`, what `make swarm-up` runs).

It starts from the compose export (scripts/export_compose.py: jina's exporter plus healthchecks and overridable
values) and changes what a swarm needs and compose does not:

- the encoder is one service of REPLICAS tasks (flow.yml's `replicas` by default), at most ENCODER_REPLICAS_PER_NODE
  (1) per node, updated one task at a time with the new one healthy before the old one stops (start-first), rolled
  back if it fails, and restarted on any exit;
- service addresses are DNS round robin (`endpoint_mode: dnsrr`): swarm's virtual IPs and routing mesh need IPVS, which
  some kernels lack (these CI machines'); the gateway resolves `tasks.encoder` itself and sends to every task
  (gateway/discovery.py), noticing tasks that come and go;
- the gateway runs on a manager node with its HTTP port published in host mode there. Swarm cannot publish on
  127.0.0.1 only, so the port is reachable from the network: the API key is required, read from a swarm secret
  (API_KEY_FILE), never an environment value, and the port speaks HTTPS (TLS_CERT_FILE, TLS_KEY_FILE: secrets too);
  the gRPC port, behind the same key, is not published (clients inside the swarm reach gateway:50051 on the
  attachable overlay network). Metrics ports are not published either.

    python scripts/export_swarm.py           # write swarm.yml
    python scripts/export_swarm.py --check   # exit 1 when the committed file differs from a fresh export
"""

from __future__ import annotations

import argparse
import json

import yaml
from export_compose import FLOW, REPO, build_compose_files, render, write_or_check

SECRET = 'api_key'
SECRET_NAME = '${API_KEY_SECRET:-sentence_encoder_api_key}'  # what make swarm-up creates from API_KEY
# The HTTPS certificate and key of the published port (make swarm-up creates them from TLS_CERT_FILE/TLS_KEY_FILE,
# or a self-signed pair it generates).
TLS_SECRETS = {
    'tls_cert': '${TLS_CERT_SECRET:-sentence_encoder_tls_cert}',
    'tls_key': '${TLS_KEY_SECRET:-sentence_encoder_tls_key}',
}


def swarm_encoder(service: dict, replicas: int) -> dict:
    return {
        'image': service['image'],
        'entrypoint': service['entrypoint'],
        'command': service['command'],
        'environment': service['environment'],
        'volumes': service['volumes'],
        'healthcheck': swarm_healthcheck(service['healthcheck']),
        'stop_grace_period': service['stop_grace_period'],
        'deploy': {
            'replicas': f'${{REPLICAS:-{replicas}}}',
            'endpoint_mode': 'dnsrr',
            'placement': {'max_replicas_per_node': '${ENCODER_REPLICAS_PER_NODE:-1}'},
            # One task at a time; the new one must be healthy before the old one is stopped; a failed update rolls
            # back (the healthcheck decides, within `monitor`).
            'update_config': {'parallelism': 1, 'order': 'start-first', 'failure_action': 'rollback', 'monitor': '30s'},
            'rollback_config': {'parallelism': 1, 'order': 'start-first'},
            'restart_policy': {'condition': 'any', 'delay': '5s'},
            'resources': swarm_resources(service),
        },
        'networks': service['networks'],
    }


def swarm_gateway(service: dict, encoder_port: str) -> dict:
    command = list(service['command'])
    at = command.index('--deployments-addresses') + 1
    deployment = next(iter(json.loads(command[at])))
    discovery = f'tasks.{deployment}:{encoder_port}'
    command[at] = json.dumps({deployment: [discovery]})
    http_port = command[command.index('--port') + 2]
    # The key comes from a secret; the HTTP port is published on every interface of the node (host mode).
    environment = [line for line in service['environment'] if not line.startswith(('API_KEY=', 'API_KEY_FILE='))]
    return {
        'image': service['image'],
        'entrypoint': service['entrypoint'],
        'command': command,
        'environment': [
            *environment,
            f'API_KEY_FILE=/run/secrets/{SECRET}',
            # HTTPS on the published port: the bearer key must not cross the network in clear.
            'TLS_CERT_FILE=/run/secrets/tls_cert',
            'TLS_KEY_FILE=/run/secrets/tls_key',
            f'ENCODER_DISCOVERY={discovery}',  # the encoder's tasks, found by DNS (gateway/discovery.py)
        ],
        'secrets': [SECRET, *TLS_SECRETS],
        'volumes': service['volumes'],
        'ports': [{'target': int(http_port), 'published': '${HTTP_PORT:-8080}', 'protocol': 'tcp', 'mode': 'host'}],
        'healthcheck': swarm_healthcheck(service['healthcheck']),
        'stop_grace_period': service['stop_grace_period'],
        'deploy': {
            'replicas': 1,
            # The published port is on the node the gateway runs on: a manager, so that its address is known.
            'placement': {'constraints': ['node.role == manager']},
            'endpoint_mode': 'dnsrr',
            # A host-mode port cannot be bound twice on one node: the old gateway stops (draining) first.
            'update_config': {'parallelism': 1, 'order': 'stop-first', 'failure_action': 'rollback'},
            'restart_policy': {'condition': 'any', 'delay': '5s'},
            'resources': swarm_resources(service),
        },
        'networks': service['networks'],
    }


def swarm_healthcheck(healthcheck: dict) -> dict:
    """The compose healthcheck with more patience: in a swarm an unhealthy task is killed, and during an update its
    failure rolls the whole update back. A probe that a loaded node answers slowly (a rolling update under load on
    busy cores was rolled back) must not count as a dead encoder: 8 s per probe, 5 misses in a row (25 s)."""
    return {**healthcheck, 'test': [*healthcheck['test'], '8'], 'timeout': '10s', 'retries': 5}


def swarm_resources(service: dict) -> dict:
    """The compose service's memory and CPU limits. Not its process cap: deploy.resources.limits.pids is newer than
    the stack file format of the 20.10 engines the swarm tier runs, and was not tried there."""
    limits = {key: value for key, value in service['deploy']['resources']['limits'].items() if key != 'pids'}
    return {'limits': limits}


def build_swarm_file(flow: dict) -> dict:
    replicas = flow['executors'][0].get('replicas', 1)
    single = {**flow, 'executors': [{**flow['executors'][0], 'replicas': 1}]}  # one service, `replicas` tasks
    compose, _ = build_compose_files(single)
    (encoder_name,) = [name for name in compose['services'] if name != 'gateway']
    encoder = compose['services'][encoder_name]
    encoder_port = encoder['command'][encoder['command'].index('--port') + 1]
    network = next(iter(compose['networks']))
    return {
        'services': {
            encoder_name: swarm_encoder(encoder, replicas),
            'gateway': swarm_gateway(compose['services']['gateway'], encoder_port),
        },
        'networks': {network: {'driver': 'overlay', 'attachable': True}},
        'secrets': {
            SECRET: {'external': True, 'name': SECRET_NAME},
            **{name: {'external': True, 'name': secret} for name, secret in TLS_SECRETS.items()},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='compare with the committed file instead of writing')
    args = parser.parse_args()
    swarm = build_swarm_file(yaml.safe_load(FLOW.read_text()))
    title = 'Docker swarm: make swarm-up (docker stack deploy -c swarm.yml)'
    network = next(iter(swarm['networks']))
    # Docker encrypts an overlay whose options name `encrypted`, whatever the value: so a file to add, not a variable.
    encrypted = {'networks': {network: {'driver_opts': {'encrypted': ''}}}}
    encrypted_title = 'The overlay encrypted (IPsec ESP between nodes): ENCRYPT_OVERLAY=1 make swarm-up'
    outputs = {
        REPO / 'swarm.yml': render(swarm, title, generator='scripts/export_swarm.py'),
        REPO / 'swarm.encrypted.yml': render(encrypted, encrypted_title, generator='scripts/export_swarm.py'),
    }
    write_or_check(outputs, args.check, 'make export')


if __name__ == '__main__':
    main()
