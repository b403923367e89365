"""Container healthcheck: the gateway answers GET /health (liveness; open even when API_KEY is set).

Jina's HTTP gateway binds its port only after the executor has answered its schema request, so an answer here
means the gateway is up and has seen the encoder. Standard library only, so it costs milliseconds. With
TLS_CERT_FILE set (the container's environment) the port speaks HTTPS: the probe asks it over TLS, without checking
the certificate against a name (it talks to 127.0.0.1, its own container).
    python3 healthcheck.py [HTTP_PORT] [TIMEOUT_S]   (TIMEOUT_S: 3; keep it under the healthcheck's own timeout)
"""

import os
import ssl
import sys
import urllib.request

port = sys.argv[1] if len(sys.argv) > 1 else '8080'
timeout_s = float(sys.argv[2]) if len(sys.argv) > 2 else 3
tls = bool(os.environ.get('TLS_CERT_FILE'))
url = f'{"https" if tls else "http"}://127.0.0.1:{port}/health'
context = ssl._create_unverified_context() if tls else None
try:
    with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
        status = response.status
except OSError as error:
    sys.exit(f'gateway HTTP port {port} not answering: {error}')
if status != 200:
    sys.exit(f'gateway HTTP port {port} answered {status}')
