"""Source adapters: realistic payloads, built from the vendors' documented field lists, map to
the right canonical events; retries and reorderings map to the same events."""

from __future__ import annotations

import itertools
import math
import time

import orjson
import pytest

from adapters import aircall, hubspot, twilio
from adapters.config import MappingsError, parse_mappings
from adapters.signatures import CLOCK_SKEW_MS, REPLAY_WINDOW_MS, replay_problem
from projections.validation import Rejection, parse_event

pytestmark = pytest.mark.unit

MAPPINGS = parse_mappings(
    """
[reps]
hubspot = { "101" = "rep-01", "102" = "rep-02" }
aircall = { "3001" = "rep-01" }
twilio = { "client:alice" = "rep-01", "+15550111" = "rep-02" }

[queues]
twilio = { "+15550100" = "q-emea" }
aircall = { "+33100000000" = "q-emea" }

[hubspot]
origin_by_change_source = { FORM = "marketing", CRM_UI = "sales" }
deal_stages = { appointmentscheduled = "discovery", closedwon = "won", closedlost = "lost" }

[hubspot.lead_status_stages]
NEW = "new"
ATTEMPTED_TO_CONTACT = "contacted"
UNQUALIFIED = "unqualified"
"""
)
T0 = 1_795_000_000  # Unix seconds


def valid(events: list[dict[str, object]]) -> list[dict[str, object]]:
    """Every mapped event passes the event contract; returns them for further checks."""
    now_ms = (T0 + 86_400) * 1000
    for e in events:
        assert not isinstance(parse_event(orjson.dumps(e), now_ms=now_ms), Rejection), e
    return events


# Twilio -------------------------------------------------------------------------------


def rfc2822(seconds: int) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(seconds))


def callback(sid: str, status: str, at: int, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": "AC0",
        "CallSid": sid,
        "CallStatus": status,
        "Timestamp": rfc2822(at),
        "CallbackSource": "call-progress-events",
        "ApiVersion": "2010-04-01",
        **extra,
    }


INBOUND = {"Direction": "inbound", "From": "+4930123", "To": "+15550100"}
AGENT_LEG = {"Direction": "outbound-dial", "ParentCallSid": "CA1", "To": "client:alice"}
CALL = [
    callback("CA1", "ringing", T0, SequenceNumber="0", **INBOUND),
    callback("CA2", "ringing", T0 + 2, SequenceNumber="0", **AGENT_LEG),
    callback("CA2", "in-progress", T0 + 8, SequenceNumber="1", **AGENT_LEG),
    callback("CA2", "completed", T0 + 128, CallDuration="120", SequenceNumber="2", **AGENT_LEG),
    callback("CA1", "completed", T0 + 128, CallDuration="128", SequenceNumber="1", **INBOUND),
]


def twilio_events(callbacks: list[dict[str, str]]) -> list[dict[str, object]]:
    events = []
    for params in callbacks:
        mapped = twilio.map_callback(params, MAPPINGS, b"")
        assert not mapped.problems, mapped.problems
        events += mapped.events
    return valid(events)


def test_a_twilio_inbound_call_answered_by_an_agent() -> None:
    events = twilio_events(CALL)
    by_type = {e["type"]: e for e in events}
    assert set(by_type) == {"call.started", "call.answered", "call.ended"}
    assert {e["call_id"] for e in events} == {"twilio-CA1"}
    assert by_type["call.started"]["direction"] == "inbound"
    assert by_type["call.started"]["queue_id"] == "q-emea"
    assert by_type["call.answered"]["rep_id"] == "rep-01"
    assert by_type["call.started"]["occurred_at"].startswith("2026-11-18T")  # T0, in UTC
    assert by_type["call.answered"]["occurred_at"] != by_type["call.started"]["occurred_at"]
    # Ended once per leg: the agent's leg with its talk time (120 s, not the parent's 128 s
    # that include the 8 s in the queue), the caller's leg without one.
    ends = sorted((e for e in events if e["type"] == "call.ended"), key=lambda e: "talk_ms" in e)
    assert [(e["outcome"], e.get("talk_ms")) for e in ends] == [
        ("completed", None),
        ("completed", 120_000),
    ]


