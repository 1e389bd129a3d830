"""Vendor request signatures, computed as each vendor documents them; compared in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

# HubSpot v3: a request timestamp older than this is a replay.
HUBSPOT_MAX_AGE_MS = 5 * 60 * 1000


def hubspot_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """X-HubSpot-Signature-v3: base64 HMAC-SHA256 over method + URI + body + timestamp."""
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def twilio(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 over the full URL followed by the POST
    parameters sorted by name, each name immediately followed by its value."""
    message = url + "".join(f"{name}{value}" for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def same(given: str | None, expected: str) -> bool:
    """Constant-time comparison; a missing value never matches."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def hubspot_fresh(timestamp: str | None, now_ms: int) -> bool:
    """The request timestamp (epoch ms) is within the replay window."""
    if timestamp is None or not timestamp.isdigit():
        return False
    return abs(now_ms - int(timestamp)) <= HUBSPOT_MAX_AGE_MS
