"""One contract for every projection store (projections/stores.py): the same tests run on the
in-memory twin (unit tier, no server) and on the real Redis (integration tier, the servers the
test run starts: one Redis, and a Redis Cluster). What only Redis does (bucket TTLs, the Lua
limits) stays in tests/integration/test_store_commit.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest

from config.connections import redis_client
from config.settings import Settings
from projections.contributions import Rules
from projections.engine import GAUGE_BUCKET, LAST, AggregateKey, BatchPlan
from projections.memory_store import MemoryBackend, MemoryStore
from projections.store import RedisStore
from projections.stores import (
    APPLIED,
    COMMITTED,
    NEWEST,
    REFILL,
    STREAM,
    TOO_LATE,
    Commit,
    DirectoryCache,
    DirtyMark,
    NamespaceFrozen,
    ProjectionStore,
)
from tests.support import Writer

DAY: AggregateKey = ("team", "emea", "D2026-11-23")
ALL: AggregateKey = ("team", "emea", "A")
MINUTE: AggregateKey = ("team", "emea", "m29400000")
ORG_DAY: AggregateKey = ("org", "", "D2026-11-23")
GAUGE: AggregateKey = ("team", "emea", GAUGE_BUCKET)
LIMIT = 2**53
# What the rollups derive from DAY, Monday 23 November 2026 (windows.derived_buckets).
DAY_DERIVED = ("W2026-W48", "M2026-11", "Q2026-Q4", "Y2026", "A")


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("cluster", marks=[pytest.mark.integration, pytest.mark.cluster]),
    ]
)
def redis_settings(request: pytest.FixtureRequest) -> Settings | None:
    """None for the in-memory store; else the settings of the server the run starts, one
    Redis or a Redis Cluster (asked for here, outside the event loop: starting the servers
    runs loops of its own)."""
    if request.param == "memory":
        return None
    env = request.getfixturevalue("cluster_env" if request.param == "cluster" else "stack_env")
    return Settings.from_env(env)


@pytest.fixture
async def store(redis_settings: Settings | None) -> AsyncIterator[ProjectionStore]:
    namespace = f"contract{uuid.uuid4().hex[:8]}"
    if redis_settings is None:
        yield MemoryStore(MemoryBackend(), namespace)
        return
    client = redis_client(redis_settings)
    try:
        yield RedisStore(client, namespace)
    finally:
        async for key in client.scan_iter(match=f"{{{namespace}:*", count=1000):
            await client.delete(key)
        await client.aclose()


async def test_deltas_add_up_over_commits_buckets_and_partitions(store: ProjectionStore) -> None:
    first, second = Writer(store, 0), Writer(store, 1)
    # ALL written directly: an event whose local day is no longer kept (windows.live_buckets).
    await first(deltas={DAY: {"calls": 2, "talk_ms": 90_000}, ALL: {"calls": 2}})
    await first(deltas={DAY: {"calls": 1}})
    await second(deltas={DAY: {"calls": 4}, MINUTE: {"calls": 1}})
    day, both, all_time, week, org = await store.sums_many(
        [
            ("team", "emea", ("D2026-11-23",)),
            ("team", "emea", ("D2026-11-23", "m29400000")),
            ("team", "emea", ("A",)),
            ("team", "emea", ("W2026-W48",)),
            ("org", "", ("D2026-11-23",)),
        ],
    )
    assert day == {"calls": 7, "talk_ms": 90_000}
    assert both == {"calls": 8, "talk_ms": 90_000}
    assert all_time == {"calls": 9, "talk_ms": 90_000}  # the day's 7 and the 2 written
    assert week == day
    assert org == {}
    assert await store.sums("team", "emea", ["m29400000"]) == {"calls": 1}
    assert await store.sums("team", "apac", ["m29400000"]) == {}


async def test_a_local_days_changes_count_in_its_week_month_quarter_year_and_all_time(
    store: ProjectionStore,
) -> None:
    """The rollups derive the longer tiers from each local day's totals: a day of another
    week, month, quarter and year counts in its own, and all time holds both."""
    sunday = ("team", "emea", "D2026-11-22")  # ISO week 47
    new_year = ("team", "emea", "D2027-01-01")
    first, second = Writer(store, 0), Writer(store, 1)
    await first(deltas={DAY: {"calls": 3}, sunday: {"calls": 1, "won": 1}})
    await second(deltas={DAY: {"calls": -1}, new_year: {"calls": 5}})
    requests = [
        ("W2026-W48", {"calls": 2}),
        ("W2026-W47", {"calls": 1, "won": 1}),
        ("M2026-11", {"calls": 3, "won": 1}),
        ("Q2026-Q4", {"calls": 3, "won": 1}),
        ("Y2026", {"calls": 3, "won": 1}),
        ("W2026-W53", {"calls": 5}),  # 1 January 2027 is in ISO week 53 of 2026
        ("M2027-01", {"calls": 5}),
        ("Q2027-Q1", {"calls": 5}),
        ("Y2027", {"calls": 5}),
        ("A", {"calls": 8, "won": 1}),
    ]
    found = await store.sums_many([("team", "emea", (bucket,)) for bucket, _ in requests])
    assert dict(zip([b for b, _ in requests], found, strict=True)) == dict(requests)
    await first(deltas={sunday: {"calls": -1, "won": -1}})
    assert await store.sums("team", "emea", ["W2026-W47"]) == {}
    assert await store.sums("team", "emea", ["A"]) == {"calls": 7}


async def test_a_minutes_changes_count_in_its_hour_and_day_and_an_hours_in_its_day(
    store: ProjectionStore,
) -> None:
    """The rollups derive the UTC hour and day from each minute's totals, and the day from
    an hour written directly (an event more than 3 hours old, whose minute is no longer
    kept): a total holds both. Minute 29,400,000 is 2025-11-24T16:00Z: hour 490,000, day
    20,416; its day's last minute is 29,400,479."""
    last = ("team", "emea", "m29400479")  # 23:59Z, hour 490,007
    hour = ("team", "emea", "h490003")  # 19:00Z, written directly
    first, second = Writer(store, 0), Writer(store, 1)
    await first(deltas={MINUTE: {"calls": 3}, last: {"calls": 1, "won": 1}})
    await second(deltas={MINUTE: {"calls": -1}, hour: {"calls": 5}})
    requests = [
        ("h490000", {"calls": 2}),
        ("h490007", {"calls": 1, "won": 1}),
        ("h490003", {"calls": 5}),
        ("d20416", {"calls": 8, "won": 1}),
        ("d20417", {}),
    ]
    found = await store.sums_many([("team", "emea", (bucket,)) for bucket, _ in requests])
    assert dict(zip([b for b, _ in requests], found, strict=True)) == dict(requests)
    await first(deltas={last: {"calls": -1, "won": -1}})
    await second(deltas={hour: {"calls": -5}})
    assert await store.sums("team", "emea", ["h490007", "h490003"]) == {}
    assert await store.sums("team", "emea", ["d20416"]) == {"calls": 2}


