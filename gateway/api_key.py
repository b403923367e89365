"""The API key: where it comes from, and how a request's credential is compared with it (HTTP and gRPC alike)."""

from __future__ import annotations

import hmac
import os


def configured_api_key() -> str:
    """The key from the file API_KEY_FILE names (a compose, swarm or Kubernetes secret: the documented way, since an
    environment value shows in `docker inspect`), or API_KEY. Both set is refused: which one guards would be a guess."""
    path = os.environ.get('API_KEY_FILE', '')
    if not path:
        return os.environ.get('API_KEY', '')
    if os.environ.get('API_KEY', ''):
        raise SystemExit('both API_KEY and API_KEY_FILE are set: keep one (a file keeps the key out of docker inspect)')
    try:
        key = open(path).read().strip()
    except OSError as error:
        raise SystemExit(
            f'API_KEY_FILE={path} cannot be read ({error.strerror}): is the secret attached? The gateway runs as uid '
            f'{os.getuid()}: the file must be readable by it (chown {os.getuid()} FILE, or chmod 644 FILE)'
        ) from None
    if not key:
        raise SystemExit(f'API_KEY_FILE={path} is empty: put the key in it (e.g. openssl rand -hex 32 > FILE)')
    return key


def bearer_matches(authorization: bytes | str | None, key: str) -> bool:
    """Whether an `Authorization` value (HTTP header or gRPC metadata) is `Bearer <key>`: the scheme in any case (RFC
    9110 makes it case-insensitive), the key compared in constant time."""
    if not authorization or not key:
        return False
    if isinstance(authorization, str):
        authorization = authorization.encode('latin-1', 'replace')
    scheme, _, token = authorization.strip().partition(b' ')
    return scheme.lower() == b'bearer' and hmac.compare_digest(token.strip(), key.encode())
