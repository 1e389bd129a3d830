"""Readers' access: a bearer token, or basic auth with the token as password.

With ``SALESPULSE_READER_TOKEN_FILE`` set, the exporter (``exporters/auth.py``) and the
worker's ``/metrics`` (``streams/metrics_server.py``) answer only requests that carry the
token; unset, they are open. Basic auth (any user name) is there for browsers: the 401's
challenge makes them prompt once. Prometheus and scripts send ``Authorization: Bearer``.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from config.secret_files import read_secret_file
from config.settings import Settings

CHALLENGE = 'Basic realm="salespulse", charset="UTF-8"'
# What every refused reader gets: the challenge (a browser prompts), never a cached answer.
REFUSAL = "a reader token is required: Authorization: Bearer <token>, or basic auth"
REFUSAL_HEADERS = {"WWW-Authenticate": CHALLENGE, "Cache-Control": "no-store"}
# Why a request was refused: bounded label values of the refusal counters.
MISSING, WRONG = "missing", "wrong"


def reader_token(settings: Settings) -> str | None:
    """The token readers must present, None when access is open; SecretError when the file is
    set but unusable (missing, empty, short): nothing may start open by mistake."""
    path = settings.reader_token_file
    if not path:
        return None
    return read_secret_file(f"SALESPULSE_READER_TOKEN_FILE={path}", path)


def reader_headers(settings: Settings) -> dict[str, str]:
    """What a reader of the exporter or of the worker's metrics sends: the bearer token when
    SALESPULSE_READER_TOKEN_FILE is set (SecretError if it is unusable), else nothing."""
    token = reader_token(settings)
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def presented_token(header: str) -> bytes | None:
    """The token an ``Authorization`` header carries (bearer, or basic's password), or None."""
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    try:
        if scheme.lower() == "bearer":
            # aiohttp decodes header bytes as UTF-8 with surrogateescape: this gives them back.
            return credentials.encode("utf-8", "surrogateescape")
        if scheme.lower() == "basic":
            decoded = base64.b64decode(credentials.encode("ascii"), validate=True)
            _user, colon, password = decoded.partition(b":")
            return password if colon else None
    except (UnicodeEncodeError, binascii.Error):
        return None
    return None


def refusal(header: str | None, token: bytes) -> str | None:
    """Why a request with this ``Authorization`` header is refused, or None if it is not."""
    if header is None or not header.strip():
        return MISSING
    presented = presented_token(header)
    # Compared even when the header could not be parsed, so that time says nothing.
    matches = hmac.compare_digest(presented or b"", token)
    return None if presented is not None and matches else WRONG
