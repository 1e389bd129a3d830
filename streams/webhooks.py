"""``salespulse ingest``: the HTTP edge where CRMs and telephony deliver, the security boundary.

Routes (docs/adapters.md):

* ``POST /ingest/v1/events``: a JSON array of canonical events; ``Authorization:
  Bearer`` with SALESPULSE_INGEST_TOKEN;
* ``POST /ingest/v1/hubspot``: HubSpot webhook batches, ``X-HubSpot-Signature-v3``
  with SALESPULSE_HUBSPOT_CLIENT_SECRET, request timestamp within 5 minutes;
* ``POST /ingest/v1/salesforce``: Salesforce CDC change events as JSON (from a Pub/Sub
  API relay); ``Authorization: Bearer`` with SALESPULSE_SALESFORCE_TOKEN;
* ``POST /ingest/v1/twilio/voice``: Twilio status callbacks, ``X-Twilio-Signature``
  with SALESPULSE_TWILIO_AUTH_TOKEN, the signed ``Timestamp`` parameter within 5 minutes;
* ``POST /ingest/v1/aircall``: Aircall webhooks, the body's ``token`` compared in
  constant time with SALESPULSE_AIRCALL_TOKEN, the body's ``timestamp`` within 5 minutes;
* ``GET /metrics``: requests by source and status, events, rejections by reason (with
  SALESPULSE_READER_TOKEN_FILE set, only for requests that carry the reader token).

Mapped events go to the raw topic, the parts that cannot be mapped to the
dead-letter topic with their reason, both with acks=all; the answer (200, with
what was accepted, rejected and ignored) is sent only after Kafka acknowledged.
401 bad or missing credentials, or a replay (rejection reason ``replay``): a HubSpot,
Twilio or Aircall timestamp more than 5 minutes old, too far ahead (HubSpot 5 minutes,
Twilio and Aircall 1 minute) or not a date. A Twilio callback or Aircall webhook without
its timestamp is not refused for that; a replay inside the window maps to the same event
ids, which the engine deduplicates. 413 body over SALESPULSE_INGEST_MAX_BODY_BYTES,
400 malformed, 404 an endpoint whose secret is not configured, 503 Kafka
unavailable (the vendor retries). 429 with Retry-After when the sender's token bucket
is empty (SALESPULSE_INGEST_RATE_LIMITS, streams/rate_limit.py; rejection reason
``rate_limited``): a bucket per source and credential, spent only by deliveries that
authenticated and passed the replay window, so a stranger cannot starve a vendor.
Nothing is published for a request answered with 4xx. Errors never carry a stack
trace; secrets are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from adapters import aircall, hubspot, salesforce, twilio
from adapters.canonical import Mapped, Problem
from adapters.config import Mappings, parse_mappings
from adapters.signatures import hubspot_fresh, hubspot_v3, replay_problem, same
from adapters.signatures import twilio as twilio_signature
from config.connections import kafka_options
from config.rate_limits import describe
from config.reader_access import REFUSAL, REFUSAL_HEADERS, reader_token, refusal
from config.secret_files import checked, read_secret_file
from config.settings import Settings
from projections.validation import Rejection, parse_event
from streams.ingest import HEADER_DETAIL, HEADER_FAILED_AT, HEADER_REASON, HEADER_TOPIC
from streams.producer import subject_key
from streams.rate_limit import RateLimiter, fingerprint, retry_after

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "salespulse_webhook_requests_total",
    "HTTP deliveries by source and status",
    ["source", "status"],
)
EVENTS = Counter(
    "salespulse_webhook_events_total", "Canonical events published to the raw topic", ["source"]
)
REJECTIONS = Counter(
    "salespulse_webhook_rejections_total",
    "Deliveries or parts of deliveries rejected, by reason (auth, replay, rate_limited, "
    "too_large, malformed, mapping)",
    ["source", "reason"],
)

SECRETS = {
    "events": "SALESPULSE_INGEST_TOKEN",
    "hubspot": "SALESPULSE_HUBSPOT_CLIENT_SECRET",
    "salesforce": "SALESPULSE_SALESFORCE_TOKEN",
    "twilio": "SALESPULSE_TWILIO_AUTH_TOKEN",
    "aircall": "SALESPULSE_AIRCALL_TOKEN",
}


def read_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """Each endpoint's secret from NAME or from the file NAME_FILE. Neither set (or NAME set
    to nothing): the endpoint is off. A file that cannot be read, or a secret shorter than
    16 characters (an empty file included), fails closed: SecretError, naming the
    variable, never the secret."""
    found = {}
    for source, name in SECRETS.items():
        if environ.get(name):
            found[source] = checked(name, environ[name])
        elif environ.get(f"{name}_FILE"):
            path = environ[f"{name}_FILE"]
            found[source] = read_secret_file(f"{name}_FILE={path}", path)
    return found


class Unavailable(RuntimeError):
    """Kafka did not acknowledge: the vendor must retry."""


class Publisher:
    """One idempotent acks=all producer, started on first use and after a failure."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.bootstrap,
                **kafka_options(self.settings),
                acks="all",
                enable_idempotence=True,
                request_timeout_ms=10_000,
                max_request_size=2 * 1024 * 1024,
            )
            try:
                await asyncio.wait_for(producer.start(), 15)
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def publish(
        self, events: Sequence[bytes], dead: Sequence[tuple[bytes, list[Any]]]
    ) -> None:
        try:
            producer = await self._started()
            sends = [
                await producer.send(self.settings.raw_topic, value, key=subject_key(value))
                for value in events
            ]
            sends += [
                await producer.send(self.settings.dlq_topic, value, headers=headers)
                for value, headers in dead
            ]
            await asyncio.wait_for(asyncio.gather(*sends), 30)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.close()
            raise Unavailable(repr(exc)) from None

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                await producer.stop()
            except Exception:  # a broken producer may fail to stop; it is dropped either way
                log.debug("stopping a failed producer", exc_info=True)


