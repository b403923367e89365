"""The generated and documented project files stay true: compose files in sync with flow.yml, `make help` honest."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers import REPO


@pytest.mark.parametrize('exporter', ['export_compose.py', 'export_swarm.py'])
def test_compose_and_swarm_files_are_in_sync_with_flow_yml(exporter):
    result = subprocess.run(
        [sys.executable, str(REPO / 'scripts' / exporter), '--check'], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_compose_and_swarm_files_say_they_are_generated():
    for name in ('compose.yml', 'compose.gpu.yml', 'swarm.yml', 'swarm.encrypted.yml'):
        assert (REPO / name).read_text().startswith('# generated from flow.yml'), name


def test_make_help_lists_exactly_the_real_targets():
    makefile = (REPO / 'Makefile').read_text()
    documented = set(re.findall(r'^([a-z][a-z0-9-]*):.*## ', makefile, flags=re.MULTILINE))
    phony = set(re.search(r'^\.PHONY: (.*)$', makefile, flags=re.MULTILINE).group(1).split())
    assert documented == phony
    shown = subprocess.run(['make', '--no-print-directory', '-C', str(REPO), 'help'], capture_output=True, text=True)
    listed = {line.split()[0] for line in shown.stdout.splitlines() if line.startswith('  ')}
    assert listed == documented


def test_the_engine_setup_names_what_is_missing_where_it_cannot_install(tmp_path):
    """Off Debian (no apt-get) and without Docker, `make engine` says what to install instead of failing on apt-get."""
    bare_bin = tmp_path / 'bin'
    bare_bin.mkdir()
    for program in ('bash', 'id'):
        (bare_bin / program).symlink_to(shutil.which(program))
    result = subprocess.run(
        [str(bare_bin / 'bash'), str(REPO / 'scripts' / 'install-docker.sh')],
        env={'PATH': str(bare_bin)}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert 'Docker is not installed' in result.stderr and 'Compose v2' in result.stderr, result.stderr
    assert 'docs.docker.com/engine/install' in result.stderr, result.stderr


def swarm_up_without_docker(tmp_path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """scripts/swarm-up.sh with a stand-in `docker` on PATH that records every call (none should happen)."""
    bin_dir, calls = tmp_path / 'bin', tmp_path / 'docker-calls'
    bin_dir.mkdir()
    (bin_dir / 'docker').write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / 'docker').chmod(0o755)
    result = subprocess.run(
        ['bash', str(REPO / 'scripts' / 'swarm-up.sh')], env={'PATH': f'{bin_dir}:/usr/bin:/bin', **env},
        capture_output=True, text=True,
    )  # fmt: skip
    return result, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize('key', ['change-me', 'x' * 31])
def test_swarm_up_refuses_a_short_key_before_it_changes_anything(tmp_path, key):
    """The swarm publishes the HTTP port on the network: a key under 32 characters is refused before any docker
    call."""
    result, docker_calls = swarm_up_without_docker(tmp_path, API_KEY=key)
    assert result.returncode == 1
    assert f'API_KEY has {len(key)} characters: use at least 32, e.g. API_KEY=$(openssl rand -hex 32)' in result.stderr
    assert docker_calls == []


@pytest.mark.parametrize('tls', [{'TLS_CERT_FILE': '/nonexistent/cert.pem'}, {'TLS_KEY_FILE': __file__}])
def test_swarm_up_refuses_half_or_unreadable_tls_files_before_it_changes_anything(tmp_path, tls):
    result, docker_calls = swarm_up_without_docker(tmp_path, API_KEY='k' * 32, **tls)
    assert result.returncode == 1
    assert 'set both TLS_CERT_FILE and TLS_KEY_FILE to readable PEM files' in result.stderr, result.stderr
    assert docker_calls == []


@pytest.mark.parametrize(('setting', 'files'), [('0', '-c swarm.yml'), ('1', '-c swarm.yml -c swarm.encrypted.yml')])
def test_swarm_up_encrypts_the_overlay_when_asked(tmp_path, setting, files):
    """ENCRYPT_OVERLAY=1 deploys with the overlay that turns on Docker's IPsec; 0 (the default) without it."""
    result, docker_calls = swarm_up_without_docker(
        tmp_path, API_KEY='k' * 32, TLS_CERT_FILE=__file__, TLS_KEY_FILE=__file__, HOME=str(tmp_path),
        ENCRYPT_OVERLAY=setting, WAIT_TIMEOUT='5',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f'stack deploy --prune --resolve-image never {files} sentence-encoder' in docker_calls
    encrypted = yaml.safe_load((REPO / 'swarm.encrypted.yml').read_text())
    assert encrypted == {'networks': {'jina-network': {'driver_opts': {'encrypted': ''}}}}


def test_swarm_up_refuses_an_unknown_encrypt_overlay_value(tmp_path):
    result, docker_calls = swarm_up_without_docker(
        tmp_path, API_KEY='k' * 32, TLS_CERT_FILE=__file__, TLS_KEY_FILE=__file__, HOME=str(tmp_path),
        ENCRYPT_OVERLAY='yes',
    )  # fmt: skip
    assert result.returncode == 1 and "ENCRYPT_OVERLAY is 0 or 1, not 'yes'" in result.stderr
    assert docker_calls == []


def test_swarm_up_refuses_to_change_the_encryption_of_an_existing_network(tmp_path):
    """docker stack deploy keeps an existing network as it is: ENCRYPT_OVERLAY=1 on an unencrypted one would be a
    silent no-op, so it is refused before the deploy."""
    bin_dir, calls = tmp_path / 'bin', tmp_path / 'docker-calls'
    bin_dir.mkdir()
    (bin_dir / 'docker').write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        'case "$1 $2" in "network inspect") echo "sentence-encoder_jina-network com.docker.network.driver.x ";; esac\n'
    )
    (bin_dir / 'docker').chmod(0o755)
    result = subprocess.run(
        ['bash', str(REPO / 'scripts' / 'swarm-up.sh')],
        env={'PATH': f'{bin_dir}:/usr/bin:/bin', 'API_KEY': 'k' * 32, 'TLS_CERT_FILE': __file__,
             'TLS_KEY_FILE': __file__, 'HOME': str(tmp_path), 'ENCRYPT_OVERLAY': '1'},
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        'the network sentence-encoder_jina-network exists unencrypted; ENCRYPT_OVERLAY=1 applies when it is created'
        in result.stderr
    )
    assert not any(call.startswith('stack deploy') for call in calls.read_text().splitlines())


def test_swarm_up_reads_the_key_from_api_key_file(tmp_path):
    key_file = tmp_path / 'api_key'
    key_file.write_text('short\n')
    result, docker_calls = swarm_up_without_docker(tmp_path, API_KEY_FILE=str(key_file))
    assert result.returncode == 1 and 'API_KEY has 5 characters: use at least 32' in result.stderr
    assert docker_calls == []
