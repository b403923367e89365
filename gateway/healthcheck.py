"""Container healthcheck: the gateway answers GET /health (liveness; open even when API_KEY is set).

Jina's HTTP gateway binds its port only after the executor has answered its schema request, so an answer here
means the gateway is up and has seen the encoder. Standard library only, so it costs milliseconds.
    python3 healthcheck.py [HTTP_PORT] [TIMEOUT_S]   (TIMEOUT_S: 3; keep it under the healthcheck's own timeout)
"""

import sys
import urllib.request

port = sys.argv[1] if len(sys.argv) > 1 else '8080'
timeout_s = float(sys.argv[2]) if len(sys.argv) > 2 else 3
try:
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=timeout_s) as response:
        status = response.status
except OSError as error:
    sys.exit(f'gateway HTTP port {port} not answering: {error}')
if status != 200:
    sys.exit(f'gateway HTTP port {port} answered {status}')
