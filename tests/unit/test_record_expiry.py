"""Records end by the lateness horizon (docs/lateness.md, "State expiry"): an event of a
call, email, meeting or campaign whose latest event is more than the horizon behind the
partition's stream time starts a new record, and the store deletes records so over. The
projector on the in-memory store, in batches of any size, equals the oracle, which splits
such a subject's events into lives by the same rule, written on its own."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest

from projections.contributions import Rules
from projections.engine import DirectoryView
from projections.memory_store import MemoryBackend, MemoryStore
from projections.read import read_kpis
from projections.validation import Reason, Rejection, parse_event
from tests.integration.test_projections import DeadLetters
from tests.oracle import Oracle
from tests.projection_feed import project
from tests.support import figures

pytestmark = pytest.mark.unit

DAY = 86_400_000
T = 1_795_000_000_000  # 2026-11-18 (a Wednesday), 11:06:40 UTC
RULES = Rules(lateness_horizon_ms=4 * DAY)
END_MS = T + 12 * DAY


def _at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _event(n: int, kind: str, at_ms: int, **fields: object) -> dict[str, object]:
    head = {"event_id": f"ev-{n}", "type": kind, "occurred_at": _at(at_ms), "schema_version": 1}
    return {**head, "source": "test", **fields}


# One partition, in this order. The horizon is 4 days.
LOG = [
    _event(1, "team.upserted", T - DAY, team_id="emea", name="EMEA", timezone="UTC"),
    _event(2, "rep.upserted", T - DAY, rep_id="r1", name="R 1", team_id="emea", active=True),
    _event(3, "call.started", T, call_id="c1", direction="inbound", queue_id="q1"),
    _event(4, "call.answered", T + 10_000, call_id="c1", rep_id="r1"),
    _event(5, "campaign.spend", T + 60_000, campaign_id="k1", amount_minor=100),
    _event(6, "email.sent", T + 120_000, message_id="m1", rep_id="r1", lead_id="l1"),
    _event(7, "call.started", T + 180_000, call_id="c0", direction="inbound", queue_id="q1"),
    # Ten days on: the stream time is T + 10 d, so c1, k1, m1 and c0 are over.
    _event(8, "call.started", T + 10 * DAY, call_id="c2", direction="inbound", queue_id="q1"),
    # c1 ends, on time by the rule: a new call record with an end and nothing else.
    _event(9, "call.ended", T + 10 * DAY + 60_000, call_id="c1", outcome="completed"),
    # A copy of c1's answer: as late as the original, dead-lettered.
    _event(4, "call.answered", T + 10_000, call_id="c1", rep_id="r1"),
    # More spend on k1: a new campaign record, counted as every spend is.
    _event(10, "campaign.spend", T + 10 * DAY + 120_000, campaign_id="k1", amount_minor=50),
    # m1 is opened: a new message record, not sent, so counted nowhere.
    _event(11, "email.opened", T + 10 * DAY + 180_000, message_id="m1"),
    _event(12, "call.answered", T + 10 * DAY + 5_000, call_id="c2", rep_id="r1"),
    _event(13, "call.ended", T + 10 * DAY + 65_000, call_id="c2", outcome="completed"),
]
# Opportunities: o1 stays open for ten silent days and is won (one life: its sales cycle
# counts); o2 is lost, then updated ten days on (a new life, which counts nothing).
DEALS = [
    _event(20, "opportunity.created", T, opportunity_id="o1", lead_id="l1", rep_id="r1"),
    _event(21, "opportunity.created", T, opportunity_id="o2", lead_id="l2", rep_id="r1"),
    _event(22, "opportunity.closed", T + DAY, opportunity_id="o2", outcome="lost"),
    _event(23, "call.started", T + 10 * DAY, call_id="c9", direction="outbound", rep_id="r1"),
    _event(
        24,
        "opportunity.closed",
        T + 10 * DAY,
        opportunity_id="o1",
        outcome="won",
        amount_minor=9_000,
    ),
    _event(25, "opportunity.updated", T + 10 * DAY, opportunity_id="o2", amount_minor=7),
]


class Projected(NamedTuple):
    store: MemoryStore
    oracle: Oracle
    dead: DeadLetters
    directory: DirectoryView


async def _projected(
    tmp_path: Path, log: list[dict[str, object]], partitions: int, batch: int
) -> Projected:
    """``log`` through the projector on the in-memory store, in batches of ``batch``, and
    the oracle over it."""
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(orjson.dumps(raw) + b"\n" for raw in log))
    events = []
    for raw in log:
        event = parse_event(orjson.dumps(raw), now_ms=END_MS)
        assert not isinstance(event, Rejection), event
        events.append(event)
    store, dead = MemoryStore(MemoryBackend(), "t"), DeadLetters()
    await project(
        store,
        events,
        partitions,
        random.Random(0),
        rules=RULES,
        end_ms=END_MS,
        dead_letter=dead,
        batch=batch,
    )
    oracle = Oracle(path, horizon_ms=RULES.lateness_horizon_ms, partitions=partitions)
    return Projected(store, oracle, dead, await store.directory(range(partitions), RULES))


async def _equal_to_oracle(
    done: Projected, scopes: list[tuple[str, str]], windows: tuple[str, ...] = ("all",)
) -> None:
    for scope, scope_id in scopes:
        for window in windows:
            answer = await read_kpis(done.store, done.directory, scope, scope_id, window, END_MS)
            got = {kpi: figures(result) for kpi, result in answer.kpis.items()}
            assert got == done.oracle.kpis(scope, scope_id, window, END_MS), (scope, window)


@pytest.mark.parametrize("batch", [1, 3, len(LOG)])
async def test_a_record_over_by_the_horizon_starts_anew_and_is_deleted(
    tmp_path: Path, batch: int
) -> None:
    done = await _projected(tmp_path, LOG, 1, batch)
    store, directory = done.store, done.directory
    too_late = [(r.item.event_id, why.reason) for r, why in done.dead]
    assert too_late == [("ev-4", Reason.TOO_LATE)]
    await _equal_to_oracle(done, [("org", ""), ("queue", "q1"), ("campaign", "k1"), ("rep", "r1")])
    queue = await read_kpis(store, directory, "queue", "q1", "all", END_MS)
    # c0, c1 and c2 were offered; c1's end came after its life was over: it is not handled.
    assert queue.kpis["calls_offered"].value == 3
    assert figures(queue.kpis["average_handle_time_seconds"])["denominator"] == 1
    campaign = await read_kpis(store, directory, "campaign", "k1", "all", END_MS)
    assert figures(campaign.kpis["cost_per_lead"])["numerator"] == 150  # both spends

    # What is left of the over records: c1's and k1's new lives, and m1's; c0 is gone.
    records = (await store.load({0: [("call", c) for c in ("c0", "c1", "c2")]}))[0]
    assert sorted(records) == [("call", "c1"), ("call", "c2")]
    assert "s_at" not in records[("call", "c1")] and "e_at" in records[("call", "c1")]


@pytest.mark.parametrize("batch", [1, len(DEALS) + 2])
async def test_an_opportunity_ends_only_once_closed(tmp_path: Path, batch: int) -> None:
    done = await _projected(tmp_path, LOG[:2] + DEALS, 1, batch)
    store, directory = done.store, done.directory
    await _equal_to_oracle(done, [("org", ""), ("rep", "r1")])
    org = await read_kpis(store, directory, "org", "", "all", END_MS)
    assert figures(org.kpis["win_rate"])["numerator"] == 1
    assert figures(org.kpis["win_rate"])["denominator"] == 2
    assert org.kpis["revenue_won"].value == 9_000
    cycle = figures(org.kpis["sales_cycle_seconds"])  # the mean: 10 days over 1 deal
    assert (cycle["numerator"], cycle["denominator"]) == (10 * DAY // 1000, 1), cycle
    records = (await store.load({0: [("opp", "o1"), ("opp", "o2")]}))[0]
    assert records[("opp", "o2")].get("amt") == "7" and "x_at" not in records[("opp", "o2")]


# A lead responds and is touched, goes quiet for ten days while the stream moves on (its
# record is compacted), then moves stage, responds and is touched again; its first
# response comes again, once re-stamped (a duplicate) and once as it was (too late).
LEAD = [
    *LOG[:2],
    _event(30, "lead.created", T, lead_id="l9", origin="sales", lead_source="ref", rep_id="r1"),
    _event(31, "lead.responded", T + 3_600_000, lead_id="l9", rep_id="r1", sentiment="positive"),
    _event(32, "email.sent", T + 7_200_000, message_id="m9", rep_id="r1", lead_id="l9"),
    _event(33, "call.started", T + 10 * DAY, call_id="c5", direction="outbound", rep_id="r1"),
    _event(34, "lead.stage_changed", T + 10 * DAY + 60_000, lead_id="l9", stage="qualified"),
    _event(35, "lead.responded", T + 10 * DAY + 120_000, lead_id="l9", sentiment="neutral"),
    # The first response again with another time: on time, and still recognised.
    _event(31, "lead.responded", T + 10 * DAY + 100_000, lead_id="l9", sentiment="positive"),
    _event(36, "email.sent", T + 10 * DAY + 180_000, message_id="m8", rep_id="r1", lead_id="l9"),
    _event(31, "lead.responded", T + 3_600_000, lead_id="l9", rep_id="r1", sentiment="positive"),
    _event(37, "call.started", T + 11 * DAY, call_id="c6", direction="outbound", rep_id="r1"),
]


@pytest.mark.parametrize(
    ("partitions", "batch", "compacts"),
    # One event a commit on one partition: the commit after the call of T + 10 d compacts the
    # lead. In one batch no commit falls in between; on three partitions the call is on
    # another one (the lead's partition's stream time moves with the lead's own events).
    [(1, 1, True), (1, len(LEAD), False), (3, 2, False)],
)
async def test_a_quiet_lead_is_compacted_and_counts_on(
    tmp_path: Path, partitions: int, batch: int, compacts: bool
) -> None:
    done = await _projected(tmp_path, LEAD, partitions, batch)
    store, directory = done.store, done.directory
    too_late = [(r.item.event_id, why.reason) for r, why in done.dead]
    assert too_late == [("ev-31", Reason.TOO_LATE)]
    scopes = [("org", ""), ("rep", "r1"), ("team", "emea")]
    await _equal_to_oracle(done, scopes, ("all", "30d", "today"))
    org = await read_kpis(store, directory, "org", "", "all", END_MS)
    # The first response, counted before the compaction, and the second.
    sentiment = figures(org.kpis["response_sentiment_ratio"])
    assert {label: f["numerator"] for label, f in sentiment.items()} == {
        "positive": 1,
        "neutral": 1,
    }
    (record,) = [
        found
        for p in range(partitions)
        for found in (await store.load({p: [("lead", "l9")]}))[p].values()
    ]
    # Compacted, its ordering fields and fact markers are gone; the second round's came
    # after (the last call moved the stream less than the horizon). Event markers stay.
    assert ("c@" in record, "own@" in record) == (not compacts,) * 2
    assert all(f"!ev-{n}" in record for n in (30, 31, 34, 35))
    assert record["stage"] == "qualified" and "c_at" in record and "t_at" in record
