"""Which requests a browser page could make the gateway answer, and the two rules that stop them.

- **The body must be declared JSON** (415 otherwise), as TEI's axum `Json` extractor answers. A web page can send a
  cross-site POST without asking first (no CORS preflight) only with a `text/plain`, form or multipart body, or
  none declared; the gateway used to read JSON whatever the declared type, so any page a user visited could post
  to the stack on their machine.
- **A Host allow-list while the gateway has no API key and is published on loopback only** (the compose default).
  With DNS rebinding a page's own name comes to resolve to 127.0.0.1, and the browser then lets it read what the
  gateway answers; the Host header still carries the page's name. With an API key the page cannot authenticate, and
  published beyond loopback the operator names the hosts (ALLOWED_HOSTS) or sets a key.
"""

from __future__ import annotations

import ipaddress
import socket

# The names a request on loopback arrives under: the loopback addresses, and the names other containers on the
# stack's network use for the gateway (its compose service name, its container's hostname).
LOOPBACK_NAMES = ('localhost', '127.0.0.1', '::1', 'gateway')


def declared_json(content_type: bytes | None) -> bool:
    """`application/json` or a `+json` type (`application/problem+json`), with or without parameters (charset)."""
    if not content_type:
        return False
    media_type = content_type.split(b';', 1)[0].strip().lower()
    structured_json = media_type.startswith(b'application/') and media_type.endswith(b'+json')
    return media_type == b'application/json' or structured_json


def allowed_hosts(configured: str, api_key: str, published_on: str) -> frozenset[str] | None:
    """The Host names the gateway answers, or None for any.

    `configured` (ALLOWED_HOSTS, comma-separated; `*` for any) wins. Unset: with no API key and the ports published on
    loopback only (`published_on`, compose's BIND_ADDRESS), the loopback names and this container's hostname;
    otherwise any (the key guards the data, or the operator chose to publish on a network)."""
    names = [name.strip().lower() for name in configured.split(',') if name.strip()]
    if names:
        return None if '*' in names else frozenset(host_name(name.encode()) for name in names)
    if api_key or not is_loopback(published_on):
        return None
    return frozenset((*LOOPBACK_NAMES, socket.gethostname().lower()))


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip().strip('[]')).is_loopback
    except ValueError:
        return address.strip().lower() == 'localhost'


def host_name(host: bytes) -> str:
    """The name in a Host header, without its port or brackets: b'[::1]:8080' -> '::1', b'Example.com.:80' ->
    'example.com'."""
    text = host.decode('latin-1').strip().lower()
    if text.startswith('['):
        return text[1:].split(']', 1)[0]
    if text.count(':') == 1:
        text = text.split(':', 1)[0]
    return text.rstrip('.')