def test_an_outbound_api_call_reports_its_own_duration_as_talk_time() -> None:
    rep_call = {"Direction": "outbound-api", "From": "+15550111", "To": "+4930999"}
    events = twilio_events(
        [
            callback("CA5", "ringing", T0, **rep_call),
            callback("CA5", "in-progress", T0 + 9, **rep_call),
            callback("CA5", "completed", T0 + 70, CallDuration="61", **rep_call),
        ]
    )
    assert [(e["type"], e.get("talk_ms"), e.get("rep_id")) for e in events] == [
        ("call.started", None, "rep-02"),
        ("call.answered", None, "rep-02"),
        ("call.ended", 61_000, None),
    ]


def test_twilio_callbacks_in_any_order_and_retried_give_the_same_events() -> None:
    once = sorted(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in twilio_events(CALL))
    for order in itertools.islice(itertools.permutations(CALL), 0, None, 7):
        again = twilio_events([*order, *order[:2]])  # and two of them delivered twice
        unique = {orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in again}
        assert sorted(unique) == once


@pytest.mark.parametrize(
    ("status", "outcome"),
    [("busy", "busy"), ("no-answer", "missed"), ("failed", "failed"), ("canceled", "abandoned")],
)
def test_twilio_final_statuses(status: str, outcome: str) -> None:
    [ended] = twilio_events([callback("CA9", status, T0, **INBOUND)])
    assert ended["outcome"] == outcome and "talk_ms" not in ended


def test_twilio_unknown_numbers_are_reported_not_guessed() -> None:
    mapped = twilio.map_callback(
        callback("CA3", "ringing", T0, Direction="inbound", To="+19999999"), MAPPINGS, b"raw"
    )
    assert not mapped.events
    [problem] = mapped.problems
    assert problem.reason == "unmapped_value" and "+19999999" in problem.detail
    assert problem.part == b"raw"


def test_twilio_malformed_callbacks() -> None:
    assert twilio.map_callback({"CallSid": "CA1"}, MAPPINGS, b"").problems[0].reason == "malformed"
    bad_time = callback("CA1", "ringing", T0, **INBOUND) | {"Timestamp": "yesterday"}
    assert twilio.map_callback(bad_time, MAPPINGS, b"").problems[0].reason == "malformed"
    no_duration = callback("CA2", "completed", T0, **AGENT_LEG)
    assert twilio.map_callback(no_duration, MAPPINGS, b"").problems[0].reason == "incomplete"
    hours = callback("CA2", "completed", T0, CallDuration="1" * 12, **AGENT_LEG)
    assert twilio.map_callback(hours, MAPPINGS, b"").problems[0].reason == "incomplete"
    superscript = callback("CA2", "completed", T0, CallDuration="²", **AGENT_LEG)
    assert twilio.map_callback(superscript, MAPPINGS, b"").problems[0].reason == "incomplete"
    # A year past C's long overflowed out of the date parser (an answer 500), not reported.
    huge_year = bad_time | {"Timestamp": "Wed, 18 Nov 99999999999999999999 11:06:40 +0000"}
    assert twilio.map_callback(huge_year, MAPPINGS, b"").problems[0].reason == "malformed"


def test_twilio_timestamps(monkeypatch: pytest.MonkeyPatch) -> None:
    assert twilio.timestamp_ms(rfc2822(T0)) == T0 * 1000
    assert twilio.timestamp_ms("Wed, 18 Nov 2026 12:06:40 +0100") == T0 * 1000
    # RFC 2822's -0000 (UTC, local zone unknown) and a date without a zone are UTC, not
    # whatever zone the server runs in.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert twilio.timestamp_ms("Wed, 18 Nov 2026 11:06:40 -0000") == T0 * 1000
        assert twilio.timestamp_ms("18 Nov 2026 11:06:40") == T0 * 1000
    finally:
        monkeypatch.undo()
        time.tzset()
    for bad in ("", "yesterday", str(T0), "Wed, 18 Nov 2026 11:06:40 +9999", None, 12, b"x"):
        assert twilio.timestamp_ms(bad) is None, bad