@dataclass
class Verdict:
    """What to do with a delivery that passed authentication and parsing."""

    events: list[bytes]  # to the raw topic
    accepted: int
    rejected: list[Problem]  # reported in the answer
    dead: list[Problem]  # dead-lettered here (canonical events: by the ingest agent)
    ignored: int = 0

    @classmethod
    def of(cls, mapped: Mapped) -> Verdict:
        events = [orjson.dumps(e) for e in mapped.events]
        return cls(events, len(events), mapped.problems, mapped.problems, mapped.ignored)

    def body(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": [{"reason": str(p.reason), "detail": p.detail} for p in self.rejected],
            "ignored": self.ignored,
        }


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


# Called by an endpoint with the credential that authenticated the delivery, once the
# delivery is authenticated and fresh: it spends a token or refuses with 429.
Admit = Callable[[str], None]
Endpoint = Callable[[web.Request, bytes, str, Admit], Awaitable[Verdict]]


class IngestService:
    def __init__(
        self,
        settings: Settings,
        secrets: Mapping[str, str],
        mappings: Mappings,
        publisher: Publisher,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.mappings = mappings
        self.publisher = publisher
        self.clock = clock
        # Monotonic, not ``clock``: a wall clock stepped by NTP must not refill or drain.
        self.limiter = (
            limiter if limiter is not None else RateLimiter(settings.rate_limits, time.monotonic)
        )
        token = reader_token(settings)  # SecretError now, for an unusable file
        self.reader_token = token.encode() if token is not None else None

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.ingest_max_body_bytes, middlewares=[self._guard]
        )
        app.router.add_post("/ingest/v1/events", self._route("events", self._events))
        app.router.add_post("/ingest/v1/hubspot", self._route("hubspot", self._hubspot))
        app.router.add_post("/ingest/v1/salesforce", self._route("salesforce", self._salesforce))
        app.router.add_post("/ingest/v1/twilio/voice", self._route("twilio", self._twilio))
        app.router.add_post("/ingest/v1/aircall", self._route("aircall", self._aircall))
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.on_cleanup.append(lambda _app: self.publisher.close())
        return app

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """No stack trace ever leaves: an unexpected error is logged and answered 500."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return _error(500, "internal error")

    def _route(
        self, source: str, handle: Endpoint
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            response = await self._deliver(request, source, handle)
            REQUESTS.labels(source, str(response.status)).inc()
            return response

        return route

    async def _deliver(self, request: web.Request, source: str, handle: Endpoint) -> web.Response:
        secret = self.secrets.get(source)
        if secret is None:
            return _error(404, f"the {source} endpoint is off: set {SECRETS[source]}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            REJECTIONS.labels(source, "too_large").inc()
            return _error(413, f"body over {self.settings.ingest_max_body_bytes} bytes")
        try:
            verdict = await handle(request, body, secret, lambda used: self._admit(source, used))
        except _Refused as refused:
            REJECTIONS.labels(source, refused.reason).inc()
            return _error(refused.status, refused.message, refused.headers)
        dead = [(p.part, self._headers(source, p)) for p in verdict.dead]
        try:
            await self.publisher.publish(verdict.events, dead)
        except Unavailable as exc:
            log.warning("%s delivery not accepted, Kafka unavailable: %s", source, exc)
            return _error(503, "Kafka is unavailable; retry later")
        EVENTS.labels(source).inc(len(verdict.events))
        for problem in verdict.rejected:
            REJECTIONS.labels(source, str(problem.reason)).inc()
        return web.json_response(verdict.body())

    def _admit(self, source: str, credential: str) -> None:
        """Spend a token of the bucket of (source, credential), or refuse with 429 and when
        to come back. Keyed by a fingerprint, so a second credential of a source would get
        a bucket of its own; the metrics and the answer name the source only."""
        wait = self.limiter.take(source, fingerprint(credential))
        if wait > 0:
            seconds = retry_after(wait)
            raise _Refused(
                429,
                "rate_limited",
                f"over the {source} rate limit: retry after {seconds} s",
                {"Retry-After": str(seconds)},
            )

    def _headers(self, source: str, problem: Problem) -> list[tuple[str, bytes]]:
        return [
            (HEADER_REASON, str(problem.reason).encode()),
            (HEADER_DETAIL, problem.detail.encode("utf-8", "replace")),
            (HEADER_TOPIC, f"http:{source}".encode()),
            (HEADER_FAILED_AT, str(self.clock()).encode()),
        ]

    def _public_url(self, request: web.Request) -> str:
        """The URL the vendor called, which its signature covers."""
        base = self.settings.ingest_public_url.rstrip("/")
        return f"{base}{request.path_qs}" if base else str(request.url)

    # Endpoints -------------------------------------------------------------------------

    async def _events(
        self, request: web.Request, body: bytes, secret: str, admit: Admit
    ) -> Verdict:
        _bearer(request, secret)
        admit(secret)
        values = [orjson.dumps(item) for item in _json_array(body)]
        invalid = []
        now_ms, limits = self.clock(), self.settings.limits
        for value in values:
            checked = parse_event(value, now_ms=now_ms, limits=limits)
            if isinstance(checked, Rejection):
                invalid.append(Problem(checked.reason, checked.detail, value))
        # All go to the raw topic, where the ingest agent dead-letters the invalid ones with
        # the same reasons: one path for bad input, whatever the source.
        return Verdict(values, len(values) - len(invalid), invalid, [])

    async def _hubspot(
        self, request: web.Request, body: bytes, secret: str, admit: Admit
    ) -> Verdict:
        timestamp = request.headers.get("X-HubSpot-Request-Timestamp")
        signature = request.headers.get("X-HubSpot-Signature-v3")
        if timestamp is None:
            raise _Refused(401, "auth", "missing X-HubSpot-Request-Timestamp")
        expected = hubspot_v3(secret, request.method, self._public_url(request), body, timestamp)
        if not same(signature, expected):
            raise _Refused(401, "auth", "missing or wrong X-HubSpot-Signature-v3")
        # Signed, so the timestamp is HubSpot's: counted as a replay, not as bad credentials.
        if not hubspot_fresh(timestamp, self.clock()):
            raise _Refused(401, "replay", "X-HubSpot-Request-Timestamp is not within 5 minutes")
        admit(secret)
        batch = _json_array(body)
        if len(batch) > hubspot.MAX_EVENTS:
            raise _Refused(400, "malformed", f"more than {hubspot.MAX_EVENTS} events in one batch")
        return Verdict.of(hubspot.map_batch(batch, self.mappings))

    async def _salesforce(
        self, request: web.Request, body: bytes, secret: str, admit: Admit
    ) -> Verdict:
        _bearer(request, secret)
        admit(secret)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Refused(400, "malformed", "not JSON") from None
        if not isinstance(document, dict | list):
            raise _Refused(400, "malformed", "expected a change event or an array of them")
        return Verdict.of(salesforce.map_events(document, self.mappings))

    async def _twilio(
        self, request: web.Request, body: bytes, secret: str, admit: Admit
    ) -> Verdict:
        try:
            params = urllib.parse.parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body)
            )
        except (UnicodeDecodeError, ValueError):
            raise _Refused(400, "malformed", "not a form-encoded body") from None
        expected = twilio_signature(secret, self._public_url(request), params)
        if not same(request.headers.get("X-Twilio-Signature"), expected):
            raise _Refused(401, "auth", "missing or wrong X-Twilio-Signature")
        callback = dict(params)
        # The signature covers Timestamp, so it cannot be re-stamped. A signed callback
        # without one is not refused here: the adapter dead-letters it (it has no time).
        if "Timestamp" in callback:
            self._fresh(twilio.timestamp_ms(callback["Timestamp"]), "Timestamp", "an RFC 2822 date")
        admit(secret)
        return Verdict.of(twilio.map_callback(callback, self.mappings, body))

    async def _aircall(
        self, request: web.Request, body: bytes, secret: str, admit: Admit
    ) -> Verdict:
        try:
            envelope = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Refused(400, "malformed", "not JSON") from None
        token = envelope.get("token") if isinstance(envelope, dict) else None
        if not isinstance(token, str) or not same(token, secret):
            raise _Refused(401, "auth", "missing or wrong token")
        # Aircall signs nothing: this stops a verbatim replay, not a holder of the token.
        if "timestamp" in envelope:
            self._fresh(
                aircall.timestamp_ms(envelope["timestamp"]), "timestamp", "a number (Unix seconds)"
            )
        admit(secret)
        # The body carries the credential: what is kept of it (dead letters) must not.
        scrubbed = orjson.dumps({k: v for k, v in envelope.items() if k != "token"})
        return Verdict.of(aircall.map_webhook(envelope, self.mappings, scrubbed))

    def _fresh(self, at_ms: int | None, name: str, form: str) -> None:
        """Refuse (401, reason ``replay``) a delivery whose vendor timestamp is not a date or
        is outside the replay window, before anything is published."""
        if at_ms is None:
            raise _Refused(401, "replay", f"{name} is not {form}: cannot check for a replay")
        problem = replay_problem(at_ms, self.clock())
        if problem is not None:
            raise _Refused(401, "replay", f"{name} {problem}")

    async def _metrics(self, request: web.Request) -> web.Response:
        """Behind the reader token when one is set: this port faces the vendors' proxy."""
        if self.reader_token is not None and refusal(
            request.headers.get("Authorization"), self.reader_token
        ):
            return web.Response(
                status=401,
                text=REFUSAL + "\n",
                headers=REFUSAL_HEADERS,
            )
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"endpoints": sorted(self.secrets)})


