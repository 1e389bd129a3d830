"""Vendor request signatures, computed as each vendor documents them; compared in constant time.

Also the replay window: a delivery whose vendor timestamp is too old (or too far ahead of
this server's clock) is refused, whatever its signature says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

# A vendor timestamp older than this is a replay (HubSpot documents 5 minutes for its v3
# signatures; Twilio and Aircall deliveries are held to the same window).
REPLAY_WINDOW_MS = 5 * 60 * 1000
HUBSPOT_MAX_AGE_MS = REPLAY_WINDOW_MS
# How far ahead of this server's clock a Twilio or Aircall timestamp may be: clock skew
# between the vendor and us, not a second window.
CLOCK_SKEW_MS = 60 * 1000


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
    if timestamp is None or not (timestamp.isascii() and timestamp.isdigit()):
        return False
    return abs(now_ms - int(timestamp)) <= HUBSPOT_MAX_AGE_MS


def replay_problem(at_ms: int, now_ms: int) -> str | None:
    """Why a delivery the vendor stamped at ``at_ms`` is refused at ``now_ms``, or None when
    the stamp is no more than REPLAY_WINDOW_MS old and no more than CLOCK_SKEW_MS ahead."""
    if now_ms - at_ms > REPLAY_WINDOW_MS:
        return f"is more than {REPLAY_WINDOW_MS // 60_000} minutes old: a replay"
    if at_ms - now_ms > CLOCK_SKEW_MS:
        return f"is more than {CLOCK_SKEW_MS // 1000} s ahead of this server's clock"
    return None
