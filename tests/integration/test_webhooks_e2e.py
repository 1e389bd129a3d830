"""A scripted day of HubSpot, Twilio and Aircall deliveries through `salespulse ingest`.

Real processes: the ingest service, Kafka, the worker, Redis. The script writes each
vendor delivery together with the canonical event(s) it must become, written here
by hand from the adapters' documented rules (not by calling them). Deliveries are
signed as the vendors sign them, some retried, each call's callbacks shuffled.
At the end every KPI of the org, both teams, both queues and every rep equals the
oracle's computation over the expected canonical events.

Twilio and Aircall deliveries carry the vendor's timestamp, which the service holds to
a 5-minute replay window (docs/adapters.md), so they are made just before they are
posted: Twilio's ``Timestamp`` is also its event's time, so its calls happen in the
last few minutes; Aircall's envelope is stamped when made, its calls spread over the
day by their own ``started_at``/``answered_at``/``ended_at``. Retried deliveries are
replays inside the window: same body, same event ids.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.settings import Settings
from projections.read import read_kpis
from projections.store import RedisStore, connect, current_namespace
from projections.validation import format_instant_ms
from streams.worker_process import WorkerProcess
from tests.kafka_reader import caught_up, wait_caught_up
from tests.oracle import Oracle
from tests.support import figures, salespulse, wait_for
from tests.webhook_client import SECRETS, IngestClient

pytestmark = pytest.mark.integration

PORT = 29469
MAPPINGS = """
[reps]
hubspot = { "101" = "rep-01", "102" = "rep-02", "103" = "rep-03", "104" = "rep-04" }
twilio = { "client:alice" = "rep-01", "client:bob" = "rep-02" }
aircall = { "3001" = "rep-03", "3002" = "rep-04" }

[queues]
twilio = { "+15550100" = "q-emea" }
aircall = { "+12125550100" = "q-amer" }

