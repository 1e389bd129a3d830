"""Posting deliveries to a running `salespulse ingest` as the vendors do: signatures computed
with the documented algorithms (formats.md), answers read back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson

# Test secrets for every endpoint (16 characters or more, as the service requires).
SECRETS = {
    "SALESPULSE_INGEST_TOKEN": "ev-token-0123456789",
    "SALESPULSE_HUBSPOT_CLIENT_SECRET": "hs-secret-0123456789",
    "SALESPULSE_SALESFORCE_TOKEN": "sf-token-0123456789",
    "SALESPULSE_TWILIO_AUTH_TOKEN": "tw-token-0123456789",
    "SALESPULSE_AIRCALL_TOKEN": "ac-token-0123456789",
}


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


class IngestClient:
    """The service on a loopback ``port``, at its public URL (what signatures cover)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def service_env(self, stack_env: dict[str, str], mappings: Path) -> dict[str, str]:
        """The environment of a service (and worker) with every endpoint on, on a fresh topic
        prefix."""
        return {
            **stack_env,
            **SECRETS,
            "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
            "SALESPULSE_INGEST_PORT": str(self.port),
            "SALESPULSE_INGEST_PUBLIC_URL": self.base,
            "SALESPULSE_MAPPINGS_FILE": str(mappings),
        }

    def send(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of one delivery; HubSpot's are signed as they are sent."""
        if path == "/ingest/v1/hubspot":
            secret = SECRETS["SALESPULSE_HUBSPOT_CLIENT_SECRET"]
            headers = {**headers, **hubspot_headers(f"{self.base}{path}", body, secret)}
        request = urllib.request.Request(
            f"{self.base}{path}", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as refused:
            return refused.code, dict(refused.headers), refused.read()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """The answer of a delivery that must be accepted whole."""
        status, _, content = self.send(path, body, headers)
        assert status == 200, (status, content)
        answer: dict[str, Any] = orjson.loads(content)
        assert not answer["rejected"], (path, answer)
        return answer

    def canonical(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        bearer = {"Authorization": f"Bearer {SECRETS['SALESPULSE_INGEST_TOKEN']}"}
        body = orjson.dumps(events)
        return self.post("/ingest/v1/events", body, {**bearer, "Content-Type": "application/json"})

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.base}/health", timeout=2) as response:
            return bool(response.status == 200)