class _Refused(Exception):
    def __init__(
        self, status: int, reason: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.headers = headers


def _bearer(request: web.Request, secret: str) -> None:
    given = request.headers.get("Authorization", "")
    if not given.startswith("Bearer ") or not same(given[7:], secret):
        raise _Refused(401, "auth", "missing or wrong bearer token")


def _json_array(body: bytes) -> list[Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Refused(400, "malformed", "not JSON") from None
    if not isinstance(document, list):
        raise _Refused(400, "malformed", "expected a JSON array")
    return document


def load_mappings(settings: Settings) -> Mappings:
    if not settings.mappings_file:
        return Mappings()
    return parse_mappings(Path(settings.mappings_file).read_text())


def run_ingest(settings: Settings) -> int:
    mappings = load_mappings(settings)
    secrets = read_secrets(os.environ)
    if not secrets:
        log.warning("no endpoint is enabled: set one of %s", ", ".join(SECRETS.values()))
    service = IngestService(settings, secrets, mappings, Publisher(settings))
    log.info("ingest endpoints on for: %s", ", ".join(sorted(secrets)) or "none")
    log.info("ingest rate limits per credential: %s", describe(settings.rate_limits))
    web.run_app(service.app(), host=settings.metrics_host, port=settings.ingest_port, print=None)
    return 0
