"""``salespulse ingest`` over HTTP: signatures, tokens, limits, answers, and what is published.

Signatures are computed here from the vendors' documented algorithms (hmac, not the
service's own helpers). Kafka is replaced by a recorder at the one boundary these
tests are about: what the service would publish, and that a rejected request
publishes nothing. The real broker path is tests/integration/test_webhooks_e2e.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from config.rate_limits import DEFAULT_LIMITS, Limit
from config.secret_files import SecretError
from config.settings import Settings
from streams.rate_limit import RateLimiter, fingerprint
from streams.webhooks import SECRETS as SECRET_NAMES
from streams.webhooks import IngestService, Publisher, read_secrets
from tests.support import hypothesis_examples
from tests.unit.test_adapters import BATCH, CALL, MAPPINGS, T0, aircall_hook, rfc2822

pytestmark = pytest.mark.unit

SECRETS = {
    "events": "ev-token",
    "hubspot": "hs-secret",
    "salesforce": "sf-token",
    "twilio": "tw-token",
    "aircall": "tok",
}
BASE = "https://hooks.example.com"
# The service's clock: three minutes after the first callback of CALL and the Aircall
# samples' ``timestamp`` (T0), so every sample delivery is inside the replay window.
NOW_MS = (T0 + 180) * 1000


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


class Clock:
    """The service's clock, set by the test."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW_MS)


@pytest.fixture
async def client(clock: Clock) -> AsyncIterator[tuple[TestClient, Recorder]]:
    recorder = Recorder()
    service = IngestService(
        Settings(ingest_public_url=BASE, ingest_max_body_bytes=64 * 1024),
        SECRETS,
        MAPPINGS,
        recorder,
        clock=clock,
    )
    async with TestClient(TestServer(service.app())) as test_client:
        yield test_client, recorder


