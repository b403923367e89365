"""Fix the error paths of jina 3.33.1's HTTP gateway (docarray v2 app), applied to the gateway image at build time.

1. Executor unreachable (crashed, restarting): jina means to answer 503 (504 on a deadline), but its handler reads
   `status.HTTP_503_...` where `status` is a local variable not yet assigned, so every such request ends in an
   UnboundLocalError and a bare 500. Here it reads the FastAPI status module it imported as `http_status`, and
   answers with a `detail` that says the encoder is unavailable (jina's own body echoed the request, and its
   response model dropped the error) plus `Retry-After`.
2. A request the encoder refuses (its `BadRequestError`: no text, empty text, too many docs; or a pydantic
   `ValidationError` of the doc schema, e.g. a `url` over 65,536 characters) comes back as 500, as if the server
   were broken. Here it is a 422, with the encoder's message naming the offending docs as `detail`.

Each replacement must match exactly: if jina's code changes, the image build fails here instead of shipping a
gateway whose error handling nobody checked. Idempotent. Usage: python patch_jina.py (with the target venv's python);
`make install` applies it to .venv too, so that local Flows behave as the image does.
"""

import sys
from pathlib import Path

import jina
import jina.serve.runtimes.gateway.http_fastapi_app_docarrayv2 as app_module

EXPECTED_JINA = '3.33.1'
REPLACEMENTS = [
    (
        'response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE',
        'response.status_code = http_status.HTTP_503_SERVICE_UNAVAILABLE',
    ),
    (
        'response.status_code = status.HTTP_504_GATEWAY_TIMEOUT',
        'response.status_code = http_status.HTTP_504_GATEWAY_TIMEOUT',
    ),
    (
        'response.status_code = status.HTTP_500_INTERNAL_SERVER_ERROR',
        'response.status_code = http_status.HTTP_500_INTERNAL_SERVER_ERROR',
    ),
    (
        """                logger.error(
                    f'Error while getting responses from deployments: {err.details()}'
                )
                return result""",
        """                logger.error(
                    f'Error while getting responses from deployments: {err.details()}'
                )
                unavailable = response.status_code == http_status.HTTP_503_SERVICE_UNAVAILABLE
                raise HTTPException(
                    status_code=response.status_code,
                    detail=(f'the encoder is unavailable, retry shortly ({err.details()})' if unavailable
                            else f'the encoder did not answer ({err.details()})'),
                    headers={'Retry-After': '5'} if unavailable else None,
                )""",
    ),
    (
        'raise HTTPException(status_code=http_status.HTTP_500_INTERNAL_SERVER_ERROR, detail=status.description)',
        "raise HTTPException(status_code=(422 if status.exception.name in ('BadRequestError', 'ValidationError') "
        'else http_status.HTTP_500_INTERNAL_SERVER_ERROR), detail=status.description)',
    ),
]


def main() -> None:
    if jina.__version__ != EXPECTED_JINA:
        sys.exit(f'patch_jina.py was written for jina {EXPECTED_JINA}, found {jina.__version__}: re-check it')
    path = Path(app_module.__file__)
    source = path.read_text()
    if all(new in source for _, new in REPLACEMENTS):
        print(f'{path.name} is already patched')
        return
    for old, new in REPLACEMENTS:
        if source.count(old) != 1:
            sys.exit(f'patch_jina.py: expected exactly one `{old}` in {path}, found {source.count(old)}')
        source = source.replace(old, new)
    path.write_text(source)
    print(f'patched {path.name}: {len(REPLACEMENTS)} error paths')


if __name__ == '__main__':
    main()
