"""gateway/http_origin.py and gateway/api_key.py word for word: which Host names are answered, which bodies count as
JSON, and how an Authorization value is compared with the key."""

from __future__ import annotations

import socket
import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / 'gateway'))
from api_key import bearer_matches, configured_api_key  # noqa: E402
from http_origin import declared_json, host_allow_list, host_name  # noqa: E402


@pytest.mark.parametrize(
    ('header', 'name'),
    [(b'localhost', 'localhost'), (b'LocalHost:8080', 'localhost'), (b'[::1]:80', '::1'), (b'[::1]', '::1'),
     (b'example.com.', 'example.com'), (b'Example.com.:80', 'example.com'), (b'127.0.0.1:1', '127.0.0.1'),
     (b'::1', '::1')],
)  # fmt: skip
def test_host_name_drops_the_port_brackets_and_trailing_dot(header, name):
    assert host_name(header) == name


def test_without_a_key_ip_addresses_and_the_gateways_own_names_only():
    allowed = host_allow_list('', api_key='')
    for host in ('127.0.0.1', '10.1.2.3', '::1', 'fe80::1', 'localhost', 'gateway', socket.gethostname().lower()):
        assert allowed.allows(host), host
    for host in ('evil.example', '127.0.0.1.nip.io', 'localhost.evil.example', '', '1.2.3', 'gateway.evil'):
        assert not allowed.allows(host), host
    assert allowed.describe().endswith(', or an IP address')


def test_a_key_or_a_star_answers_any_host_and_a_list_only_its_names():
    assert host_allow_list('', api_key='k' * 32) is None
    assert host_allow_list(' * ', api_key='') is None
    listed = host_allow_list('Embeddings.Example.com, other:8080', api_key='k' * 32)  # a list wins over the key
    assert listed.names == frozenset({'embeddings.example.com', 'other'})
    assert listed.allows('embeddings.example.com') and not listed.allows('127.0.0.1') and not listed.allows('localhost')
    assert listed.describe() == 'embeddings.example.com, other'


@pytest.mark.parametrize(
    ('content_type', 'json'),
    [(b'application/json', True), (b'application/json; charset=utf-8', True), (b'APPLICATION/JSON', True),
     (b'application/problem+json', True), (None, False), (b'', False), (b'text/plain', False),
     (b'application/x-www-form-urlencoded', False), (b'multipart/form-data; boundary=x', False),
     (b'application/jsonx', False), (b'text/json+x', False), (b'text/plain; application/json', False)],
)  # fmt: skip
def test_declared_json(content_type, json):
    assert declared_json(content_type) is json


KEY = 'the-key-0123456789-0123456789-01'


@pytest.mark.parametrize(
    ('authorization', 'matches'),
    [(f'Bearer {KEY}', True), (f'bearer {KEY}', True), (f'BEARER  {KEY} ', True), (f'Bearer {KEY}'.encode(), True),
     (KEY, False), (f'Basic {KEY}', False), (f'Bearer {KEY}x', False), (f'Bearer {KEY[:-1]}', False), ('Bearer', False),
     ('', False), (None, False)],
)  # fmt: skip
def test_bearer_matches(authorization, matches):
    assert bearer_matches(authorization, KEY) is matches


def test_no_key_configured_matches_nothing():
    assert not bearer_matches('Bearer ', '') and not bearer_matches('Bearer x', '')


def test_key_from_the_file_api_key_file_names(tmp_path, monkeypatch):
    secret = tmp_path / 'api_key'
    secret.write_text(KEY + '\n')
    monkeypatch.delenv('API_KEY', raising=False)
    monkeypatch.setenv('API_KEY_FILE', str(secret))
    assert configured_api_key() == KEY


@pytest.mark.parametrize(
    ('contents', 'api_key', 'refusal'),
    [('', '', 'is empty'), ('\n', '', 'is empty'), (None, '', 'cannot be read'),
     (KEY, KEY, 'both API_KEY and API_KEY_FILE')],
)  # fmt: skip
def test_a_key_file_that_cannot_serve_stops_the_gateway(tmp_path, monkeypatch, contents, api_key, refusal):
    """A key file that was meant but gives no key must not start a gateway without one."""
    secret = tmp_path / 'api_key'
    if contents is not None:
        secret.write_text(contents)
    monkeypatch.setenv('API_KEY', api_key)
    monkeypatch.setenv('API_KEY_FILE', str(secret))
    with pytest.raises(SystemExit, match=refusal):
        configured_api_key()


def test_without_a_file_the_environment_value(monkeypatch):
    monkeypatch.delenv('API_KEY_FILE', raising=False)
    monkeypatch.setenv('API_KEY', KEY)
    assert configured_api_key() == KEY
    monkeypatch.setenv('API_KEY_FILE', '')  # compose's `${API_KEY_FILE:+...}` when no file is given
    assert configured_api_key() == KEY
