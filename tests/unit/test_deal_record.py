"""A deal's owner and amount from its record (contract 1.1), against the oracle.

Closes and creations that name no rep or amount take the deal's latest known owner and
amount from its created, updated and stage events, in whatever order they arrive. Here a
deal's events, with owner and amount present or not, ties in time, a duplicate, are applied
in a random order to one record through the pure engine (entities, contributions,
catalogue); the deal KPIs of every scope equal the oracle's over the same events.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.catalogue import evaluate
from projections.contributions import GAUGE, Rules, contributions
from projections.engine import DirectoryView
from projections.entities import apply
from projections.validation import Rejection, format_instant_ms, parse_event
from tests.oracle import Oracle
from tests.support import figures

pytestmark = pytest.mark.unit

T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z
HOUR = 3_600_000
NOW = T0 + 30 * 24 * HOUR
TEAMS = {"r1": "emea", "r2": "apac"}  # r3 is in no team: its credit goes to "unassigned"
MOVE_H = 3  # r1 moves to apac at T0 + 3 h: a close after it credits apac, one before emea
DEAL_KPIS = (
    "opportunities_created",
    "win_rate",
    "win_loss_ratio",
    "revenue_won",
    "average_deal_size",
    "deals_won_without_amount",
    "sales_cycle_seconds",
)
SCOPES = [("org", ""), ("team", "emea"), ("team", "apac"), ("team", "unassigned")] + [
    ("rep", r) for r in ("r1", "r2", "r3")
]

reps = st.sampled_from(["r1", "r2", "r3", None])
amounts = st.sampled_from([None, 0, 150_000, 990_000])
hours = st.integers(0, 6)  # few distinct instants: ties broken by event id happen
created = st.fixed_dictionaries(
    {"type": st.just("opportunity.created"), "h": hours, "rep_id": reps, "amount_minor": amounts}
)
updated = st.fixed_dictionaries(
    {"type": st.just("opportunity.updated"), "h": hours, "rep_id": reps, "amount_minor": amounts}
)
staged = st.fixed_dictionaries(
    {"type": st.just("opportunity.stage_changed"), "h": hours, "rep_id": reps}
)
closed = st.fixed_dictionaries(
    {
        "type": st.just("opportunity.closed"),
        "h": hours,
        "rep_id": reps,
        "amount_minor": amounts,
        "outcome": st.sampled_from(["won", "lost"]),
    }
)
deal_events = st.tuples(
    st.lists(created, max_size=1),
    st.lists(updated, max_size=3),
    st.lists(staged, max_size=2),
    st.lists(closed, max_size=2),
).map(lambda parts: [e for part in parts for e in part])


def _wire(events: list[dict[str, Any]]) -> list[bytes]:
    out = []
    for n, draft in enumerate(events):
        document = {
            "event_id": f"e{n:02d}",
            "type": draft["type"],
            "occurred_at": format_instant_ms(T0 + draft["h"] * HOUR),
            "schema_version": 1,
            "opportunity_id": "deal-1",
            **{k: v for k, v in draft.items() if k not in ("type", "h") and v is not None},
        }
        if draft["type"] == "opportunity.stage_changed":
            document["stage"] = "proposal"
        out.append(orjson.dumps(document))
    return out


def _directory() -> DirectoryView:
    directory = DirectoryView({}, Rules())
    for team in ("emea", "apac"):
        directory.update(("team", team), {"timezone": "UTC"})
    for rep, team in TEAMS.items():
        directory.add_upsert(rep, 0, f"up-{rep}", team)
    directory.add_upsert("r1", T0 + MOVE_H * HOUR, "up-r1-moved", "apac")
    return directory


def _engine(wire: list[bytes], order: random.Random) -> dict[tuple[str, str], dict[str, Any]]:
    arrivals = wire + ([order.choice(wire)] if wire else [])  # and one duplicate
    order.shuffle(arrivals)
    directory, record = _directory(), {}
    for raw in arrivals:
        event = parse_event(raw, now_ms=NOW)
        assert not isinstance(event, Rejection), event
        apply(record, event, directory)
    sums: dict[tuple[str, str], dict[str, int]] = {scope: {} for scope in SCOPES}
    for (scope, scope_id, _zone, anchor, field), value in contributions(
        "opp", "deal-1", record, Rules()
    ).items():
        if anchor != GAUGE:
            bucket = sums.setdefault((scope, scope_id), {})
            bucket[field] = bucket.get(field, 0) + value
    return {
        scope: {k: figures(v) for k, v in evaluate(scope[0], sums[scope], {}, DEAL_KPIS).items()}
        for scope in SCOPES
    }


def _oracle(wire: list[bytes]) -> dict[tuple[str, str], dict[str, Any]]:
    directory = [
        orjson.dumps(
            {
                "event_id": f"up-{rep}",
                "type": "rep.upserted",
                "occurred_at": format_instant_ms(0),
                "schema_version": 1,
                "rep_id": rep,
                "team_id": team,
                "active": True,
            }
        )
        for rep, team in TEAMS.items()
    ]
    directory.append(
        orjson.dumps(
            {
                "event_id": "up-r1-moved",
                "type": "rep.upserted",
                "occurred_at": format_instant_ms(T0 + MOVE_H * HOUR),
                "schema_version": 1,
                "rep_id": "r1",
                "team_id": "apac",
                "active": True,
            }
        )
    )
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "log.jsonl"
        log.write_bytes(b"\n".join(directory + wire) + b"\n")
        oracle = Oracle(log)
        return {
            scope: {k: v for k, v in oracle.kpis(*scope, "all", NOW).items() if k in DEAL_KPIS}
            for scope in SCOPES
        }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deal_events, st.integers(0, 2**32))
def test_a_deal_in_any_order_gives_the_oracle(events: list[dict[str, Any]], seed: int) -> None:
    wire = _wire(events)
    assert _engine(wire, random.Random(seed)) == _oracle(wire)


def test_a_webhook_deal_whose_owner_and_amount_come_after_the_close() -> None:
    """Written by hand from docs/events.md: created and closed won with neither owner nor
    amount; the owner (r2, of apac) and the amount arrive after the close, and an earlier
    owner (r1) was replaced. The win, 9,900.00 of revenue and a 3-hour cycle go to r2."""
    events = [
        {
            "type": "opportunity.closed",
            "h": 3,
            "rep_id": None,
            "amount_minor": None,
            "outcome": "won",
        },
        {"type": "opportunity.updated", "h": 5, "rep_id": "r2", "amount_minor": None},
        {"type": "opportunity.created", "h": 0, "rep_id": None, "amount_minor": None},
        {"type": "opportunity.updated", "h": 1, "rep_id": "r1", "amount_minor": 990_000},
    ]
    got = _engine(_wire(events), random.Random(1))
    r2, r1 = got[("rep", "r2")], got[("rep", "r1")]
    assert r2["win_rate"] == {"value": 1.0, "numerator": 1, "denominator": 1}
    assert r2["revenue_won"]["value"] == 990_000
    assert r2["sales_cycle_seconds"]["value"] == 3 * 3600
    assert r2["opportunities_created"]["value"] == 1
    assert r1["revenue_won"]["value"] == 0 and r1["win_rate"]["value"] is None
    assert got[("team", "apac")]["revenue_won"]["value"] == 990_000
    assert got[("team", "emea")]["revenue_won"]["value"] == 0


def test_a_won_deal_whose_amount_is_never_known_is_counted_apart() -> None:
    events = [
        {"type": "opportunity.created", "h": 0, "rep_id": "r1", "amount_minor": None},
        {
            "type": "opportunity.closed",
            "h": 2,
            "rep_id": None,
            "amount_minor": None,
            "outcome": "won",
        },
    ]
    org = _engine(_wire(events), random.Random(2))[("org", "")]
    assert org["win_rate"]["value"] == 1.0
    assert org["deals_won_without_amount"]["value"] == 1
    assert org["revenue_won"]["value"] == 0
    assert org["average_deal_size"] == {"value": None, "numerator": 0, "denominator": 0}
    assert org["sales_cycle_seconds"]["value"] == 2 * 3600


def test_a_deal_recorded_before_contract_1_1_keeps_its_creator_as_owner() -> None:
    """A record written by version 1 (the creation's rep in ``c_rep``, no ``own``) closed by a
    thin close after the upgrade: the win goes to the creator, not to nobody."""
    record = {
        "c@": f"{T0:015d}|e0",
        "c_at": str(T0),
        "c_rep": "r1",
        "lead": "",
        "c_team": "emea|UTC",
        "!e0": "",
    }
    directory = _directory()
    (close,) = _wire(
        [
            {
                "type": "opportunity.closed",
                "h": 2,
                "rep_id": None,
                "amount_minor": 50,
                "outcome": "won",
            }
        ]
    )
    event = parse_event(close, now_ms=NOW)
    assert not isinstance(event, Rejection)
    apply(record, event, directory)
    found = contributions("opp", "deal-1", record, Rules())
    assert found[("rep", "r1", "UTC", T0 + 2 * HOUR, "won")] == 1
    assert found[("team", "emea", "UTC", T0 + 2 * HOUR, "revenue")] == 50