async def test_a_field_that_comes_back_to_zero_is_gone(store: ProjectionStore) -> None:
    write = Writer(store)
    await write(deltas={GAUGE: {"open": 3, "untouched": 1}})
    await write(deltas={GAUGE: {"open": -3}})
    assert await store.sums("team", "emea", [GAUGE_BUCKET]) == {"untouched": 1}
    await write(deltas={GAUGE: {"untouched": -1}})
    assert await store.sums("team", "emea", [GAUGE_BUCKET]) == {}


async def test_checkpoints_move_with_the_commit_and_a_stale_plan_writes_nothing(
    store: ProjectionStore,
) -> None:
    write = Writer(store)
    await write(deltas={DAY: {"calls": 1}})
    await write(deltas={DAY: {"calls": 1}})
    assert await store.checkpoints(0) == {"events": 1}
    stale = Commit(0, {"events": (0, 5)}, BatchPlan(deltas={DAY: {"calls": 100}}, applied=1))
    fresh = Commit(1, {"events": (None, 0)}, BatchPlan(deltas={DAY: {"calls": 1}}, applied=1))
    landed = await store.commit([stale, fresh])
    assert landed.moved == [0] and not landed.out_of_range
    assert await store.checkpoints_of([0, 1]) == [{"events": 1}, {"events": 0}]
    assert await store.sums("team", "emea", ["D2026-11-23"]) == {"calls": 3}  # 2 + the fresh one


