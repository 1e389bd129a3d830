"""Vendor request signatures, computed as the vendors document them (formats.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def hubspot_headers(url: str, body: bytes, secret: str) -> dict[str, str]:
    """``X-HubSpot-Signature-v3`` (HMAC-SHA256 over method, URL, body and timestamp), stamped
    now: send at once, the service refuses a stamp older than 5 minutes."""
    stamp = str(time.time_ns() // 1_000_000)
    message = b"POST" + url.encode() + body + stamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
        "X-HubSpot-Request-Timestamp": stamp,
    }
