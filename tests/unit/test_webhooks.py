"""``salespulse ingest`` over HTTP: signatures, tokens, limits, answers, and what is published.

Signatures are computed here from the vendors' documented algorithms (hmac, not the
service's own helpers). Kafka is replaced by a recorder at the one boundary these
tests are about: what the service would publish, and that a rejected request
publishes nothing. The real broker path is tests/integration/test_webhooks_e2e.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import strategies as st

from streams.secret_files import SecretError
from streams.settings import Settings
from streams.webhooks import IngestService, Publisher, read_secrets
from tests.support import hypothesis_examples
from tests.unit.test_adapters import BATCH, CALL, MAPPINGS, aircall_hook

pytestmark = pytest.mark.unit

SECRETS = {
    "events": "ev-token",
    "hubspot": "hs-secret",
    "salesforce": "sf-token",
    "twilio": "tw-token",
    "aircall": "tok",
}
BASE = "https://hooks.example.com"


class Recorder(Publisher):
    """Keeps what would go to Kafka."""

    def __init__(self) -> None:
        super().__init__(Settings())
        self.events: list[bytes] = []
        self.dead: list[tuple[bytes, list[Any]]] = []

    async def publish(
        self, events: Sequence[bytes], dead: Sequence[tuple[bytes, list[Any]]]
    ) -> None:
        self.events += events
        self.dead += dead


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient, Recorder]]:
    recorder = Recorder()
    service = IngestService(
        Settings(ingest_public_url=BASE, ingest_max_body_bytes=64 * 1024),
        SECRETS,
        MAPPINGS,
        recorder,
    )
    async with TestClient(TestServer(service.app())) as test_client:
        yield test_client, recorder


def hubspot_headers(
    body: bytes, path: str, secret: str = "hs-secret", age_ms: int = 0
) -> dict[str, str]:
    timestamp = str(time.time_ns() // 1_000_000 - age_ms)
    message = b"POST" + f"{BASE}{path}".encode() + body + timestamp.encode()
    signature = base64.b64encode(
        hmac.new(secret.encode(), message, hashlib.sha256).digest()
    ).decode()
    return {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": timestamp}


def twilio_headers(params: dict[str, str], path: str, token: str = "tw-token") -> dict[str, str]:
    data = f"{BASE}{path}" + "".join(k + v for k, v in sorted(params.items()))
    signature = base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest())
    return {
        "X-Twilio-Signature": signature.decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


HS = "/ingest/v1/hubspot"
TW = "/ingest/v1/twilio/voice"
AC = "/ingest/v1/aircall"
EV = "/ingest/v1/events"
SF = "/ingest/v1/salesforce"


async def test_signed_hubspot_batch_is_published(client: tuple[TestClient, Recorder]) -> None:
    http, recorder = client
    body = orjson.dumps(BATCH)
    response = await http.post(HS, data=body, headers=hubspot_headers(body, HS))
    assert response.status == 200
    assert await response.json() == {"accepted": 4, "rejected": [], "ignored": 1}
    assert [orjson.loads(e)["type"] for e in recorder.events] == [
        "lead.created",
        "lead.assigned",
        "lead.stage_changed",
        "opportunity.stage_changed",
    ]


@pytest.mark.parametrize("tamper", ["byte", "secret", "stale", "no signature", "no timestamp"])
async def test_hubspot_signature_failures_are_401(
    client: tuple[TestClient, Recorder], tamper: str
) -> None:
    http, recorder = client
    body = orjson.dumps(BATCH)
    headers = hubspot_headers(body, HS, age_ms=6 * 60_000 if tamper == "stale" else 0)
    if tamper == "secret":
        headers = hubspot_headers(body, HS, secret="wrong")
    if tamper == "byte":
        body = body.replace(b"FORM", b"FORN")
    if tamper == "no signature":
        del headers["X-HubSpot-Signature-v3"]
    if tamper == "no timestamp":
        del headers["X-HubSpot-Request-Timestamp"]
    response = await http.post(HS, data=body, headers=headers)
    assert response.status == 401
    assert not recorder.events and not recorder.dead


async def test_signed_twilio_callbacks_are_published(client: tuple[TestClient, Recorder]) -> None:
    http, recorder = client
    for params in CALL:
        response = await http.post(
            TW, data=urllib.parse.urlencode(params), headers=twilio_headers(params, TW)
        )
        assert response.status == 200, await response.text()
    assert sorted(orjson.loads(e)["type"] for e in recorder.events) == [
        "call.answered",
        "call.ended",
        "call.started",
    ]


@pytest.mark.parametrize("tamper", ["byte", "secret", "no signature"])
async def test_twilio_signature_failures_are_401(
    client: tuple[TestClient, Recorder], tamper: str
) -> None:
    http, recorder = client
    params = dict(CALL[0])
    headers = twilio_headers(params, TW, token="wrong" if tamper == "secret" else "tw-token")
    if tamper == "byte":
        params["To"] = "+15550101"
    if tamper == "no signature":
        del headers["X-Twilio-Signature"]
    response = await http.post(TW, data=urllib.parse.urlencode(params), headers=headers)
    assert response.status == 401
    assert not recorder.events


async def test_aircall_token(client: tuple[TestClient, Recorder]) -> None:
    http, recorder = client
    hook = aircall_hook("call.created")
    assert (await http.post(AC, data=orjson.dumps(hook))).status == 200
    for token in ("tok2", "", None, 12):
        response = await http.post(AC, data=orjson.dumps({**hook, "token": token}))
        assert response.status == 401
    assert len(recorder.events) == 1


async def test_canonical_events_need_the_bearer_token(client: tuple[TestClient, Recorder]) -> None:
    http, recorder = client
    good = {
        "event_id": "e1",
        "type": "campaign.spend",
        "occurred_at": "2026-11-20T10:00:00Z",
        "schema_version": 1,
        "campaign_id": "c1",
        "amount_minor": 500,
    }
    bad = {**good, "event_id": "e2", "amount_minor": -5}
    body = orjson.dumps([good, bad])
    for auth in (None, "Bearer nope", "ev-token", "Basic ev-token"):
        headers = {"Authorization": auth} if auth else {}
        assert (await http.post(EV, data=body, headers=headers)).status == 401
    response = await http.post(EV, data=body, headers={"Authorization": "Bearer ev-token"})
    answer = await response.json()
    assert response.status == 200 and answer["accepted"] == 1
    assert answer["rejected"][0]["reason"] == "negative_value"
    # Both go to the raw topic: the ingest agent dead-letters the bad one, as for any source.
    assert len(recorder.events) == 2 and not recorder.dead


async def test_salesforce_change_events_need_the_bearer_token(
    client: tuple[TestClient, Recorder],
) -> None:
    http, recorder = client
    header = {
        "entityName": "Lead",
        "recordIds": ["00Q1"],
        "changeType": "GAP_CREATE",
        "commitTimestamp": 1_795_000_000_000,
    }
    body = orjson.dumps({"ChangeEventHeader": header})
    assert (
        await http.post(SF, data=body, headers={"Authorization": "Bearer ev-token"})
    ).status == 401
    response = await http.post(SF, data=body, headers={"Authorization": "Bearer sf-token"})
    assert (await response.json())["rejected"][0]["reason"] == "gap"
    assert len(recorder.dead) == 1 and not recorder.events


async def test_unmappable_parts_go_to_the_dead_letter_topic(
    client: tuple[TestClient, Recorder],
) -> None:
    http, recorder = client
    body = orjson.dumps([*BATCH[:1], {**BATCH[0], "objectId": 52, "changeSource": "IMPORT"}])
    response = await http.post(HS, data=body, headers=hubspot_headers(body, HS))
    answer = await response.json()
    assert answer["accepted"] == 1
    assert answer["rejected"][0]["reason"] == "unmapped_value"
    [(value, headers)] = recorder.dead
    assert orjson.loads(value)["objectId"] == 52
    assert dict(headers)["salespulse.dlq.reason"] == b"unmapped_value"


async def test_limits_and_malformed_bodies(client: tuple[TestClient, Recorder]) -> None:
    http, recorder = client
    huge = b"[" + b'"x",' * 20_000 + b'"x"]'
    assert (await http.post(HS, data=huge, headers=hubspot_headers(huge, HS))).status == 413
    for body in (b"{", b'{"a":1}', b""):
        assert (await http.post(HS, data=body, headers=hubspot_headers(body, HS))).status in (
            400,
            401,
        )
    too_many = orjson.dumps(BATCH * 21)
    assert (await http.post(HS, data=too_many, headers=hubspot_headers(too_many, HS))).status == 400
    assert (await http.post(AC, data=b"\xff")).status == 400
    assert not recorder.events and not recorder.dead


async def test_an_endpoint_without_a_secret_is_off() -> None:
    service = IngestService(Settings(), {}, MAPPINGS, Recorder())
    async with TestClient(TestServer(service.app())) as http:
        response = await http.post(AC, data=b"{}")
        assert response.status == 404
        assert "SALESPULSE_AIRCALL_TOKEN" in (await response.json())["error"]


async def test_kafka_unavailable_is_503_so_the_vendor_retries() -> None:
    dead_broker = Settings(kafka_port=1)  # nothing listens on port 1
    service = IngestService(dead_broker, SECRETS, MAPPINGS, Publisher(dead_broker))
    async with TestClient(TestServer(service.app())) as http:
        hook = aircall_hook("call.created")
        response = await http.post(AC, data=orjson.dumps(hook))
        assert response.status == 503
        assert "retry" in (await response.json())["error"]


# Fuzz ---------------------------------------------------------------------------------

garbage = st.one_of(
    st.binary(max_size=2_000),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
        ),
        max_leaves=30,
    ).map(orjson.dumps),
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "subscriptionType": st.text(max_size=30),
                "objectId": st.integers(-(2**63), 2**63 - 1) | st.text(),
                "occurredAt": st.integers(0, 2**62) | st.none(),
            },
        ),
        max_size=5,
    ).map(orjson.dumps),
)
requests = st.tuples(st.sampled_from([HS, TW, AC, EV, SF]), garbage, st.booleans())


async def test_garbage_never_gets_a_5xx_and_nothing_is_published_when_refused(
    client: tuple[TestClient, Recorder],
) -> None:
    """Each example is posted unsigned, and signed/authenticated where ``sign`` says so:
    a well-authenticated garbage body must still not crash the mapping."""
    http, recorder = client
    statuses: dict[int, int] = {}
    for path, body, sign in hypothesis_examples(requests, 400):
        headers: dict[str, str] = {}
        if sign and path == HS:
            headers = hubspot_headers(body, HS)
        elif sign and path in (EV, SF):
            headers = {"Authorization": f"Bearer {'ev' if path == EV else 'sf'}-token"}
        elif sign and path == TW:
            try:
                params = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
            except UnicodeDecodeError:
                params = {}
            headers = twilio_headers(params, TW)
        before = (len(recorder.events), len(recorder.dead))
        response = await http.post(path, data=body, headers=headers)
        statuses[response.status] = statuses.get(response.status, 0) + 1
        assert response.status < 500, (path, body[:200], await response.text())
        assert "Traceback" not in await response.text()
        if response.status != 200:
            assert (len(recorder.events), len(recorder.dead)) == before, (path, body[:200])
    assert statuses.get(401) and statuses.get(400), statuses  # the garbage reached both checks


def test_secrets_come_from_the_environment_or_files(tmp_path: Path) -> None:
    token = tmp_path / "twilio-token"
    token.write_text("from-a-file-0123456789\n")
    found = read_secrets(
        {
            "SALESPULSE_INGEST_TOKEN": "x" * 16,
            "SALESPULSE_TWILIO_AUTH_TOKEN_FILE": str(token),
            "SALESPULSE_AIRCALL_TOKEN": "",  # set to nothing: the endpoint is off
        }
    )
    assert found == {"events": "x" * 16, "twilio": "from-a-file-0123456789"}


@pytest.mark.parametrize("content", ["", "\n", "  \n", "short-secret\n"])
def test_an_empty_or_short_secret_file_fails_closed(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secret"
    path.write_text(content)
    with pytest.raises(SecretError, match=r"SALESPULSE_AIRCALL_TOKEN_FILE=.*use at least 16"):
        read_secrets({"SALESPULSE_AIRCALL_TOKEN_FILE": str(path)})


def test_a_short_secret_or_a_missing_file_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="SALESPULSE_INGEST_TOKEN: the secret is 5 characters"):
        read_secrets({"SALESPULSE_INGEST_TOKEN": "abcde"})
    missing = tmp_path / "nope"
    with pytest.raises(SecretError, match="cannot read it"):
        read_secrets({"SALESPULSE_HUBSPOT_CLIENT_SECRET_FILE": str(missing)})


async def test_an_aircall_dead_letter_keeps_no_token(client: tuple[TestClient, Recorder]) -> None:
    http, recorder = client
    hook = aircall_hook("call.created")
    del hook["data"]["number"]  # type: ignore[attr-defined]  # an inbound call must have one
    assert (await http.post(AC, data=orjson.dumps(hook))).status == 200
    [(value, _)] = recorder.dead
    kept = orjson.loads(value)
    assert "token" not in kept and kept["data"]["id"] == 812