async def test_a_sum_that_would_leave_the_exact_range_writes_nothing(
    store: ProjectionStore,
) -> None:
    write = Writer(store)
    await write(deltas={DAY: {"revenue": LIMIT - 2}}, changed_fields={("opp", "o-1"): {"a": "1"}})
    assert await store.sums("team", "emea", ["D2026-11-23"]) == {"revenue": LIMIT - 2}
    before = await store.progress([0])
    landed = await write(
        deltas={ALL: {"revenue": 5}, DAY: {"revenue": 2, "won": 1}, ORG_DAY: {"revenue": 2}},
        changed_fields={("opp", "o-2"): {"a": "2"}},
    )
    assert 0 in landed.out_of_range and "revenue" in landed.out_of_range[0]
    landed = await write(deltas={DAY: {"won": 1, "revenue": 2}})  # the other order of fields
    assert 0 in landed.out_of_range
    assert await store.sums("team", "emea", ["A"]) == {"revenue": LIMIT - 2}  # the day's
    assert await store.sums("org", "", ["D2026-11-23"]) == {}
    assert await store.load({0: [("opp", "o-2")]}) == {0: {}}
    assert await store.progress([0]) == before
    landed = await write(deltas={DAY: {"revenue": -(2**70)}})  # past 64 bits: no error either
    assert 0 in landed.out_of_range
    assert await store.sums("team", "emea", ["D2026-11-23"]) == {"revenue": LIMIT - 2}
    assert not (await write(deltas={DAY: {"revenue": 1}})).out_of_range  # exactly 2^53 - 1


async def test_a_sum_over_partitions_past_2_to_the_53_is_read_exactly(
    store: ProjectionStore,
) -> None:
    """Each partition's sums stay inside the exact range; their total over partitions may not."""
    for partition in (0, 1, 2):
        await Writer(store, partition)(deltas={DAY: {"revenue": LIMIT - 1 - partition}})
    await Writer(store, 3)(deltas={ALL: {"revenue": 7, "won": 1}})
    total = 3 * (LIMIT - 1) - 3
    assert await store.sums("team", "emea", ["D2026-11-23"]) == {"revenue": total}
    assert await store.sums("team", "emea", ["D2026-11-23", "m29400000"]) == {"revenue": total}
    # All time: the day's total (derived) and the 7 written directly.
    assert await store.sums("team", "emea", ["A"]) == {"revenue": total + 7, "won": 1}


async def test_a_longer_tier_written_directly_keeps_its_own_range(store: ProjectionStore) -> None:
    """A partition's all-time bucket holds what was written to it directly (events whose day
    is no longer kept); what the days derive is the rollups' and does not count in its range."""
    write = Writer(store)
    await write(deltas={DAY: {"revenue": LIMIT - 2}})
    assert not (await write(deltas={ALL: {"revenue": 5}})).out_of_range
    assert await store.sums("team", "emea", ["A"]) == {"revenue": LIMIT + 3}
    assert (await write(deltas={ALL: {"revenue": LIMIT - 5}})).out_of_range  # its own range
    assert await store.sums("team", "emea", ["A"]) == {"revenue": LIMIT + 3}


async def test_a_derived_total_past_64_bits_is_kept_exactly(store: ProjectionStore) -> None:
    """Every partition's local day stays below 2^53, but the all-time total of 1,100 days of
    maximal amounts passes 2^63: it is kept and read exactly."""
    days = [f"D{date(2024, 1, 1) + timedelta(days=n)}" for n in range(1_100)]
    first = Writer(store, 0)
    await first(deltas={("team", "emea", d): {"revenue": LIMIT - 1} for d in days})
    await Writer(store, 1)(deltas={("team", "emea", days[0]): {"revenue": -5}})
    assert 1_100 * (LIMIT - 1) > 2**63
    assert await store.sums("team", "emea", ["A"]) == {"revenue": 1_100 * (LIMIT - 1) - 5}
    await first(deltas={("team", "emea", d): {"revenue": 1 - LIMIT} for d in days})
    assert await store.sums("team", "emea", ["A"]) == {"revenue": -5}


