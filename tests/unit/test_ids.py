"""Ids of any character but controls: the contract's rule, and every place the engine joins
an id with its separators gives the id back whole."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.contributions import Rules, contributions
from projections.engine import DirectoryView, plan_batch
from projections.entities import pack, unpack
from projections.events import COUNT_MAX, Event
from projections.kpi_changes import record_key
from projections.validation import Reason, Rejection, parse_event
from tests.hostile import SEPARATORS, hostile_id
from tests.unit.test_validation import NOW_MS, event

pytestmark = pytest.mark.unit

any_text = st.text(st.characters(exclude_categories=["Cs"]))


@given(st.lists(st.one_of(any_text, st.sampled_from(SEPARATORS)), min_size=1, max_size=6))
def test_packed_parts_come_back_whole(parts: list[str]) -> None:
    assert unpack(pack(*parts)) == parts


@given(hostile_id, hostile_id, st.sampled_from(["a", "b/c", "%", "%2F"]))
def test_kpi_topic_keys_of_different_figures_differ(one: str, other: str, label: str) -> None:
    assert record_key("k", "rep", one, "all", label) != record_key(
        "k", "rep", other, "all", label
    ) or (one == other)
    assert record_key("k", "rep", one, "all", None) != record_key("k", "rep", one, "all", label)


def test_a_slash_in_an_id_cannot_make_two_keys_collide() -> None:
    assert record_key("win_rate", "rep", "a/b", "all", None) == "win_rate/rep/a%2Fb/all"
    assert record_key("win_rate", "rep", "a", "all", "b/all") == "win_rate/rep/a/all/b%2Fall"


@pytest.mark.parametrize("control", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f"])
def test_an_id_with_a_control_character_is_refused(control: str) -> None:
    parsed = parse_event(orjson.dumps(event("lead.assigned", rep_id=f"r{control}1")), now_ms=NOW_MS)
    assert isinstance(parsed, Rejection)
    assert parsed.reason is Reason.INVALID_VALUE
    assert f"U+{ord(control):04X}" in parsed.detail and "rep_id" in parsed.detail


@given(hostile_id)
def test_every_other_character_makes_a_valid_id(ident: str) -> None:
    parsed = parse_event(orjson.dumps(event("lead.assigned", rep_id=ident)), now_ms=NOW_MS)
    assert not isinstance(parsed, Rejection), parsed
    assert parsed.rep_id == ident  # type: ignore[attr-defined]


def test_amounts_stop_at_two_to_the_53_minus_one() -> None:
    ok = parse_event(orjson.dumps(event("campaign.spend", amount_minor=COUNT_MAX)), now_ms=NOW_MS)
    assert not isinstance(ok, Rejection)
    over = parse_event(
        orjson.dumps(event("campaign.spend", amount_minor=COUNT_MAX + 1)), now_ms=NOW_MS
    )
    assert isinstance(over, Rejection) and over.reason is Reason.INVALID_VALUE


def _event(kind: str, **fields: object) -> Event:
    parsed = parse_event(orjson.dumps(event(kind, **fields)), now_ms=NOW_MS)
    assert not isinstance(parsed, Rejection), parsed
    return parsed


def test_a_rep_and_a_team_with_separators_are_credited_as_themselves() -> None:
    """The case that stopped the worker: a rep `x|y` in a team `t|1`."""
    rules = Rules()
    view = DirectoryView({}, rules)
    team = _event("team.upserted", team_id="t|1", name="T", timezone="Europe/Berlin")
    rep = _event("rep.upserted", rep_id="x|y", name="X", team_id="t|1", active=True)
    plan_batch({}, [team, rep], view, rules)
    lead = _event(
        "lead.created",
        event_id="e|1",
        lead_id="l|1",
        origin="sales",
        lead_source="a|b",
        rep_id="x|y",
    )
    responded = _event(
        "lead.responded", event_id="e|2", lead_id="l|1", sentiment="positive", rep_id="x|y"
    )
    plan = plan_batch({}, [lead, responded], view, rules)
    record = plan.records[("lead", "l|1")]
    found = contributions("lead", "l|1", record, rules)
    credited = {(scope, ident, zone) for scope, ident, zone, _, _ in found}
    assert ("rep", "x|y", "Europe/Berlin") in credited
    assert ("team", "t|1", "Europe/Berlin") in credited
    assert not any(ident in ("x", "y", "t", "1") for _, ident, _ in credited)


def test_an_event_id_that_looks_like_a_fact_id_does_not_hide_the_fact() -> None:
    """Lead facts are remembered apart from events: an event id `touch:e1` on the lead and
    the touch fact of event `e1` are two things."""
    rules = Rules()
    view = DirectoryView({}, rules)
    lead = _event(
        "lead.created", event_id="touch:e1", lead_id="l1", origin="sales", lead_source="web"
    )
    email = _event("email.sent", event_id="e1", message_id="m1", rep_id="r1", lead_id="l1")
    facts = plan_batch({}, [email], view, rules).facts
    plan = plan_batch({}, [lead, *facts], view, rules)
    assert plan.facts_applied == 1
    assert "t_at" in plan.records[("lead", "l1")]


def test_a_rep_with_thousands_of_upserts_is_placed_by_time() -> None:
    rules = Rules()
    view = DirectoryView({}, rules)
    upserts = [
        _event(
            "rep.upserted",
            event_id=f"u{n:05d}",
            rep_id="r",
            name="R",
            team_id=f"team{n % 7}",
            active=True,
            occurred_at=f"2026-11-20T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z",
        )
        for n in range(5_000)
    ]
    plan = plan_batch({}, upserts[::-1], view, rules)
    reloaded = DirectoryView({("rep", "r"): plan.records[("rep", "r")]}, rules)
    for n in (0, 1, 59, 3_599, 4_999):
        at = upserts[n].occurred_at_ms
        assert view.team_of("r", at) == reloaded.team_of("r", at) == f"team{n % 7}"
    assert view.team_of("r", upserts[0].occurred_at_ms - 1) == "unassigned"