# Aircall ------------------------------------------------------------------------------


def aircall_hook(event: str, **data: object) -> dict[str, object]:
    call = {
        "id": 812,
        "direction": "inbound",
        "status": "done" if event == "call.ended" else "initial",
        "started_at": T0,
        "answered_at": None,
        "ended_at": None,
        "duration": 0,
        "raw_digits": "+49 30 123",
        "user": None,
        "number": {"id": 44, "digits": "+33100000000"},
        "missed_call_reason": None,
        "tags": [],
    }
    return {
        "resource": "call",
        "event": event,
        "timestamp": T0,
        "token": "tok",
        "data": {**call, **data},
    }


def test_an_aircall_call_answered_and_ended() -> None:
    alice = {"id": 3001, "name": "Alice", "email": "alice@example.com"}
    hooks = [
        aircall_hook("call.created"),
        aircall_hook("call.ringing_on_agent", user=alice),
        aircall_hook("call.answered", user=alice, answered_at=T0 + 6),
        aircall_hook("call.hungup", user=alice, answered_at=T0 + 6, ended_at=T0 + 96),
        aircall_hook("call.ended", user=alice, answered_at=T0 + 6, ended_at=T0 + 96, duration=96),
    ]
    events = []
    ignored = 0
    for hook in hooks:
        mapped = aircall.map_webhook(hook, MAPPINGS, orjson.dumps(hook))
        assert not mapped.problems
        events += mapped.events
        ignored += mapped.ignored
    by_type = {e["type"]: e for e in valid(events)}
    assert ignored == 2
    assert by_type["call.started"]["queue_id"] == "q-emea"
    assert by_type["call.answered"]["rep_id"] == "rep-01"
    assert by_type["call.ended"]["outcome"] == "completed"
    assert by_type["call.ended"]["talk_ms"] == 90_000  # ended - answered, not the ringing
    assert len({e["event_id"] for e in events}) == 3
    retried = aircall.map_webhook(hooks[2], MAPPINGS, b"")
    assert retried.events == [by_type["call.answered"]]


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        ("short_abandoned", "abandoned"),
        ("abandoned_in_ivr", "abandoned"),
        ("no_available_agent", "missed"),
    ],
)
def test_aircall_unanswered_calls(reason: str, outcome: str) -> None:
    hook = aircall_hook("call.ended", ended_at=T0 + 20, missed_call_reason=reason)
    [ended] = valid(aircall.map_webhook(hook, MAPPINGS, b"").events)
    assert ended["outcome"] == outcome and "talk_ms" not in ended


def test_aircall_unknown_user_and_malformed_data() -> None:
    stranger = aircall_hook("call.answered", user={"id": 1}, answered_at=T0)
    assert aircall.map_webhook(stranger, MAPPINGS, b"").problems[0].reason == "unmapped_value"
    broken = aircall_hook("call.created", started_at="soon")
    assert aircall.map_webhook(broken, MAPPINGS, b"").problems[0].reason == "malformed"


def test_aircall_timestamps() -> None:
    assert aircall.timestamp_ms(T0) == T0 * 1000
    assert aircall.timestamp_ms(T0 + 0.75) == T0 * 1000
    assert aircall.timestamp_ms(-1) == -1000
    assert aircall.timestamp_ms(10**30) == 10**33  # Python ints: no overflow, just far ahead
    assert aircall.timestamp_ms(1e308) == int(1e308) * 1000
    for bad in (True, False, None, str(T0), "NaN", math.nan, math.inf, -math.inf, [T0], {}):
        assert aircall.timestamp_ms(bad) is None, bad


def test_the_replay_window() -> None:
    now = T0 * 1000
    assert replay_problem(now, now) is None
    assert replay_problem(now - REPLAY_WINDOW_MS, now) is None
    assert replay_problem(now - REPLAY_WINDOW_MS - 1, now) == "is more than 5 minutes old: a replay"
    assert replay_problem(now + CLOCK_SKEW_MS, now) is None
    assert replay_problem(now + CLOCK_SKEW_MS + 1, now) == (
        "is more than 60 s ahead of this server's clock"
    )
    assert replay_problem(-(10**40), now) and replay_problem(10**40, now)