def hubspot_headers(
    body: bytes, path: str, secret: str = "hs-secret", age_ms: int = 0
) -> dict[str, str]:
    timestamp = str(NOW_MS - age_ms)
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
    # The call ends once per leg: the agent's (with the talk time) and the caller's.
    assert sorted(orjson.loads(e)["type"] for e in recorder.events) == [
        "call.answered",
        "call.ended",
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


async def test_canonical_events_need_the_bearer_token(
    client: tuple[TestClient, Recorder], clock: Clock
) -> None:
    http, recorder = client
    clock.now_ms = NOW_MS + 3 * 86_400_000  # after the event below, which is not in the future
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
    service = IngestService(
        dead_broker, SECRETS, MAPPINGS, Publisher(dead_broker), clock=Clock(NOW_MS)
    )
    async with TestClient(TestServer(service.app())) as http:
        hook = aircall_hook("call.created")
        response = await http.post(AC, data=orjson.dumps(hook))
        assert response.status == 503
        assert "retry" in (await response.json())["error"]


# Replay window ------------------------------------------------------------------------
#
# Twilio signs its callback's ``Timestamp``; Aircall puts ``timestamp`` (Unix seconds) in
# the body its token authenticates. A delivery stamped more than 5 minutes before the
# service's clock, or more than a minute after it, or with a stamp that is not a date, is
# refused with 401 (rejection reason ``replay``) before anything is published.


def replay_rejections(source: str) -> float:
    """The process-wide count of ``source`` deliveries refused as replays."""
    value = REGISTRY.get_sample_value(
        "salespulse_webhook_rejections_total", {"source": source, "reason": "replay"}
    )
    return value or 0.0


async def post_twilio(http: TestClient, params: dict[str, str]) -> Any:
    return await http.post(
        TW, data=urllib.parse.urlencode(params), headers=twilio_headers(params, TW)
    )


async def post_aircall_stamped(http: TestClient, stamp: bytes) -> Any:
    """An authenticated Aircall ``call.created`` whose ``timestamp`` is ``stamp``, verbatim."""
    body = orjson.dumps({**aircall_hook("call.created"), "timestamp": "@STAMP@"})
    return await http.post(AC, data=body.replace(b'"@STAMP@"', stamp))


async def assert_refused_as_replay(
    response: Any, recorder: Recorder, source: str, before: float, says: str
) -> None:
    assert response.status == 401, await response.text()
    assert says in (await response.json())["error"]
    assert replay_rejections(source) == before + 1
    assert not recorder.events and not recorder.dead


WINDOW = [  # (the service's clock minus the vendor's stamp in seconds, answer)
    (0, 200),
    (300, 200),  # exactly 5 minutes old: still inside
    (301, 401),
    (30 * 86_400, 401),
    (-60, 200),  # a minute ahead of the service's clock: skew allowance
    (-61, 401),
    (-365 * 86_400, 401),
]


@pytest.mark.parametrize(("age_s", "status"), WINDOW)
async def test_a_twilio_callback_outside_the_replay_window_is_refused(
    client: tuple[TestClient, Recorder], clock: Clock, age_s: int, status: int
) -> None:
    http, recorder = client
    clock.now_ms = (T0 + age_s) * 1000  # CALL[0] is stamped T0, and signed with it
    before = replay_rejections("twilio")
    response = await post_twilio(http, CALL[0])
    if status == 200:
        assert response.status == 200, await response.text()
        [started] = recorder.events
        assert orjson.loads(started)["type"] == "call.started"
    else:
        says = "minutes old: a replay" if age_s > 0 else "ahead of this server's clock"
        await assert_refused_as_replay(response, recorder, "twilio", before, says)


@pytest.mark.parametrize(("age_s", "status"), WINDOW)
async def test_an_aircall_webhook_outside_the_replay_window_is_refused(
    client: tuple[TestClient, Recorder], clock: Clock, age_s: int, status: int
) -> None:
    http, recorder = client
    clock.now_ms = (T0 + age_s) * 1000  # the sample's timestamp is T0
    before = replay_rejections("aircall")
    response = await http.post(AC, data=orjson.dumps(aircall_hook("call.created")))
    if status == 200:
        assert response.status == 200, await response.text()
        [started] = recorder.events
        assert orjson.loads(started)["type"] == "call.started"
    else:
        says = "minutes old: a replay" if age_s > 0 else "ahead of this server's clock"
        await assert_refused_as_replay(response, recorder, "aircall", before, says)


async def test_a_stale_hubspot_timestamp_counts_as_a_replay(
    client: tuple[TestClient, Recorder],
) -> None:
    http, recorder = client
    body = orjson.dumps(BATCH)
    before = replay_rejections("hubspot")
    response = await http.post(HS, data=body, headers=hubspot_headers(body, HS, age_ms=301_000))
    await assert_refused_as_replay(response, recorder, "hubspot", before, "within 5 minutes")


@pytest.mark.parametrize(
    ("stamp", "says"),
    [
        ("", "is not an RFC 2822 date"),
        ("yesterday", "is not an RFC 2822 date"),
        ("NaN", "is not an RFC 2822 date"),
        ("-1", "is not an RFC 2822 date"),
        (str(T0), "is not an RFC 2822 date"),  # Unix seconds are not Twilio's format
        ("Wed, 31 Feb 2026 11:06:40 +0000", "is not an RFC 2822 date"),
        ("Wed, 18 Nov 2026 11:06:40 +9999", "is not an RFC 2822 date"),
        ("Wed, 18 Nov 99999999999999999999 11:06:40 +0000", "is not an RFC 2822 date"),
        ("\x00\u202e", "is not an RFC 2822 date"),
        ("Thu, 01 Jan 1970 00:00:00 +0000", "minutes old: a replay"),
        ("Fri, 31 Dec 9999 23:59:59 -2359", "ahead of this server's clock"),
    ],
)
async def test_a_signed_twilio_timestamp_that_is_not_a_fresh_date_is_refused(
    client: tuple[TestClient, Recorder], stamp: str, says: str
) -> None:
    http, recorder = client
    before = replay_rejections("twilio")
    response = await post_twilio(http, {**CALL[0], "Timestamp": stamp})
    await assert_refused_as_replay(response, recorder, "twilio", before, says)


@pytest.mark.parametrize(
    ("stamp", "says"),
    [
        (b'"1795000000"', "is not a number (Unix seconds)"),  # a string, not a number
        (b'"NaN"', "is not a number (Unix seconds)"),
        (b"null", "is not a number (Unix seconds)"),
        (b"true", "is not a number (Unix seconds)"),
        (b"[1795000000]", "is not a number (Unix seconds)"),
        (b'{"$numberLong": "1795000000"}', "is not a number (Unix seconds)"),
        (b"-1", "minutes old: a replay"),
        (b"-9223372036854775808", "minutes old: a replay"),
        (b"1795000000000", "ahead of this server's clock"),  # milliseconds: far ahead
        (b"18446744073709551615", "ahead of this server's clock"),
        (b"1" + b"0" * 40, "ahead of this server's clock"),  # read as a float
        (b"1e308", "ahead of this server's clock"),
        (b"-1e308", "minutes old: a replay"),
    ],
)
async def test_an_aircall_timestamp_that_is_not_a_fresh_number_is_refused(
    client: tuple[TestClient, Recorder], stamp: bytes, says: str
) -> None:
    http, recorder = client
    before = replay_rejections("aircall")
    response = await post_aircall_stamped(http, stamp)
    await assert_refused_as_replay(response, recorder, "aircall", before, says)


async def test_an_aircall_timestamp_that_is_not_json_is_a_400(
    client: tuple[TestClient, Recorder],
) -> None:
    http, recorder = client
    for stamp in (b"NaN", b"Infinity", b"1e400", b"0x6AFB8F80"):
        assert (await post_aircall_stamped(http, stamp)).status == 400
    assert (await post_aircall_stamped(http, f"{T0}.5".encode())).status == 200  # a float
    assert len(recorder.events) == 1 and not recorder.dead


async def test_deliveries_without_a_vendor_timestamp_are_not_refused_as_replays(
    client: tuple[TestClient, Recorder], clock: Clock
) -> None:
    """Aircall documents ``timestamp`` in every envelope, Twilio ``Timestamp`` in every
    status callback; one without it is taken as the vendor sent it, not refused: Aircall
    disables a webhook that keeps failing, and the check could not stop a replay anyway
    (an unsigned Aircall body can be re-stamped by whoever holds the token)."""
    http, recorder = client
    clock.now_ms = (T0 + 30 * 86_400) * 1000  # any stamp of the samples would be stale
    hook = aircall_hook("call.created")
    del hook["timestamp"]
    response = await http.post(AC, data=orjson.dumps(hook))
    assert response.status == 200 and len(recorder.events) == 1
    # A signed callback without Timestamp has no time for its event: dead-lettered as such.
    unstamped = {k: v for k, v in CALL[0].items() if k != "Timestamp"}
    response = await post_twilio(http, unstamped)
    assert response.status == 200
    assert (await response.json())["rejected"] == [
        {"reason": "malformed", "detail": "missing Timestamp"}
    ]
    assert len(recorder.events) == 1 and len(recorder.dead) == 1


async def test_a_replay_inside_the_window_maps_to_the_same_event_ids(
    client: tuple[TestClient, Recorder], clock: Clock
) -> None:
    """Inside the window a replay is accepted, and harmless: it maps to the event ids of
    the first delivery, and the engine applies an event id once."""
    http, recorder = client
    for _ in range(2):
        assert (await post_twilio(http, CALL[0])).status == 200
        assert (await http.post(AC, data=orjson.dumps(aircall_hook("call.created")))).status == 200
        clock.now_ms += 100_000  # the replay comes later, still inside the window
    first_twilio, first_aircall, *again = recorder.events
    assert again == [first_twilio, first_aircall]  # byte for byte: same ids, same events
    assert orjson.loads(first_twilio)["event_id"] != orjson.loads(first_aircall)["event_id"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
twilio_stamps = st.text(max_size=40) | st.integers(T0 - 1_000, T0 + 1_000).map(rfc2822)
aircall_stamps = json_values | st.integers(T0 - 1_000, T0 + 1_000)


async def test_any_vendor_timestamp_is_answered_200_or_401_and_a_refusal_publishes_nothing(
    client: tuple[TestClient, Recorder],
) -> None:
    http, recorder = client
    statuses: dict[tuple[str, int], int] = {}

    async def answered(response: Any, before: tuple[int, int], stamp: object) -> int:
        key = (response.url.path, response.status)
        statuses[key] = statuses.get(key, 0) + 1
        assert response.status in (200, 401), (stamp, await response.text())
        if response.status == 401:
            assert (len(recorder.events), len(recorder.dead)) == before, stamp
        return int(response.status)

    for text in hypothesis_examples(twilio_stamps, 150):
        before = (len(recorder.events), len(recorder.dead))
        await answered(await post_twilio(http, {**CALL[0], "Timestamp": text}), before, text)
    for value in hypothesis_examples(aircall_stamps, 150):
        before = (len(recorder.events), len(recorder.dead))
        status = await answered(
            await post_aircall_stamped(http, orjson.dumps(value)), before, value
        )
        fresh = False  # the window, computed here from the documented rule
        if isinstance(value, int | float) and not isinstance(value, bool):
            fresh = -300 <= value - NOW_MS / 1000 <= 60
        assert (status == 200) == fresh, value
    assert all(statuses.get((path, s)) for path in (TW, AC) for s in (200, 401)), statuses


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


async def test_the_ingest_metrics_need_the_reader_token_when_one_is_set(tmp_path: Path) -> None:
    token_file = tmp_path / "reader-token"
    token_file.write_text("reader-token-0123456789\n")
    service = IngestService(
        Settings(reader_token_file=str(token_file)),
        {},
        MAPPINGS,
        Recorder(),  # type: ignore[arg-type]
    )
    async with TestClient(TestServer(service.app())) as test_client:
        refused = await test_client.get("/metrics")
        assert refused.status == 401 and "WWW-Authenticate" in refused.headers
        assert b"salespulse_webhook" not in await refused.read()
        wrong = await test_client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        ok = await test_client.get(
            "/metrics", headers={"Authorization": "Bearer reader-token-0123456789"}
        )
        assert ok.status == 200 and b"salespulse_webhook_requests_total" in await ok.read()
    token_file.write_text("")
    with pytest.raises(SecretError, match="SALESPULSE_READER_TOKEN_FILE"):
        IngestService(Settings(reader_token_file=str(token_file)), {}, MAPPINGS, Recorder())  # type: ignore[arg-type]


# Rate limits ----------------------------------------------------------------------------
#
# A token bucket per source and credential, spent once a delivery is authenticated and
# inside the replay window; an empty one is a 429 with Retry-After that publishes nothing.
# The buckets run on a fake monotonic clock the test moves (the replay window keeps the
# service's wall clock, NOW_MS).


class Ticks:
    """The rate limiter's monotonic clock, in seconds, moved by the test."""

    def __init__(self) -> None:
        self.now = 50_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def limited(
    limits: Mapping[str, Limit | None], ticks: Ticks
) -> AsyncIterator[tuple[TestClient, Recorder]]:
    recorder = Recorder()
    service = IngestService(
        Settings(ingest_public_url=BASE),
        SECRETS,
        MAPPINGS,
        recorder,
        clock=Clock(NOW_MS),
        limiter=RateLimiter(limits, ticks),
    )
    async with TestClient(TestServer(service.app())) as test_client:
        yield test_client, recorder


def counted(source: str, reason: str = "rate_limited") -> float:
    value = REGISTRY.get_sample_value(
        "salespulse_webhook_rejections_total", {"source": source, "reason": reason}
    )
    return value or 0.0


def answered(source: str, status: int) -> float:
    value = REGISTRY.get_sample_value(
        "salespulse_webhook_requests_total", {"source": source, "status": str(status)}
    )
    return value or 0.0


async def post_hubspot(http: TestClient, batch: list[Any]) -> Any:
    body = orjson.dumps(batch)
    return await http.post(HS, data=body, headers=hubspot_headers(body, HS))


async def post_aircall(http: TestClient) -> Any:
    return await http.post(AC, data=orjson.dumps(aircall_hook("call.created")))


def test_every_endpoint_has_a_default_limit() -> None:
    assert set(DEFAULT_LIMITS) == set(SECRET_NAMES)
    assert all(limit is not None for limit in Settings().rate_limits.values())


async def test_a_burst_beyond_the_bucket_is_a_429_with_retry_after_that_publishes_nothing() -> None:
    ticks = Ticks()
    before = (counted("aircall"), answered("aircall", 429), answered("aircall", 200))
    async with limited({"aircall": Limit(0.5, 3)}, ticks) as (http, recorder):
        responses = [await post_aircall(http) for _ in range(5)]
        assert [r.status for r in responses] == [200, 200, 200, 429, 429]
        for refused in responses[3:]:
            assert refused.headers["Retry-After"] == "2"  # one token at 0.5/s
            assert await refused.json() == {"error": "over the aircall rate limit: retry after 2 s"}
        assert len(recorder.events) == 3 and not recorder.dead  # the accepted three only
        assert (counted("aircall"), answered("aircall", 429), answered("aircall", 200)) == (
            before[0] + 2,
            before[1] + 2,
            before[2] + 3,
        )
        scraped = await (await http.get("/metrics")).text()
    assert 'salespulse_webhook_rejections_total{reason="rate_limited",source="aircall"}' in (
        scraped
    )
    # Labelled by source only: neither a secret nor a bucket's fingerprint is exposed.
    for secret in SECRETS.values():
        assert secret not in scraped and fingerprint(secret) not in scraped
        for refused in responses[3:]:
            assert secret not in await refused.text()
            assert fingerprint(secret) not in str(refused.headers)


async def test_a_batch_refused_with_429_is_published_whole_when_the_vendor_retries() -> None:
    """Nothing accepted is lost: a 200 published its events, a 429 none, and the vendor's
    retry after Retry-After publishes exactly what the first delivery would have."""
    ticks = Ticks()
    async with limited({"hubspot": Limit(0.2, 1)}, ticks) as (http, recorder):
        assert (await post_hubspot(http, BATCH)).status == 200
        published = list(recorder.events)
        assert len(published) == 4
        second = BATCH[::-1]  # another delivery, whose events are known: the same ones
        refused = await post_hubspot(http, second)
        assert refused.status == 429 and refused.headers["Retry-After"] == "5"
        assert recorder.events == published and not recorder.dead
        ticks.now += 5
        retried = await post_hubspot(http, second)
        assert retried.status == 200
        assert await retried.json() == {"accepted": 4, "rejected": [], "ignored": 1}
        assert sorted(recorder.events[4:]) == sorted(published)  # the same events, all of them


async def test_deliveries_refused_before_the_bucket_never_spend_its_tokens() -> None:
    """Bad signatures and tokens, and replays outside the window, are refused without
    touching the bucket: a stranger flooding the endpoint cannot starve the vendor."""
    ticks = Ticks()
    one_each = dict.fromkeys(SECRETS, Limit(0.001, 1))
    async with limited(one_each, ticks) as (http, recorder):
        body = orjson.dumps(BATCH)
        stale = orjson.dumps({**aircall_hook("call.created"), "timestamp": T0 - 3_600})
        for _ in range(20):
            junk = [
                await http.post(HS, data=body, headers=hubspot_headers(body, HS, "wrong")),
                await http.post(HS, data=body, headers=hubspot_headers(body, HS, age_ms=400_000)),
                await http.post(TW, data=urllib.parse.urlencode(CALL[0]), headers={}),
                await post_twilio(http, {**CALL[0], "Timestamp": rfc2822(T0 - 3_600)}),
                await http.post(
                    AC, data=orjson.dumps({**aircall_hook("call.created"), "token": "x"})
                ),
                await http.post(AC, data=stale),
                await http.post(EV, data=b"[]", headers={"Authorization": "Bearer wrong"}),
                await http.post(SF, data=b"{}", headers={"Authorization": "Bearer ev-token"}),
            ]
            assert {r.status for r in junk} == {401}
        assert not recorder.events and not recorder.dead

        async def one_good_delivery_each() -> list[int]:
            return [
                (await post_hubspot(http, BATCH)).status,
                (await post_twilio(http, CALL[0])).status,
                (await post_aircall(http)).status,
                (
                    await http.post(EV, data=b"[]", headers={"Authorization": "Bearer ev-token"})
                ).status,
                (
                    await http.post(SF, data=b"[]", headers={"Authorization": "Bearer sf-token"})
                ).status,
            ]

        # Each source's single token is still there, and then it is spent.
        assert await one_good_delivery_each() == [200] * 5
        assert await one_good_delivery_each() == [429] * 5


async def test_after_retry_after_the_sender_is_admitted_again() -> None:
    ticks = Ticks()
    async with limited({"twilio": Limit(0.25, 1)}, ticks) as (http, recorder):
        assert (await post_twilio(http, CALL[0])).status == 200
        published = list(recorder.events)
        refused = await post_twilio(http, CALL[4])
        assert refused.status == 429 and refused.headers["Retry-After"] == "4"
        ticks.now += 3  # too early: told to wait the rest
        early = await post_twilio(http, CALL[4])
        assert early.status == 429 and early.headers["Retry-After"] == "1"
        assert recorder.events == published
        ticks.now += 1
        assert (await post_twilio(http, CALL[4])).status == 200
        assert [orjson.loads(e)["type"] for e in recorder.events] == ["call.started", "call.ended"]


async def test_each_source_has_its_own_bucket() -> None:
    ticks = Ticks()
    async with limited(dict.fromkeys(SECRETS, Limit(1, 2)), ticks) as (http, recorder):
        assert [(await post_aircall(http)).status for _ in range(3)] == [200, 200, 429]
        assert (await post_twilio(http, CALL[0])).status == 200
        assert (await post_hubspot(http, BATCH)).status == 200
        assert len(recorder.events) == 2 + 1 + 4  # two Aircall webhooks, a callback, a batch


async def test_limits_come_from_the_settings_and_off_lifts_one() -> None:
    settings = Settings(ingest_rate_limits="aircall=off,events=0.001/s:1")
    service = IngestService(settings, SECRETS, MAPPINGS, Recorder(), clock=Clock(NOW_MS))
    async with TestClient(TestServer(service.app())) as http:
        assert {(await post_aircall(http)).status for _ in range(50)} == {200}
        auth = {"Authorization": "Bearer ev-token"}
        assert (await http.post(EV, data=b"[]", headers=auth)).status == 200
        refused = await http.post(EV, data=b"[]", headers=auth)
        assert refused.status == 429 and refused.headers["Retry-After"] == "1000"
