"""The validator against the contract of events.md: every type accepted, every bad class named."""

from __future__ import annotations

import calendar
import dataclasses
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.events import COUNT, EVENT_TYPES, ID, INSTANT, TEXT, TIMEZONE, Event
from projections.validation import (
    DEFAULT_LIMITS,
    FieldSpec,
    Limits,
    Reason,
    Rejection,
    field_specs,
    parse_event,
)

pytestmark = pytest.mark.unit

NOW_MS = calendar.timegm((2026, 11, 22, 12, 0, 0)) * 1000
ENVELOPE = {"event_id": "e-1", "occurred_at": "2026-11-22T09:15:00Z", "schema_version": 1}

# One valid payload per type, written from the tables of events.md, version 1 (every field
# that version 1 required): each must stay valid.
EXAMPLES: dict[str, dict[str, Any]] = {
    "team.upserted": {"team_id": "emea", "name": "EMEA", "timezone": "Europe/Berlin"},
    "rep.upserted": {"rep_id": "r1", "name": "Ann", "team_id": "emea", "active": True},
    "lead.created": {"lead_id": "l1", "origin": "marketing", "lead_source": "webinar"},
    "lead.assigned": {"lead_id": "l1", "rep_id": "r1"},
    "lead.stage_changed": {"lead_id": "l1", "stage": "qualified"},
    "lead.responded": {"lead_id": "l1", "sentiment": "positive"},
    "opportunity.created": {
        "opportunity_id": "o1",
        "rep_id": "r1",
        "amount_minor": 500000,
        "product": "pro",
        "segment": "smb",
    },
    "opportunity.stage_changed": {"opportunity_id": "o1", "stage": "proposal"},
    "opportunity.closed": {"opportunity_id": "o1", "rep_id": "r1", "outcome": "lost"},
    "email.sent": {"message_id": "m1", "rep_id": "r1"},
    "email.opened": {"message_id": "m1", "rep_id": "r1", "lead_id": "l1"},
    "email.clicked": {"message_id": "m1", "rep_id": "r1"},
    "email.replied": {"message_id": "m1", "rep_id": "r1", "opportunity_id": "o1"},
    "meeting.scheduled": {
        "meeting_id": "g1",
        "rep_id": "r1",
        "scheduled_for": "2026-11-24T10:00:00+01:00",
    },
    "meeting.held": {"meeting_id": "g1", "rep_id": "r1", "scheduled_for": "2026-11-24T09:00:00Z"},
    "meeting.no_show": {
        "meeting_id": "g1",
        "rep_id": "r1",
        "scheduled_for": "2026-11-24T09:00:00Z",
    },
    "call.started": {"call_id": "c1", "direction": "inbound", "queue_id": "q1"},
    "call.answered": {"call_id": "c1", "rep_id": "r1"},
    "call.ended": {"call_id": "c1", "outcome": "completed", "talk_ms": 61000},
    "opportunity.updated": {"opportunity_id": "o1", "rep_id": "r2", "amount_minor": 700000},
    "campaign.spend": {"campaign_id": "k1", "amount_minor": 12000},
}

# The minimal shapes of version 1.1, written from events.md: only what a KPI needs.
MINIMAL: dict[str, dict[str, Any]] = {
    "team.upserted": {"team_id": "emea", "timezone": "Europe/Berlin"},
    "rep.upserted": {"rep_id": "r1", "team_id": "emea", "active": True},
    "lead.created": {"lead_id": "l1", "origin": "marketing", "lead_source": "webinar"},
    "lead.assigned": {"lead_id": "l1", "rep_id": "r1"},
    "lead.stage_changed": {"lead_id": "l1", "stage": "qualified"},
    "lead.responded": {"lead_id": "l1", "sentiment": "positive"},
    "opportunity.created": {"opportunity_id": "o1"},
    "opportunity.updated": {"opportunity_id": "o1"},
    "opportunity.stage_changed": {"opportunity_id": "o1", "stage": "proposal"},
    "opportunity.closed": {"opportunity_id": "o1", "outcome": "won"},
    "email.sent": {"message_id": "m1", "rep_id": "r1"},
    "email.opened": {"message_id": "m1"},
    "email.clicked": {"message_id": "m1"},
    "email.replied": {"message_id": "m1"},
    "meeting.scheduled": {"meeting_id": "g1"},
    "meeting.held": {"meeting_id": "g1", "rep_id": "r1"},
    "meeting.no_show": {"meeting_id": "g1", "rep_id": "r1"},
    "call.started": {"call_id": "c1", "direction": "inbound"},
    "call.answered": {"call_id": "c1", "rep_id": "r1"},
    "call.ended": {"call_id": "c1", "outcome": "completed"},
    "campaign.spend": {"campaign_id": "k1", "amount_minor": 12000},
}