# HubSpot ------------------------------------------------------------------------------


def hs(kind: str, object_id: int, at_ms: int, **extra: object) -> dict[str, object]:
    return {
        "eventId": 100 + object_id,
        "subscriptionId": 9,
        "portalId": 62515,
        "appId": 1160452,
        "occurredAt": at_ms,
        "subscriptionType": kind,
        "attemptNumber": 0,
        "objectId": object_id,
        "changeFlag": "NEW" if kind.endswith("creation") else "UPDATED",
        **extra,
    }


BATCH = [
    hs("contact.creation", 51, T0 * 1000, changeSource="FORM"),
    hs(
        "contact.propertyChange",
        51,
        T0 * 1000 + 60_000,
        propertyName="hubspot_owner_id",
        propertyValue="101",
        changeSource="CRM_UI",
    ),
    hs(
        "contact.propertyChange",
        51,
        T0 * 1000 + 90_000,
        propertyName="hs_lead_status",
        propertyValue="ATTEMPTED_TO_CONTACT",
        changeSource="CRM_UI",
    ),
    hs(
        "contact.propertyChange",
        51,
        T0 * 1000 + 91_000,
        propertyName="firstname",
        propertyValue="Ada",
        changeSource="CRM_UI",
    ),
    hs(
        "deal.propertyChange",
        7,
        T0 * 1000 + 95_000,
        propertyName="dealstage",
        propertyValue="appointmentscheduled",
        changeSource="CRM_UI",
    ),
]


def test_a_hubspot_batch_maps_contacts_and_deal_stages() -> None:
    mapped = hubspot.map_batch(BATCH, MAPPINGS)
    assert not mapped.problems
    assert mapped.ignored == 1  # firstname
    created, assigned, stage, deal = valid(mapped.events)
    assert created["type"] == "lead.created" and created["lead_id"] == "hubspot-contact-51"
    assert (created["origin"], created["lead_source"]) == ("marketing", "form")
    assert (assigned["type"], assigned["rep_id"]) == ("lead.assigned", "rep-01")
    assert (stage["type"], stage["stage"]) == ("lead.stage_changed", "contacted")
    assert (deal["type"], deal["stage"]) == ("opportunity.stage_changed", "discovery")


def test_a_retried_hubspot_delivery_maps_to_the_same_ids() -> None:
    first = hubspot.map_batch(BATCH, MAPPINGS).events
    retry = [{**item, "attemptNumber": 3, "eventId": 999} for item in reversed(BATCH)]
    assert sorted(e["event_id"] for e in hubspot.map_batch(retry, MAPPINGS).events) == sorted(
        e["event_id"] for e in first
    )
    # Same eventId, different content: different events (eventId is not unique).
    other = [{**BATCH[2], "propertyValue": "UNQUALIFIED"}]
    assert hubspot.map_batch(other, MAPPINGS).events[0]["event_id"] != first[2]["event_id"]


DEAL = [
    hs("deal.creation", 7, T0 * 1000),
    hs("deal.propertyChange", 7, T0 * 1000, propertyName="amount", propertyValue="12500.50"),
    hs("deal.propertyChange", 7, T0 * 1000, propertyName="hubspot_owner_id", propertyValue="102"),
    hs(
        "deal.propertyChange",
        7,
        T0 * 1000,
        propertyName="closedate",
        propertyValue="1796083200000",  # 2026-12-01T00:00:00Z
    ),
    hs(
        "deal.propertyChange",
        7,
        T0 * 1000 + 86_400_000,
        propertyName="dealstage",
        propertyValue="closedwon",
    ),
]