async def test_records_are_written_field_by_field_and_loaded_by_partition(
    store: ProjectionStore,
) -> None:
    write = Writer(store, 3)
    odd = "Acme / EMEA: {x} | 100% ünïcødé 🙂"
    await write(changed_fields={("lead", odd): {"c_at": "1", "stage": "new"}})
    await write(changed_fields={("lead", odd): {"stage": "qualified", "t_at": "5"}})
    big = {f"!e{i}": "" for i in range(20_000)}
    await write(changed_fields={("rep", "r1"): big})
    found = await store.load({3: [("lead", odd), ("lead", "nobody"), ("rep", "r1")], 0: []})
    assert found[0] == {}
    assert found[3][("lead", odd)] == {"c_at": "1", "stage": "qualified", "t_at": "5"}
    assert ("lead", "nobody") not in found[3]
    assert found[3][("rep", "r1")] == big


async def test_the_directory_lists_rep_and_team_records_and_versions_their_changes(
    store: ProjectionStore,
) -> None:
    write = Writer(store, 1)
    assert await store.directory_versions([0, 1]) == [0, 0]
    await write(
        changed_fields={
            ("team", "emea"): {"timezone": "Europe/Berlin"},
            ("rep", "r1"): {"!u1": "rep|5|emea|1", "name": "Ana"},
            ("lead", "l1"): {"c_at": "1"},
        }
    )
    await write(changed_fields={("lead", "l1"): {"stage": "new"}})
    assert await store.directory_versions([0, 1]) == [0, 1]
    records = await store.directory_records([0, 1])
    assert records == {
        ("team", "emea"): {"timezone": "Europe/Berlin"},
        ("rep", "r1"): {"!u1": "rep|5|emea|1", "name": "Ana"},
    }
    view = await store.directory([1], Rules())
    assert (view.team_of("r1", 10), view.zone_of("emea"), view.name_of("r1")) == (
        "emea",
        "Europe/Berlin",
        "Ana",
    )


async def test_scopes_are_every_scope_with_aggregates_beside_the_org(
    store: ProjectionStore,
) -> None:
    await Writer(store, 0)(deltas={DAY: {"calls": 1}, ORG_DAY: {"calls": 1}})
    await Writer(store, 2)(deltas={("queue", "q:1|x", "A"): {"offered": 1}})
    assert await store.scopes() == {("team", "emea"), ("queue", "q:1|x")}
    assert await store.has_scope("queue", "q:1|x")
    assert await store.has_scope("team", "emea")
    assert not await store.has_scope("queue", "q:1")
    assert not await store.has_scope("org", "")


async def test_a_cached_directory_is_read_again_exactly_when_a_version_moves(
    store: ProjectionStore,
) -> None:
    cache = DirectoryCache(Rules())
    write = Writer(store, 1)
    await write(changed_fields={("rep", "r1"): {"!u1": "rep|5|emea|1", "name": "Ana"}})
    first = await cache.view(store, [0, 1])
    assert first.team_of("r1", 10) == "emea"
    await write(changed_fields={("lead", "l1"): {"c_at": "1"}})  # not the directory
    assert await cache.view(store, [0, 1]) is first
    await Writer(store, 0)(changed_fields={("rep", "r2"): {"!u2": "rep|5|amer|1"}})
    second = await cache.view(store, [0, 1])
    assert second is not first
    assert (second.team_of("r1", 10), second.team_of("r2", 10)) == ("emea", "amer")
    assert await cache.view(store, [1]) is not second  # other partitions: read again


async def test_the_oldest_untouched_lead_of_each_scope_over_partitions(
    store: ProjectionStore,
) -> None:
    team, rep = ("team", "emea"), ("rep", "r1")
    first, second = Writer(store, 0), Writer(store, 1)
    await first(untouched_add={team: {"l1": 500, "l2": 300}, rep: {"l1": 500}})
    await second(untouched_add={team: {"l3": 400}})
    assert await store.oldest_untouched([team, rep, ("team", "apac")]) == [300, 500, None]
    await first(untouched_remove={team: {"l2"}})
    assert await store.oldest_untouched([team]) == [400]
    await second(untouched_remove={team: {"l3"}})
    assert await store.oldest_untouched([team, rep]) == [500, 500]
    assert await store.oldest_untouched([]) == []