def event(type_name: str, **changes: Any) -> dict[str, Any]:
    document = {**ENVELOPE, "type": type_name, **EXAMPLES[type_name]}
    document.update(changes)
    return {k: v for k, v in document.items() if v is not ...}


def parse(document: object, limits: Limits = DEFAULT_LIMITS) -> Event | Rejection:
    return parse_event(orjson.dumps(document), now_ms=NOW_MS, limits=limits)


def reason_of(document: object) -> Reason:
    outcome = parse(document)
    assert isinstance(outcome, Rejection), outcome
    return outcome.reason


def test_every_contract_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("type_name", sorted(EXAMPLES))
def test_each_type_is_accepted_and_typed(type_name: str) -> None:
    outcome = parse(event(type_name))
    assert isinstance(outcome, EVENT_TYPES[type_name])
    assert outcome.type == type_name
    assert outcome.event_id == "e-1"
    assert outcome.occurred_at_ms == calendar.timegm((2026, 11, 22, 9, 15, 0)) * 1000


@pytest.mark.parametrize("type_name", sorted(MINIMAL))
def test_the_minimal_shapes_of_version_1_1_are_accepted(type_name: str) -> None:
    outcome = parse({**ENVELOPE, "type": type_name, **MINIMAL[type_name]})
    assert isinstance(outcome, EVENT_TYPES[type_name]), outcome


@pytest.mark.parametrize(
    ("type_name", "field"),
    [(t, f) for t, shape in sorted(MINIMAL.items()) for f in shape],
)
def test_each_field_of_a_minimal_shape_is_required(type_name: str, field: str) -> None:
    """A KPI needs every field left in the minimal shapes: without it, ``missing_field``."""
    shape = {k: v for k, v in MINIMAL[type_name].items() if k != field}
    outcome = parse({**ENVELOPE, "type": type_name, **shape})
    assert isinstance(outcome, Rejection) and outcome.reason == Reason.MISSING_FIELD, outcome
    assert outcome.detail == f"{field}: required"


def test_a_won_close_may_leave_owner_and_amount_to_the_deal_record() -> None:
    outcome = parse(event("opportunity.closed", outcome="won", rep_id=...))
    assert isinstance(outcome, EVENT_TYPES["opportunity.closed"])
    assert (outcome.rep_id, outcome.amount_minor) == (None, None)  # type: ignore[attr-defined]


def test_offsets_are_converted_to_the_same_instant() -> None:
    berlin = parse(event("lead.assigned", occurred_at="2026-11-22T10:15:00+01:00"))
    kolkata = parse(event("lead.assigned", occurred_at="2026-11-22T14:45:00.000+05:30"))
    utc = parse(event("lead.assigned"))
    assert isinstance(berlin, Event) and isinstance(kolkata, Event) and isinstance(utc, Event)
    assert berlin.occurred_at_ms == kolkata.occurred_at_ms == utc.occurred_at_ms


def test_nanosecond_fractions_are_floored_to_milliseconds() -> None:
    outcome = parse(event("lead.assigned", occurred_at="2026-11-22T09:15:00.123987654Z"))
    assert isinstance(outcome, Event)
    assert outcome.occurred_at_ms % 1000 == 123