def test_a_hubspot_deal_from_creation_to_a_won_close() -> None:
    mapped = hubspot.map_batch(DEAL, MAPPINGS)
    assert not mapped.problems and not mapped.ignored
    created, amount, owner, close_date, closed = valid(mapped.events)
    assert {e["opportunity_id"] for e in mapped.events} == {"hubspot-deal-7"}
    assert created["type"] == "opportunity.created" and "rep_id" not in created
    assert (amount["type"], amount["amount_minor"]) == ("opportunity.updated", 1_250_050)
    assert (owner["type"], owner["rep_id"]) == ("opportunity.updated", "rep-02")
    assert close_date["expected_close"] == "2026-12-01T00:00:00.000+00:00"
    # The close names neither owner nor amount: the engine takes them from the deal's record.
    assert (closed["type"], closed["outcome"]) == ("opportunity.closed", "won")
    assert "rep_id" not in closed and "amount_minor" not in closed


def test_hubspot_cleared_deal_properties_are_ignored() -> None:
    cleared = [
        hs("deal.propertyChange", 7, T0 * 1000, propertyName=name, propertyValue="")
        for name in ("amount", "hubspot_owner_id", "closedate", "dealstage")
    ]
    mapped = hubspot.map_batch(cleared, MAPPINGS)
    assert (mapped.events, mapped.problems, mapped.ignored) == ([], [], 4)


def test_hubspot_what_cannot_be_mapped_is_reported_with_a_reason() -> None:
    def change(name: str, value: object) -> dict[str, object]:
        return hs("deal.propertyChange", 8, T0 * 1000, propertyName=name, propertyValue=value)

    mapped = hubspot.map_batch(
        [
            hs("contact.creation", 52, T0 * 1000, changeSource="IMPORT"),
            change("dealstage", "closedwon-in-another-pipeline"),
            change("hubspot_owner_id", "999"),
            change("amount", "12,500"),
            change("amount", "-5"),
            change("amount", "NaN"),
            change("amount", "1e400"),
            change("closedate", "2026-12-01"),
            change("amount", 12500),  # HubSpot sends every value as a string
            change("closedate", "²"),  # a digit to str.isdigit, not to int()
            change("closedate", "999999999999999"),  # after year 9999
            {"subscriptionType": "contact.creation", "objectId": "x"},
            "not an object",
            hs("deal.creation", 10, 10**18),  # occurredAt past every calendar
        ],
        MAPPINGS,
    )
    assert [p.reason for p in mapped.problems] == ["unmapped_value"] * 3 + ["malformed"] * 11
    assert not mapped.events


# Mappings file ------------------------------------------------------------------------


def test_every_problem_of_a_mappings_file_is_reported() -> None:
    with pytest.raises(MappingsError) as caught:
        parse_mappings(
            """
[reps]
hubspot = { "101" = "" }
zoom = {}
[hubspot]
origin_by_change_source = { FORM = "web" }
[teams]
"""
        )
    assert len(caught.value.problems) == 4, caught.value.problems
    with pytest.raises(MappingsError, match="not TOML"):
        parse_mappings("[reps")


# Salesforce CDC ------------------------------------------------------------------------

SF_MAPPINGS = parse_mappings(
    """
[reps]
salesforce = { "0055e000001AbCdAAK" = "rep-01", "0055e000001XyZaAAK" = "rep-02" }

[salesforce]
lead_source_origins = { Web = "marketing", "Phone Inquiry" = "sales" }
opportunity_stages = { Prospecting = "discovery", "Closed Won" = "won", "Closed Lost" = "lost" }
opportunity_fields = { product = "Type", segment = "Segment__c" }

[salesforce.lead_status_stages]
"Open - Not Contacted" = "new"
"Working - Contacted" = "contacted"
"Closed - Not Converted" = "unqualified"
"""
)


def cdc(
    entity: str,
    change: str,
    ids: list[str],
    fields: dict[str, object],
    changed: list[str] | None = None,
    seq: int = 1,
) -> dict[str, object]:
    header = {
        "entityName": entity,
        "recordIds": ids,
        "changeType": change,
        "changedFields": changed or [],
        "nulledFields": [],
        "diffFields": [],
        "changeOrigin": "com/salesforce/api/soap/61.0;client=SfdcInternalAPI/",
        "transactionKey": "0002343d-9d90-e395-ed20-cf416ba652ad",
        "sequenceNumber": seq,
        "commitTimestamp": T0 * 1000 + seq,
        "commitNumber": 10_000 + seq,
        "commitUser": "0055e000001AbCdAAK",
    }
    return {"ChangeEventHeader": header, **fields}


