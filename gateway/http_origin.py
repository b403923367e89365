"""Which requests a browser page could make the gateway answer, and the two rules that stop them.

- **The body must be declared JSON** (415 otherwise), as TEI's axum `Json` extractor answers. A web page can send a
  cross-site POST without asking first (no CORS preflight) only with a `text/plain`, form or multipart body, or
  none declared; the gateway used to read JSON whatever the declared type, so any page a user visited could post
  to the stack on their machine.
- **A Host allow-list while the gateway has no API key.** With DNS rebinding a page's own name comes to resolve to
  the gateway's address (127.0.0.1, or one on the LAN), and the browser then lets the page read what the gateway
  answers; the Host header still carries the page's name. Such a name is always a DNS name: without a key, the
  gateway answers IP addresses, the loopback names and its own names, and other names only when ALLOWED_HOSTS lists
  them. With an API key the page cannot authenticate, so any Host is answered.
"""

from __future__ import annotations

import ipaddress
import socket

# The names other than IP addresses a request may arrive under without ALLOWED_HOSTS: loopback's, and those other
# containers on the stack's network use (the compose service name; the container's hostname is added at start).
DEFAULT_NAMES = ('localhost', 'gateway')


def declared_json(content_type: bytes | None) -> bool:
    """`application/json` or a `+json` type (`application/problem+json`), with or without parameters (charset)."""
    if not content_type:
        return False
    media_type = content_type.split(b';', 1)[0].strip().lower()
    structured_json = media_type.startswith(b'application/') and media_type.endswith(b'+json')
    return media_type == b'application/json' or structured_json


class HostAllowList:
    """The Host names answered: `names`, and (`ip_addresses`) any IP address."""

    def __init__(self, names: frozenset[str], ip_addresses: bool) -> None:
        self.names, self.ip_addresses = names, ip_addresses

    def allows(self, host: str) -> bool:
        return host in self.names or (self.ip_addresses and is_ip_address(host))

    def describe(self) -> str:
        return ', '.join(sorted(self.names)) + (', or an IP address' if self.ip_addresses else '')


def host_allow_list(configured: str, api_key: str) -> HostAllowList | None:
    """The Host names the gateway answers, or None for any.

    `configured` (ALLOWED_HOSTS, comma-separated; `*` for any) wins. Unset: with an API key any; without one, IP
    addresses, the DEFAULT_NAMES and this container's hostname."""
    names = [name.strip().lower() for name in configured.split(',') if name.strip()]
    if names:
        return None if '*' in names else HostAllowList(frozenset(host_name(name.encode()) for name in names), False)
    if api_key:
        return None
    return HostAllowList(frozenset((*DEFAULT_NAMES, socket.gethostname().lower())), ip_addresses=True)


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_name(host: bytes) -> str:
    """The name in a Host header, without its port or brackets: b'[::1]:8080' -> '::1', b'Example.com.:80' ->
    'example.com'."""
    text = host.decode('latin-1').strip().lower()
    if text.startswith('['):
        return text[1:].split(']', 1)[0]
    if text.count(':') == 1:
        text = text.split(':', 1)[0]
    return text.rstrip('.')
