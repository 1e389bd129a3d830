"""The pure projection core: records are order-independent, duplicates inert, deltas exact."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from projections.contributions import Rules, contributions
from projections.engine import DirectoryView, plan_batch
from projections.entities import apply
from projections.events import Event
from projections.facts import LeadFact, lead_fact
from projections.validation import Rejection, parse_event

pytestmark = pytest.mark.unit

NOW = 1_795_420_800_000


def event(type_name: str, at: str, event_id: str, **fields: Any) -> Event:
    raw = orjson.dumps(
        {"event_id": event_id, "type": type_name, "occurred_at": at, "schema_version": 1, **fields}
    )
    parsed = parse_event(raw, now_ms=NOW)
    assert not isinstance(parsed, Rejection), parsed
    return parsed


DIRECTORY = [
    event(
        "team.upserted",
        "2026-01-01T00:00:00Z",
        "t1",
        team_id="emea",
        name="EMEA",
        timezone="Europe/Berlin",
    ),
    event(
        "rep.upserted",
        "2026-01-01T00:00:00Z",
        "r1",
        rep_id="ann",
        name="Ann",
        team_id="emea",
        active=True,
    ),
]
CLOSES = [
    event(
        "opportunity.created",
        "2026-11-01T09:00:00Z",
        "o1",
        opportunity_id="o",
        rep_id="ann",
        amount_minor=100_00,
        product="p",
        segment="s",
    ),
    event(
        "opportunity.closed",
        "2026-11-10T09:00:00Z",
        "o2",
        opportunity_id="o",
        rep_id="ann",
        outcome="lost",
    ),
    event(
        "opportunity.closed",
        "2026-11-20T09:00:00Z",
        "o3",
        opportunity_id="o",
        rep_id="ann",
        outcome="won",
        amount_minor=90_00,
    ),
]


def directory() -> DirectoryView:
    view = DirectoryView({}, Rules())
    plan_batch({}, DIRECTORY, view, Rules())
    return view


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_reopened_deal_ends_the_same_in_any_order(order: tuple[int, ...]) -> None:
    record: dict[str, str] = {}
    for i in order:
        apply(record, CLOSES[i], directory())
    assert (record["outcome"], record["amount"], record["x_at"]) == (
        "won",
        "9000",
        str(CLOSES[2].occurred_at_ms),
    )


def test_a_duplicate_event_id_changes_nothing() -> None:
    view = directory()
    record: dict[str, str] = {}
    assert apply(record, CLOSES[0], view)
    snapshot = dict(record)
    assert not apply(record, CLOSES[0], view)
    assert record == snapshot


def test_the_first_answer_of_a_call_counts() -> None:
    view = directory()
    record: dict[str, str] = {}
    late = event("call.answered", "2026-11-20T09:00:30Z", "a2", call_id="c", rep_id="ann")
    early = event("call.answered", "2026-11-20T09:00:10Z", "a1", call_id="c", rep_id="ann")
    apply(record, late, view)
    apply(record, early, view)
    assert record["a_at"] == str(early.occurred_at_ms)


def test_an_unknown_rep_counts_under_unassigned() -> None:
    record: dict[str, str] = {}
    apply(record, CLOSES[1], DirectoryView({}, Rules()))
    assert record["x_team"] == "unassigned|UTC"


def test_a_batch_moves_a_reopened_deal_between_windows() -> None:
    view = directory()
    first = plan_batch({}, CLOSES[:2], view, Rules())
    stored = {("opp", "o"): first.records[("opp", "o")]}
    second = plan_batch(stored, CLOSES[2:], view, Rules())
    lost_day = ("org", "", "D2026-11-10")
    won_day = ("org", "", "D2026-11-20")
    assert first.deltas[lost_day] == {"lost": 1}
    assert second.deltas[lost_day] == {"lost": -1}
    assert second.deltas[won_day]["won"] == 1 and second.deltas[won_day]["revenue"] == 9000
    assert second.deltas[won_day] == {
        "won": 1,
        "revenue": 9000,
        "cycle_ms": 19 * 86_400_000,
        "cycle|le=2592000": 1,  # 19 days: the 30-day bucket
    }
    # Longer tiers are the rollups' (derived from the days): the plan writes none.
    assert ("org", "", "A") not in second.deltas and ("org", "", "M2026-11") not in second.deltas


def test_contributions_are_a_function_of_the_record_alone() -> None:
    view = directory()
    record: dict[str, str] = {}
    for e in CLOSES:
        apply(record, e, view)
    assert contributions("opp", "o", record, Rules()) == contributions(
        "opp", "o", dict(record), Rules()
    )


def test_touches_and_deals_become_lead_facts() -> None:
    call = event(
        "call.started",
        "2026-11-20T09:00:00Z",
        "c1",
        call_id="c",
        direction="outbound",
        rep_id="ann",
        lead_id="L",
    )
    inbound = event(
        "call.started",
        "2026-11-20T09:00:00Z",
        "c2",
        call_id="d",
        direction="inbound",
        queue_id="q",
        lead_id="L",
    )
    assert lead_fact(call) == LeadFact("touch:c1", "L", "touch", call.occurred_at_ms)
    assert lead_fact(inbound) is None
    assert lead_fact(CLOSES[0]) is None  # no lead_id


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_a_reps_name_is_the_latest_one_given_in_any_order(order: tuple[int, ...]) -> None:
    upserts = [
        event(
            "rep.upserted",
            "2026-01-01T00:00:00Z",
            "u1",
            rep_id="r9",
            team_id="emea",
            active=True,
            name="Ana",
        ),
        event(
            "rep.upserted",
            "2026-02-01T00:00:00Z",
            "u2",
            rep_id="r9",
            team_id="emea",
            active=True,
            name="Ana Lima",
        ),
        event(
            "rep.upserted", "2026-03-01T00:00:00Z", "u3", rep_id="r9", team_id="apac", active=True
        ),  # no name: the last one given stays
    ]
    record: dict[str, str] = {}
    for i in order:
        apply(record, upserts[i], DirectoryView({}, Rules()))
    view = DirectoryView({("rep", "r9"): record}, Rules())
    assert view.name_of("r9") == "Ana Lima"
    assert view.team_of("r9", NOW) == "apac"
    assert view.name_of("nobody") is None