def test_salesforce_leads_created_assigned_and_moved() -> None:
    from adapters import salesforce

    body = [
        cdc(
            "Lead",
            "CREATE",
            ["00Q5e000001AAAAEA4", "00Q5e000001BBBBEA4"],
            {
                "LeadSource": "Web",
                "Status": "Open - Not Contacted",
                "OwnerId": "0055e000001AbCdAAK",
                "Company": "Acme",
                "CreatedDate": "2026-11-18T09:00:00Z",
            },
        ),
        cdc(
            "Lead",
            "UPDATE",
            ["00Q5e000001AAAAEA4"],
            {
                "Status": "Working - Contacted",
                "OwnerId": "0055e000001XyZaAAK",
                "LastModifiedDate": "x",
            },
            changed=["Status", "OwnerId", "LastModifiedDate"],
            seq=2,
        ),
        cdc("Lead", "UPDATE", ["00Q5e000001BBBBEA4"], {"Phone": "+1"}, changed=["Phone"], seq=3),
        cdc(
            "Lead",
            "CREATE",
            ["00Q5e000001CCCCEA4"],
            {"LeadSource": "Phone Inquiry", "OwnerId": "00G5e000000QueueA"},
            seq=4,
        ),
    ]
    mapped = salesforce.map_events(body, SF_MAPPINGS)
    assert not mapped.problems and mapped.ignored == 1
    kinds = [(e["type"], e["lead_id"]) for e in valid(mapped.events)]
    assert kinds == [
        ("lead.created", "salesforce-00Q5e000001AAAAEA4"),
        ("lead.created", "salesforce-00Q5e000001BBBBEA4"),
        ("lead.stage_changed", "salesforce-00Q5e000001AAAAEA4"),
        ("lead.assigned", "salesforce-00Q5e000001AAAAEA4"),
        ("lead.created", "salesforce-00Q5e000001CCCCEA4"),
    ]
    created, _, stage, assigned, queued = mapped.events
    assert (created["origin"], created["rep_id"]) == ("marketing", "rep-01")
    assert stage["stage"] == "contacted" and assigned["rep_id"] == "rep-02"
    assert queued["origin"] == "sales" and "rep_id" not in queued  # owned by a queue
    assert salesforce.map_events(body, SF_MAPPINGS).events == mapped.events  # redelivery