def _wire_and_attribute(spec: FieldSpec) -> tuple[object, object]:
    """A valid value of a field as sent, and as the event holds it."""
    if spec.kind is INSTANT:
        return "2026-11-22T09:15:00Z", calendar.timegm((2026, 11, 22, 9, 15, 0)) * 1000
    if spec.kind is TIMEZONE:
        return "Europe/Berlin", "Europe/Berlin"
    if spec.choices:
        return spec.choices[-1], spec.choices[-1]
    if spec.python_type is bool:
        return False, False
    if spec.kind is COUNT or spec.python_type is int:
        return 7, 7
    assert spec.kind in (ID, TEXT), spec
    return f"{spec.wire_name}-1", f"{spec.wire_name}-1"


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
@pytest.mark.parametrize("optional", ["all", "none"])
def test_a_parsed_event_is_the_event_its_dataclass_makes(type_name: str, optional: str) -> None:
    """The validator sets an event's slots itself instead of calling its dataclass's
    ``__init__``: every field, optional ones left out included, must come out as ``__init__``
    makes it, equal, with the same hash, and as frozen."""
    cls = EVENT_TYPES[type_name]
    document: dict[str, object] = {"type": type_name, "schema_version": 1}
    attributes: dict[str, object] = {"schema_version": 1}
    for spec in field_specs(cls):
        if spec.attr_name == "schema_version" or (optional == "none" and not spec.required):
            continue
        document[spec.wire_name], attributes[spec.attr_name] = _wire_and_attribute(spec)
    parsed = parse_event(orjson.dumps(document), now_ms=NOW_MS)
    made = cls(**attributes)  # type: ignore[arg-type]
    assert type(parsed) is cls
    assert dataclasses.asdict(parsed) == dataclasses.asdict(made)
    assert parsed == made and hash(parsed) == hash(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.event_id = "changed"  # type: ignore[misc]


def test_unknown_fields_are_kept_out_and_ignored() -> None:
    outcome = parse(event("campaign.spend", vendor_ref={"deep": [1, 2]}, note="x"))
    assert isinstance(outcome, Event)


def test_optional_fields_are_read_when_present() -> None:
    outcome = parse(event("call.started", rep_id="r9", lead_id="l9"))
    assert isinstance(outcome, EVENT_TYPES["call.started"])
    assert (outcome.rep_id, outcome.lead_id, outcome.queue_id) == ("r9", "l9", "q1")  # type: ignore[attr-defined]


def test_subject_is_the_entity_the_event_is_about() -> None:
    outcome = parse(event("rep.upserted"))
    assert isinstance(outcome, Event)
    assert outcome.subject_id == "r1"


BAD: list[tuple[str, object, Reason]] = [
    ("not json", b"{not json", Reason.INVALID_JSON),
    ("truncated", b'{"event_id": "e-1", "type": "lead.assi', Reason.INVALID_JSON),
    ("not utf-8", b"\xff\xfe\x00", Reason.INVALID_JSON),
    ("empty", b"", Reason.INVALID_JSON),
    ("deep nesting", b"[" * 2000 + b"]" * 2000, Reason.INVALID_JSON),
    ("array", [event("lead.assigned")], Reason.NOT_AN_OBJECT),
    ("string", "lead.assigned", Reason.NOT_AN_OBJECT),
    ("null", None, Reason.NOT_AN_OBJECT),
    ("no version", event("lead.assigned", schema_version=...), Reason.MISSING_FIELD),
    ("version as string", event("lead.assigned", schema_version="1"), Reason.WRONG_TYPE),
    ("version 2", event("lead.assigned", schema_version=2), Reason.UNKNOWN_SCHEMA_VERSION),
    ("version 0", event("lead.assigned", schema_version=0), Reason.UNKNOWN_SCHEMA_VERSION),
    ("no type", event("lead.assigned", type=...), Reason.MISSING_FIELD),
    ("type not string", event("lead.assigned", type=7), Reason.WRONG_TYPE),
    ("unknown type", event("lead.assigned", type="lead.deleted"), Reason.UNKNOWN_TYPE),
    ("no event_id", event("lead.assigned", event_id=...), Reason.MISSING_FIELD),
    ("null required", event("lead.assigned", lead_id=None), Reason.MISSING_FIELD),
    ("no subject", event("call.answered", call_id=...), Reason.MISSING_FIELD),
    ("close without outcome", event("opportunity.closed", outcome=...), Reason.MISSING_FIELD),
    ("event_id number", event("lead.assigned", event_id=5), Reason.WRONG_TYPE),
    ("amount as string", event("campaign.spend", amount_minor="120"), Reason.WRONG_TYPE),
    ("amount as float", event("campaign.spend", amount_minor=1.5), Reason.WRONG_TYPE),
    ("bool as int", event("rep.upserted", active=1), Reason.WRONG_TYPE),
    ("int as bool", event("campaign.spend", amount_minor=True), Reason.WRONG_TYPE),
    ("empty id", event("lead.assigned", event_id=""), Reason.INVALID_VALUE),
    ("long id", event("lead.assigned", lead_id="x" * 129), Reason.INVALID_VALUE),
    ("bad enum", event("lead.created", origin="partner"), Reason.INVALID_VALUE),
    ("bad zone", event("team.upserted", timezone="Mars/Olympus"), Reason.INVALID_VALUE),
    ("huge amount", event("campaign.spend", amount_minor=2**63), Reason.INVALID_VALUE),
    ("negative amount", event("campaign.spend", amount_minor=-1), Reason.NEGATIVE_VALUE),
    ("negative talk", event("call.ended", talk_ms=-5), Reason.NEGATIVE_VALUE),
    ("negative deal", event("opportunity.created", amount_minor=-9), Reason.NEGATIVE_VALUE),
    (
        "no offset",
        event("lead.assigned", occurred_at="2026-11-22T09:15:00"),
        Reason.TIMESTAMP_WITHOUT_OFFSET,
    ),
    (
        "no offset, fraction",
        event("lead.assigned", occurred_at="2026-11-22T09:15:00.5"),
        Reason.TIMESTAMP_WITHOUT_OFFSET,
    ),
    ("date only", event("lead.assigned", occurred_at="2026-11-22"), Reason.INVALID_TIMESTAMP),
    (
        "february 30",
        event("lead.assigned", occurred_at="2026-02-30T10:00:00Z"),
        Reason.INVALID_TIMESTAMP,
    ),
    ("words", event("lead.assigned", occurred_at="yesterday"), Reason.INVALID_TIMESTAMP),
    ("epoch number", event("lead.assigned", occurred_at=1700000000), Reason.WRONG_TYPE),
    ("bad scheduled_for", event("meeting.held", scheduled_for="soon"), Reason.INVALID_TIMESTAMP),
    (
        "far future",
        event("lead.assigned", occurred_at="2199-01-01T00:00:00Z"),
        Reason.TIMESTAMP_OUT_OF_RANGE,
    ),
    (
        "before 1970",
        event("lead.assigned", occurred_at="1969-12-31T23:59:59Z"),
        Reason.TIMESTAMP_OUT_OF_RANGE,
    ),
]


@pytest.mark.parametrize(("name", "document", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_its_reason(name: str, document: object, reason: Reason) -> None:
    raw = document if isinstance(document, bytes) else orjson.dumps(document)
    outcome = parse_event(raw, now_ms=NOW_MS)
    assert isinstance(outcome, Rejection)
    assert outcome.reason is reason, outcome.detail
    assert outcome.detail


def test_records_over_the_size_limit_are_too_large() -> None:
    document = event("lead.assigned", padding="x" * 1000)
    assert isinstance(parse(document, Limits(max_event_bytes=100_000)), Event)
    outcome = parse(document, Limits(max_event_bytes=1000))
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.TOO_LARGE


def test_future_skew_is_measured_from_the_given_clock() -> None:
    near = event("lead.assigned", occurred_at="2026-11-23T11:59:00Z")  # 23h59m ahead
    far = event("lead.assigned", occurred_at="2026-11-23T12:01:00Z")  # 24h01m ahead
    assert isinstance(parse(near), Event)
    assert reason_of(far) is Reason.TIMESTAMP_OUT_OF_RANGE


def test_details_name_the_field() -> None:
    outcome = parse(event("campaign.spend", amount_minor=-3))
    assert isinstance(outcome, Rejection)
    assert "amount_minor" in outcome.detail


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(raw: bytes) -> None:
    outcome = parse_event(raw, now_ms=NOW_MS)
    assert isinstance(outcome, Event | Rejection)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


# Generation time varies on a shared 2-core machine; the property is what matters here.
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(EXAMPLES)),
    st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "type",
                "occurred_at",
                "schema_version",
                "lead_id",
                "amount_minor",
                "rep_id",
                "outcome",
                "talk_ms",
                "scheduled_for",
                "timezone",
                "active",
                "origin",
            ]
        ),
        json_values,
        max_size=3,
    ),
)
def test_mutated_events_never_raise(type_name: str, changes: dict[str, object]) -> None:
    """Valid events with random values in real field names: accepted or rejected, never raised."""
    document = {**event(type_name), **changes}
    try:
        raw = orjson.dumps(document)
    except TypeError:  # integers beyond 64 bits cannot be encoded; nothing to test
        return
    outcome = parse_event(raw, now_ms=NOW_MS)
    if isinstance(outcome, Rejection):
        assert outcome.reason in Reason
    else:
        assert outcome.type == document["type"]


def test_the_documented_fields_of_each_type_are_the_validators() -> None:
    """docs/events.md lists, per type, the required and the optional fields: the same as the
    validator's (and so the JSON Schema's, derived from the same classes)."""
    from pathlib import Path

    from projections.validation import field_specs

    text = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    section = text.split("## Fields of each type")[1].split("\n## ")[0]
    documented = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            kind, required, optional = (cell.strip() for cell in line.strip("|").split("|"))
            names = [
                {n.strip(" `") for n in cell.split(",") if n.strip(" `-")}
                for cell in (required, optional)
            ]
            documented[kind.strip("`")] = tuple(names)
    envelope = {"event_id", "occurred_at", "schema_version", "source"}
    assert set(documented) == set(EVENT_TYPES)
    for kind, cls in EVENT_TYPES.items():
        specs = [s for s in field_specs(cls) if s.wire_name not in envelope]
        expected = (
            {s.wire_name for s in specs if s.required},
            {s.wire_name for s in specs if not s.required},
        )
        assert documented[kind] == expected, kind