[hubspot]
origin_by_change_source = { FORM = "marketing", CRM_UI = "sales" }
lead_status_stages = { NEW = "new", ATTEMPTED_TO_CONTACT = "contacted", CONNECTED = "qualified" }
"""
REPS = {"rep-01": "emea", "rep-02": "emea", "rep-03": "amer", "rep-04": "amer"}


class Day:
    """Deliveries (endpoint, body, headers) and the canonical events they must become."""

    def __init__(self, seed: int, start_s: int) -> None:
        self.rng = random.Random(seed)
        self.start_s = start_s
        self.deliveries: list[tuple[str, bytes, dict[str, str]]] = []
        self.expected: list[dict[str, Any]] = []
        self._posted = 0

    def expect(self, kind: str, at_s: int, **fields: Any) -> None:
        self.expected.append(
            {
                "event_id": f"expected-{len(self.expected)}",
                "type": kind,
                "occurred_at": format_instant_ms(at_s * 1000),
                "schema_version": 1,
                **fields,
            }
        )

    def deliver(self, path: str, body: bytes, headers: dict[str, str], retries: int = 0) -> None:
        self.deliveries += [(path, body, headers)] * (1 + retries)

    def unposted(self) -> list[tuple[str, bytes, dict[str, str]]]:
        """The deliveries made since the last call, to post now."""
        fresh, self._posted = self.deliveries[self._posted :], len(self.deliveries)
        return fresh

    def at(self) -> int:
        return self.start_s + self.rng.randrange(0, 9 * 3600)

    # HubSpot --------------------------------------------------------------------------

    def leads(self, count: int) -> None:
        items = []
        for n in range(count):
            contact, t = 5000 + n, self.at()
            source = self.rng.choice(["FORM", "CRM_UI"])
            items.append(self._hs("contact.creation", contact, t, changeSource=source))
            origin = "marketing" if source == "FORM" else "sales"
            self.expect(
                "lead.created",
                t,
                lead_id=f"hubspot-contact-{contact}",
                origin=origin,
                lead_source=source.lower(),
            )
            if self.rng.random() < 0.8:
                owner = self.rng.choice(["101", "102", "103", "104"])
                items.append(
                    self._hs(
                        "contact.propertyChange",
                        contact,
                        t + 60,
                        propertyName="hubspot_owner_id",
                        propertyValue=owner,
                    )
                )
                self.expect(
                    "lead.assigned",
                    t + 60,
                    lead_id=f"hubspot-contact-{contact}",
                    rep_id=f"rep-0{owner[-1]}",
                )
            if self.rng.random() < 0.6:
                status, stage = self.rng.choice(
                    [("ATTEMPTED_TO_CONTACT", "contacted"), ("CONNECTED", "qualified")]
                )
                items.append(
                    self._hs(
                        "contact.propertyChange",
                        contact,
                        t + 600,
                        propertyName="hs_lead_status",
                        propertyValue=status,
                    )
                )
                self.expect(
                    "lead.stage_changed", t + 600, lead_id=f"hubspot-contact-{contact}", stage=stage
                )
            items.append(
                self._hs(
                    "contact.propertyChange",
                    contact,
                    t + 30,
                    propertyName="firstname",
                    propertyValue="Ada",
                )
            )  # ignored
        self.rng.shuffle(items)  # HubSpot does not keep order
        for i in range(0, len(items), 25):
            batch = orjson.dumps(items[i : i + 25])
            path = "/ingest/v1/hubspot"
            self.deliver(
                path, batch, {"Content-Type": "application/json"}, retries=int(i % 50 == 0)
            )

    def _hs(self, kind: str, object_id: int, at_s: int, **extra: Any) -> dict[str, Any]:
        return {
            "eventId": self.rng.randrange(10**9),
            "subscriptionId": 1,
            "portalId": 62515,
            "appId": 11,
            "occurredAt": at_s * 1000,
            "subscriptionType": kind,
            "attemptNumber": 0,
            "objectId": object_id,
            "changeFlag": "UPDATED",
            **extra,
        }

    # Twilio ---------------------------------------------------------------------------

    def twilio_calls(self, count: int) -> None:
        """Calls of the last few minutes: each callback's signed ``Timestamp`` is its event's
        time and must be inside the replay window when posted (callbacks end 20 s ago at
        the latest, start at most 200 s ago)."""
        now_s = time.time_ns() // 1_000_000_000
        for n in range(count):
            sid, t = f"CA{n:032d}", now_s - 200 + self.rng.randrange(0, 30)
            inbound = {"Direction": "inbound", "From": f"+4930{n:06d}", "To": "+15550100"}
            callbacks = [self._tw(sid, "ringing", t, **inbound)]
            self.expect(
                "call.started", t, call_id=f"twilio-{sid}", direction="inbound", queue_id="q-emea"
            )
            fate = self.rng.choice(["answered", "answered", "answered", "no-answer", "canceled"])
            if fate == "answered":
                agent = self.rng.choice(["client:alice", "client:bob"])
                leg = {"Direction": "outbound-dial", "ParentCallSid": sid, "To": agent}
                wait, talk = self.rng.randrange(3, 30), self.rng.randrange(20, 120)
                callbacks.append(self._tw(f"CB{n:032d}", "ringing", t + 1, **leg))
                callbacks.append(self._tw(f"CB{n:032d}", "in-progress", t + wait, **leg))
                callbacks.append(
                    self._tw(
                        f"CB{n:032d}", "completed", t + wait + talk, CallDuration=str(talk), **leg
                    )
                )
                callbacks.append(
                    self._tw(
                        sid, "completed", t + wait + talk, CallDuration=str(wait + talk), **inbound
                    )
                )
                rep = "rep-01" if agent == "client:alice" else "rep-02"
                self.expect("call.answered", t + wait, call_id=f"twilio-{sid}", rep_id=rep)
                # Ended once per leg: the agent's with its talk time (not the parent's
                # duration, which includes the wait), the caller's without one.
                self.expect(
                    "call.ended",
                    t + wait + talk,
                    call_id=f"twilio-{sid}",
                    outcome="completed",
                    talk_ms=talk * 1000,
                )
                self.expect(
                    "call.ended", t + wait + talk, call_id=f"twilio-{sid}", outcome="completed"
                )
            else:
                callbacks.append(self._tw(sid, fate, t + 40, **inbound))
                self.expect(
                    "call.ended",
                    t + 40,
                    call_id=f"twilio-{sid}",
                    outcome="missed" if fate == "no-answer" else "abandoned",
                )
            self.rng.shuffle(callbacks)  # Twilio does not keep order
            for params in callbacks:
                body = urllib.parse.urlencode(params).encode()
                self.deliver(
                    "/ingest/v1/twilio/voice",
                    body,
                    _twilio_headers(params),
                    retries=int(self.rng.random() < 0.1),
                )

    def _tw(self, sid: str, status: str, at_s: int, **extra: str) -> dict[str, str]:
        stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(at_s))
        return {
            "AccountSid": "AC1",
            "CallSid": sid,
            "CallStatus": status,
            "Timestamp": stamp,
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
            **extra,
        }

    # Aircall --------------------------------------------------------------------------

    def aircall_calls(self, count: int) -> None:
        sent_s = time.time_ns() // 1_000_000_000  # the envelopes' timestamp: made now
        for n in range(count):
            ident, t = 900_000 + n, self.at()
            outbound = n % 4 == 0
            data = {
                "id": ident,
                "direction": "outbound" if outbound else "inbound",
                "status": "initial",
                "started_at": t,
                "answered_at": None,
                "ended_at": None,
                "duration": 0,
                "raw_digits": "+1 212 555 0199",
                "number": {"id": 7, "digits": "+12125550100"},
                "user": {"id": 3002, "name": "Dan", "email": "d@example.com"} if outbound else None,
                "missed_call_reason": None,
                "tags": [],
            }
            hooks = [("call.created", dict(data))]
            call_id = f"aircall-{ident}"
            if outbound:
                self.expect(
                    "call.started", t, call_id=call_id, direction="outbound", rep_id="rep-04"
                )
            else:
                self.expect(
                    "call.started", t, call_id=call_id, direction="inbound", queue_id="q-amer"
                )
            if outbound or self.rng.random() < 0.7:
                user = data["user"] or {"id": 3001, "name": "Cy", "email": "c@example.com"}
                wait, talk = self.rng.randrange(2, 40), self.rng.randrange(20, 600)
                answered = {**data, "user": user, "status": "answered", "answered_at": t + wait}
                ended = {
                    **answered,
                    "status": "done",
                    "ended_at": t + wait + talk,
                    "duration": wait + talk,
                }
                hooks += [
                    ("call.answered", answered),
                    ("call.hungup", ended),
                    ("call.ended", ended),
                ]
                rep = "rep-04" if outbound else "rep-03"
                self.expect("call.answered", t + wait, call_id=call_id, rep_id=rep)
                self.expect(
                    "call.ended",
                    t + wait + talk,
                    call_id=call_id,
                    outcome="completed",
                    talk_ms=talk * 1000,
                )
            else:
                reason = self.rng.choice(["short_abandoned", "no_available_agent"])
                ended = {**data, "status": "done", "ended_at": t + 25, "missed_call_reason": reason}
                hooks.append(("call.ended", ended))
                self.expect(
                    "call.ended",
                    t + 25,
                    call_id=call_id,
                    outcome="abandoned" if reason == "short_abandoned" else "missed",
                )
            self.rng.shuffle(hooks)
            for event, payload in hooks:
                body = orjson.dumps(
                    {
                        "resource": "call",
                        "event": event,
                        "timestamp": sent_s,
                        "token": SECRETS["SALESPULSE_AIRCALL_TOKEN"],
                        "data": payload,
                    }
                )
                self.deliver(
                    "/ingest/v1/aircall",
                    body,
                    {"Content-Type": "application/json"},
                    retries=int(n % 5 == 0),
                )


def _twilio_headers(params: dict[str, str]) -> dict[str, str]:
    signed = "".join(k + v for k, v in sorted(params.items()))
    data = f"{INGEST.base}/ingest/v1/twilio/voice" + signed
    signature = base64.b64encode(
        hmac.new(
            SECRETS["SALESPULSE_TWILIO_AUTH_TOKEN"].encode(), data.encode(), hashlib.sha1
        ).digest()
    ).decode()
    return {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}


INGEST = IngestClient(PORT)
_post = INGEST.post


async def test_a_scripted_day_through_the_webhooks_matches_the_oracle(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    mappings = tmp_path / "mappings.toml"
    mappings.write_text(MAPPINGS)
    env = {
        **INGEST.service_env(stack_env, mappings),
        "SALESPULSE_QUEUE_TEAMS": "q-emea=emea,q-amer=amer",
    }
    settings = Settings.from_env(env)
    now_s = time.time_ns() // 1_000_000_000
    day = Day(seed=11, start_s=now_s - 10 * 3600)
    directory = [
        {"type": "team.upserted", "team_id": "emea", "name": "EMEA", "timezone": "Europe/Berlin"},
        {
            "type": "team.upserted",
            "team_id": "amer",
            "name": "Americas",
            "timezone": "America/New_York",
        },
        *(
            {"type": "rep.upserted", "rep_id": r, "name": r, "team_id": t, "active": True}
            for r, t in REPS.items()
        ),
    ]
    for n, item in enumerate(directory):
        day.expected.append(
            {
                "event_id": f"dir-{n}",
                "occurred_at": format_instant_ms((now_s - 30 * 86_400) * 1000),
                "schema_version": 1,
                **item,
            }
        )
    log = tmp_path / "expected.jsonl"
    worker = WorkerProcess(env, tmp_path / "worker.log")
    client = connect(settings.redis)
    try:
        worker.start()
        with salespulse(["ingest"], env, tmp_path / "ingest.log") as ingest:
            wait_for(lambda: ingest.poll() is None and INGEST.healthy(), 30, "the ingest service")
            # The directory through the canonical endpoint, first, as a deployment loads it.
            answer = _post(
                "/ingest/v1/events",
                orjson.dumps(day.expected[: len(directory)]),
                {"Authorization": f"Bearer {SECRETS['SALESPULSE_INGEST_TOKEN']}"},
            )
            assert answer["accepted"] == len(directory)
            store = RedisStore(client, await current_namespace(client, settings.topic_prefix))
            await wait_caught_up(settings, store, what="the directory")
            # Each vendor's deliveries are made just before they are posted: the Twilio and
            # Aircall timestamps must be inside the replay window when they arrive.
            for make in (
                lambda: day.leads(60),
                lambda: day.twilio_calls(40),
                lambda: day.aircall_calls(30),
            ):
                make()
                for path, body, headers in day.unposted():
                    await asyncio.to_thread(_post, path, body, headers)
            log.write_bytes(b"\n".join(orjson.dumps(e) for e in day.expected) + b"\n")
            deadline = time.monotonic() + 120
            while not await caught_up(settings, store):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.5)

        served = (tmp_path / "ingest.log").read_text()
        assert not [v for v in SECRETS.values() if v in served], "a secret reached the log"
        oracle = Oracle(log, queue_teams={"q-emea": "emea", "q-amer": "amer"})
        scopes = [
            ("org", ""),
            ("team", "emea"),
            ("team", "amer"),
            ("queue", "q-emea"),
            ("queue", "q-amer"),
        ]
        scopes += [("rep", r) for r in REPS]
        partitions = range(settings.partitions)
        view = await store.directory(partitions, settings.rules)
        as_of = time.time_ns() // 1_000_000
        compared = 0
        for scope, scope_id in scopes:
            for window in ("24h", "7d", "today", "month", "all"):
                answer_kpis = await read_kpis(store, view, scope, scope_id, window, as_of)
                got = {kpi: figures(result) for kpi, result in answer_kpis.kpis.items()}
                assert got == oracle.kpis(scope, scope_id, window, as_of), (scope, scope_id, window)
                compared += len(got)
        # Not a vacuous match: the day produced calls, answers and leads in the projections.
        org_all = oracle.kpis("org", "", "all", as_of)
        assert org_all["leads_created"]["value"] == 60
        print(f"\n{len(day.deliveries)} deliveries, {len(day.expected)} events, {compared} equal")
    finally:
        worker.stop()
        await client.aclose()