def test_salesforce_opportunities_and_what_is_reported() -> None:
    from adapters import salesforce

    won_at_once = cdc(
        "Opportunity",
        "CREATE",
        ["0065e000001OppAAA"],
        {
            "OwnerId": "0055e000001AbCdAAK",
            "Amount": 1234.5,
            "StageName": "Closed Won",
            "Type": "New Business",
            "Segment__c": "SMB",
        },
    )
    moved = cdc(
        "Opportunity",
        "UPDATE",
        ["0065e000001OppBBB"],
        {"StageName": "Prospecting"},
        changed=["StageName"],
        seq=2,
    )
    closed_thin = cdc(
        "Opportunity",
        "UPDATE",
        ["0065e000001OppCCC"],
        {"StageName": "Closed Lost"},
        changed=["StageName"],
        seq=3,
    )
    gap = cdc("Opportunity", "GAP_UPDATE", ["0065e000001OppDDD"], {}, seq=4)
    stranger = cdc(
        "Lead",
        "CREATE",
        ["00Q5e000001DDDDEA4"],
        {"LeadSource": "Web", "OwnerId": "0055e000009NoOneAAA"},
        seq=5,
    )
    reassigned = cdc(
        "Opportunity",
        "UPDATE",
        ["0065e000001OppCCC"],
        {"OwnerId": "0055e000001XyZaAAK", "Amount": 990, "CloseDate": "2026-12-31"},
        changed=["OwnerId", "Amount", "CloseDate"],
        seq=6,
    )
    to_a_queue = cdc(
        "Opportunity",
        "UPDATE",
        ["0065e000001OppCCC"],
        {"OwnerId": "00G5e000000QueueAAA"},
        changed=["OwnerId"],
        seq=7,
    )
    bad_amount = cdc(
        "Opportunity", "UPDATE", ["0065e000001OppEEE"], {"Amount": "lots"}, changed=["Amount"]
    )
    bad_date = cdc(
        "Opportunity",
        "UPDATE",
        ["0065e000001OppEEE"],
        {"CloseDate": 20261231},
        changed=["CloseDate"],
    )
    mapped = salesforce.map_events(
        [
            *(won_at_once, moved, closed_thin, reassigned, to_a_queue),
            *(gap, stranger, {"x": 1}, bad_amount, bad_date),
        ],
        SF_MAPPINGS,
    )
    created, closed, stage, thin, updated = valid(mapped.events)
    assert (created["type"], created["amount_minor"], created["product"]) == (
        "opportunity.created",
        123_450,
        "New Business",
    )
    assert (created["rep_id"], created["segment"]) == ("rep-01", "SMB")
    assert (closed["type"], closed["outcome"], closed["amount_minor"], closed["rep_id"]) == (
        "opportunity.closed",
        "won",
        123_450,
        "rep-01",
    )
    assert (stage["type"], stage["stage"]) == ("opportunity.stage_changed", "discovery")
    # A thin UPDATE closing a deal: owner and amount are left to the deal's record.
    assert (thin["type"], thin["outcome"]) == ("opportunity.closed", "lost")
    assert "rep_id" not in thin and "amount_minor" not in thin
    assert (updated["type"], updated["rep_id"], updated["amount_minor"]) == (
        "opportunity.updated",
        "rep-02",
        99_000,
    )
    assert updated["expected_close"] == "2026-12-31T00:00:00Z"
    # A queue taking the deal over names nobody to credit, and a CloseDate in another form
    # (epoch days) is left out: nothing to say for either (ignored).
    assert [p.reason for p in mapped.problems] == [
        "gap",
        "unmapped_value",
        "malformed",
        "malformed",
    ]
    assert mapped.ignored == 2


def test_salesforce_hostile_headers_are_malformed_and_an_odd_close_date_costs_nothing() -> None:
    from adapters import salesforce

    closed = cdc(
        "Opportunity",
        "UPDATE",
        ["0065e000001OppGGG"],
        {"StageName": "Closed Won", "CloseDate": 20454},  # epoch days, as some relays send
        changed=["StageName", "CloseDate"],
    )
    (event,) = valid(salesforce.map_events(closed, SF_MAPPINGS).events)
    assert (event["type"], event["outcome"]) == ("opportunity.closed", "won")
    odd = [
        {**closed, "ChangeEventHeader": {**closed["ChangeEventHeader"], "changedFields": 5}},
        {**closed, "ChangeEventHeader": {**closed["ChangeEventHeader"], "changedFields": [{}]}},
        {
            **closed,
            "ChangeEventHeader": {
                k: v for k, v in closed["ChangeEventHeader"].items() if k != "transactionKey"
            },
        },
        {**closed, "ChangeEventHeader": {**closed["ChangeEventHeader"], "commitTimestamp": 10**18}},
    ]
    mapped = salesforce.map_events(odd, SF_MAPPINGS)
    assert [p.reason for p in mapped.problems] == ["malformed"] * 4
    assert not mapped.events


def test_a_salesforce_opportunity_created_with_nothing_but_its_stage() -> None:
    """A CREATE with no owner, amount or descriptive field is an opportunity all the same."""
    from adapters import salesforce

    bare = cdc("Opportunity", "CREATE", ["0065e000001OppFFF"], {"StageName": "Prospecting"})
    created, stage = valid(salesforce.map_events(bare, SF_MAPPINGS).events)
    assert created == {
        "event_id": created["event_id"],
        "type": "opportunity.created",
        "occurred_at": created["occurred_at"],
        "schema_version": 1,
        "source": "salesforce",
        "opportunity_id": "salesforce-0065e000001OppFFF",
    }
    assert stage["stage"] == "discovery"


def test_the_example_mappings_file_is_valid() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "deploy" / "mappings.example.toml"
    assert parse_mappings(example.read_text()).get("reps.twilio", "client:alice") == "rep-01"