async def test_dirty_marks_count_commits_and_clear_only_if_unchanged(
    store: ProjectionStore,
) -> None:
    write = Writer(store)
    await write(deltas={DAY: {"calls": 1}, MINUTE: {"calls": 1}, GAUGE: {"open": 1}})
    await write(deltas={DAY: {"calls": 1}})
    groups = await store.dirty()
    # Minute buckets are not announced; calendar (those derived from the day too), all-time
    # and gauge buckets are.
    assert merged(groups) == {
        ("team", "emea", "D2026-11-23"): 2,
        **{("team", "emea", longer): 2 for longer in DAY_DERIVED},
        ("team", "emea", GAUGE_BUCKET): 1,
    }
    await write(deltas={DAY: {"calls": 1}})  # changed again after it was read
    for number, marks in enumerate(groups):
        await store.clear_dirty(number, marks)
    assert merged(await store.dirty()) == {
        ("team", "emea", b): 3 for b in ("D2026-11-23", *DAY_DERIVED)
    }
    odd = ("rep", "a\tb:c", "A")  # an id may hold the separator
    await write(deltas={odd: {"calls": 1}})
    assert odd in merged(await store.dirty())


def merged(groups: list[dict[DirtyMark, int]]) -> dict[DirtyMark, int]:
    return {mark: count for group in groups for mark, count in group.items()}


async def test_progress_keeps_the_newest_event_the_count_and_the_commit_time(
    store: ProjectionStore,
) -> None:
    write = Writer(store)
    await write(deltas={DAY: {"calls": 1}}, newest_ms=2_000)
    await write(deltas={DAY: {"calls": 1}}, newest_ms=1_000)  # older: newest stays
    (found,) = await store.progress([0])
    assert (found["events"], found[NEWEST], found[APPLIED]) == ("1", "2000", "2")
    assert int(found[COMMITTED]) > 1_700_000_000_000


async def test_a_refill_mark_stays_until_a_commit_reaches_its_end(store: ProjectionStore) -> None:
    write = Writer(store)
    await store.mark_refilling(0, "events", 3)
    await write(deltas={DAY: {"calls": 1}})  # offset 0
    assert (await store.progress([0]))[0][REFILL + "events"] == "3"
    await write(deltas={DAY: {"calls": 1}})  # offset 1
    await write(deltas={DAY: {"calls": 1}})  # offset 2 = end - 1
    assert REFILL + "events" not in (await store.progress([0]))[0]


async def test_a_frozen_partition_refuses_commits_and_marks_the_others_land(
    store: ProjectionStore,
) -> None:
    await Writer(store, 0)(deltas={DAY: {"calls": 1}})
    await store.freeze([0])
    commits = [
        Commit(0, {"events": (0, 1)}, BatchPlan(deltas={DAY: {"calls": 1}}, applied=1)),
        Commit(1, {"events": (None, 0)}, BatchPlan(deltas={DAY: {"calls": 5}}, applied=1)),
    ]
    with pytest.raises(NamespaceFrozen):
        await store.commit(commits)
    with pytest.raises(NamespaceFrozen):
        await store.mark_refilling(0, "events", 9)
    assert await store.sums("team", "emea", ["D2026-11-23"]) == {"calls": 6}
    assert await store.checkpoints_of([0, 1]) == [{"events": 0}, {"events": 0}]


async def test_stream_time_only_moves_forward_and_too_late_events_add_up(
    store: ProjectionStore,
) -> None:
    """The lateness rule's state (projections/lateness.py) moves with the checkpoint."""
    moves = [(None, 4), (4, 9), (9, 12), (12, 13)]
    for (start, end), stream, late in zip(moves, [500, 900, 700, 0], [2, 0, 3, 1], strict=True):
        landed = await store.commit(
            [Commit(0, {"events": (start, end)}, BatchPlan(), stream_ms=stream, too_late=late)]
        )
        assert not landed.moved
    (progress,) = await store.progress([0])
    assert progress[STREAM] == "900"  # 700 and 0 (no event in the batch) leave it
    assert progress[TOO_LATE] == "6"
    assert progress["events"] == "13"


async def test_records_over_by_the_horizon_go_with_the_commit_that_passes_it(
    store: ProjectionStore,
) -> None:
    """A record of an EXPIRING kind goes once its latest event is more than the horizon
    behind the partition's stream time, and a lead is compacted; a record of another kind,
    and one still inside, stay. A record the plan found over loses its old fields before
    the new ones land."""
    hour = 3_600_000
    day0 = 1_795_000_000_000

    def commit(offset: int | None, stream_ms: int, plan: BatchPlan) -> Commit:
        plan.applied = 1
        new = -1 if offset is None else offset
        return Commit(0, {"events": (offset, new + 1)}, plan, stream_ms, 0, 10 * hour)

    old, young = ("call", "c-old"), ("call", "c-young")
    lead, sent = ("lead", "l-1"), ("msg", "m:1|x")  # an id with the key's separators
    quiet = ("lead", "l-2")  # compacted, not deleted
    kept = {"c_at": str(day0), "stage": "won", "t_at": str(day0 + 1), LAST: str(day0)}
    kept |= {"!ev-1": "", "!ev-2": "resp|1|r|positive|t|UTC"}
    # Its owner is its creator (so it goes), its owner's team another (so it stays).
    kept |= {"c_rep": "r", "c_team": "t|UTC", "o_team": "t2|UTC"}
    deal = ("opp", "o-1")  # closed, then reopened as a new record that does not end
    first = BatchPlan(
        changed_fields={
            old: {"s_at": str(day0), LAST: str(day0)},
            young: {"s_at": str(day0 + 5 * hour), LAST: str(day0 + 5 * hour)},
            sent: {"s_at": str(day0 + hour), LAST: str(day0 + hour)},
            lead: {"c_at": str(day0)},
            quiet: {**kept, "owner": "r", "#f-1": "", "c@": "x"},
            deal: {"x_at": str(day0), LAST: str(day0)},
        },
        expiring={old: day0, young: day0 + 5 * hour, sent: day0 + hour, quiet: day0, deal: day0},
    )
    landed = await store.commit([commit(None, day0 + 5 * hour, first)])
    assert landed.expired == 0
    assert len((await store.load({0: [old, young, sent, lead, quiet, deal]}))[0]) == 6
    reopened = BatchPlan(
        changed_fields={deal: {"amt": "7", LAST: str(day0 + 3 * hour)}}, replaced={deal}
    )
    await store.commit([commit(0, day0 + 5 * hour, reopened)])

    # Stream time 12 h after day0: day0 and day0 + 1 h are more than 10 h behind.
    later = BatchPlan(
        changed_fields={("call", "c-new"): {LAST: str(day0 + 12 * hour)}},
        expiring={("call", "c-new"): day0 + 12 * hour},
    )
    landed = await store.commit([commit(1, day0 + 12 * hour, later)])
    assert landed.expired == 2
    left = (await store.load({0: [old, young, sent, lead, quiet, deal, ("call", "c-new")]}))[0]
    assert sorted(left) == [("call", "c-new"), young, lead, quiet, deal]
    assert left[quiet] == kept  # fact markers, ordering fields and owner gone, the rest as it was
    assert left[deal] == {"amt": "7", LAST: str(day0 + 3 * hour)}  # open: it does not end

    # The young call's life is over as the plan sees it: its old fields do not survive.
    anew = BatchPlan(
        changed_fields={young: {"e_at": str(day0 + 20 * hour), LAST: str(day0 + 20 * hour)}},
        expiring={young: day0 + 20 * hour},
        replaced={young},
    )
    await store.commit([commit(2, day0 + 12 * hour, anew)])
    (found,) = (await store.load({0: [young]}))[0].values()
    assert found == {"e_at": str(day0 + 20 * hour), LAST: str(day0 + 20 * hour)}
