"""The commit script on the real Redis: bucket sums, fields dropped at 0, the TTL of a bucket
set once, dirty marks that move with every commit, sums exact up to 2**53 and a commit that
would leave that range writing nothing, records of tens of thousands of fields, any id."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from config.settings import Settings
from projections.engine import GAUGE_BUCKET, AggregateKey, BatchPlan
from projections.store import RedisStore
from projections.stores import Commit, DirtyMark, Landed
from projections.windows import SOURCE_MARGIN_SECONDS, TIER_TTL_SECONDS

pytestmark = pytest.mark.integration

MINUTE: AggregateKey = ("team", "emea", "m29400000")
DAY: AggregateKey = ("team", "emea", "D2026-11-23")
ALL: AggregateKey = ("team", "emea", "A")
GAUGE: AggregateKey = ("team", "emea", GAUGE_BUCKET)
# The totals the rollups derive from DAY (windows.derived_buckets); all time is ALL's.
DAY_DERIVED = [("team", "emea", b) for b in ("W2026-W48", "M2026-11", "Q2026-Q4", "Y2026")]


@pytest.fixture
async def store(stack_env: dict[str, str]) -> AsyncIterator[RedisStore]:
    client = aioredis.Redis.from_url(Settings.from_env(stack_env).redis)
    namespace = f"storetest{uuid.uuid4().hex[:8]}"
    yield RedisStore(client, namespace)
    async for key in client.scan_iter(match=f"{{{namespace}:*", count=1000):
        await client.delete(key)
    await client.aclose()


class Commits:
    """Successive commits of partition 0, each continuing the checkpoint of the last."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.offset: int | None = None

    async def __call__(self, deltas: dict[AggregateKey, dict[str, int]], **plan: object) -> Landed:
        new = (self.offset if self.offset is not None else -1) + 1
        batch = BatchPlan(deltas=deltas, applied=1, **plan)  # type: ignore[arg-type]
        landed = await self.store.commit([Commit(0, {"events": (self.offset, new)}, batch)])
        assert not landed.moved
        if not landed.out_of_range:
            self.offset = new
        return landed


def merged(groups: list[dict[DirtyMark, int]]) -> dict[DirtyMark, int]:
    return {mark: count for group in groups for mark, count in group.items()}


async def _bucket(store: RedisStore, key: AggregateKey) -> dict[str, int]:
    raw = await store.client.hgetall(store.keys.aggregate(0, key))
    return {k.decode(): int(v) for k, v in raw.items()}


async def test_deltas_add_up_and_a_field_at_zero_is_dropped(store: RedisStore) -> None:
    commit = Commits(store)
    await commit({MINUTE: {"calls": 2, "talk_ms": 90_000}, GAUGE: {"open": 3}})
    await commit({MINUTE: {"calls": 1, "talk_ms": -90_000, "emails": 4}, GAUGE: {"open": -1}})
    assert await _bucket(store, MINUTE) == {"calls": 3, "emails": 4}
    assert await _bucket(store, GAUGE) == {"open": 2}
    await commit({GAUGE: {"open": -2}})
    assert not await store.client.exists(store.keys.aggregate(0, GAUGE))
    await commit({GAUGE: {"open": -5}})  # a gauge may go below 0 within a partition
    assert await _bucket(store, GAUGE) == {"open": -5}


async def test_a_new_bucket_gets_its_tier_ttl_and_later_commits_do_not_extend_it(
    store: RedisStore,
) -> None:
    commit = Commits(store)
    await commit({MINUTE: {"calls": 1}, DAY: {"calls": 1}, ALL: {"calls": 1}, GAUGE: {"open": 1}})
    minute = store.keys.aggregate(0, MINUTE)
    # A minute and a local day, whose totals the rollups derive others from, live longer
    # than their tier's rule: windows.py.
    minute_keeps = TIER_TTL_SECONDS["m"] + SOURCE_MARGIN_SECONDS["m"]
    assert minute_keeps - 5 <= await store.client.ttl(minute) <= minute_keeps
    day_ttl = await store.client.ttl(store.keys.aggregate(0, DAY))
    day_keeps = TIER_TTL_SECONDS["D"] + SOURCE_MARGIN_SECONDS["D"]
    assert day_keeps - 5 <= day_ttl <= day_keeps
    assert await store.client.ttl(store.keys.aggregate(0, ALL)) == -1  # kept
    assert await store.client.ttl(store.keys.aggregate(0, GAUGE)) == -1  # kept
    await store.client.expire(minute, 100)
    await commit({MINUTE: {"calls": 1, "emails": 1}})  # a field it had and one it had not
    assert 90 <= await store.client.ttl(minute) <= 100
    await commit({MINUTE: {"meetings": 1}})  # only fields it had not
    assert 90 <= await store.client.ttl(minute) <= 100
    assert await _bucket(store, MINUTE) == {"calls": 2, "emails": 1, "meetings": 1}


async def test_sums_are_exact_up_to_2_to_the_53(store: RedisStore) -> None:
    commit = Commits(store)
    await commit({ALL: {"revenue_minor": 2**53 - 10}})
    await commit({ALL: {"revenue_minor": 9}})
    assert await _bucket(store, ALL) == {"revenue_minor": 2**53 - 1}
    assert await store.sums("team", "emea", ["A"]) == {"revenue_minor": 2**53 - 1}


async def test_a_dirty_mark_changed_after_it_was_read_is_not_cleared(store: RedisStore) -> None:
    commit = Commits(store)
    await commit({DAY: {"calls": 1}, ALL: {"calls": 1}, MINUTE: {"calls": 1}})
    groups = await store.dirty()
    # Calendar and all-time tiers only: DAY, ALL, and what DAY moves (ALL a second time).
    assert merged(groups) == {DAY: 1, ALL: 2, **dict.fromkeys(DAY_DERIVED, 1)}
    await commit({ALL: {"calls": 1}})
    for number, marks in enumerate(groups):  # read before the second commit
        await store.clear_dirty(number, marks)
    left = await store.dirty()
    assert merged(left) == {ALL: 3}
    for number, marks in enumerate(left):
        await store.clear_dirty(number, marks)
    assert merged(await store.dirty()) == {}


async def test_many_dirty_marks_in_one_commit(store: RedisStore) -> None:
    """Thousands of buckets changed by one commit (a large batch of a backlog) all get a mark."""
    commit = Commits(store)
    deltas = {("rep", f"r{n}", "A"): {"calls": 1} for n in range(5_000)}
    await commit(deltas)
    assert merged(await store.dirty()) == dict.fromkeys(deltas, 1)


async def test_a_commit_that_would_leave_the_exact_range_writes_nothing(store: RedisStore) -> None:
    """Redis never rolls a script back: the increments made before the bad sum are undone,
    and nothing else of the commit (records, marks, the checkpoint) is written."""
    commit = Commits(store)
    await commit({ALL: {"revenue_minor": 2**53 - 10, "won": 1}, DAY: {"won": 1}})
    before = await store.client.hgetall(store.keys.checkpoint(0))
    landed = await commit(
        {DAY: {"won": 1, "lost": 3}, ALL: {"won": 1, "revenue_minor": 10}},
        changed_fields={("opp", "o-1"): {"x_at": "1"}},
    )
    assert list(landed.out_of_range) == [0]
    assert "revenue_minor" in landed.out_of_range[0]
    assert await _bucket(store, ALL) == {"revenue_minor": 2**53 - 10, "won": 1}
    assert await _bucket(store, DAY) == {"won": 1}  # "lost" was added and taken back
    assert not await store.client.exists(store.keys.entity(0, ("opp", "o-1")))
    assert await store.client.hgetall(store.keys.checkpoint(0)) == before
    assert merged(await store.dirty()) == {DAY: 1, ALL: 2, **dict.fromkeys(DAY_DERIVED, 1)}
    # A negative sum out of range, and a delta out of range on its own, too.
    assert (await commit({DAY: {"won": -(2**53)}})).out_of_range
    assert (await commit({MINUTE: {"talk_ms": 2**60}})).out_of_range
    assert await _bucket(store, DAY) == {"won": 1}
    assert not await store.client.exists(store.keys.aggregate(0, MINUTE))
    landed = await commit({ALL: {"revenue_minor": 9}})  # the next good commit lands
    assert not landed.out_of_range
    assert await _bucket(store, ALL) == {"revenue_minor": 2**53 - 1, "won": 1}


async def test_a_record_with_more_fields_than_lua_can_unpack_at_once(store: RedisStore) -> None:
    """One lead with 30,000 responses in one batch: 60,001 HSET arguments."""
    commit = Commits(store)
    fields = {f"!event-{n}": f"resp|{n}|rep|positive|emea|UTC" for n in range(30_000)}
    await commit({ALL: {"responses": 30_000}}, changed_fields={("lead", "l-1"): fields})
    stored = await store.load({0: [("lead", "l-1")]})
    assert stored[0][("lead", "l-1")] == fields
    assert (await store.checkpoints(0)) == {"events": 0}


HOSTILE_IDS = ["a|b", "a:b", "a/b", "{a}", "a\tb", "100%", "%7C", " ", "ü\u2028😀", "x" * 128]


async def test_any_id_is_a_key_a_mark_and_a_record_of_its_own(store: RedisStore) -> None:
    commit = Commits(store)
    deltas = {("rep", ident, "A"): {"calls": n + 1} for n, ident in enumerate(HOSTILE_IDS)}
    records = {("lead", ident): {"owner": ident} for ident in HOSTILE_IDS}
    await commit(deltas, changed_fields=records)
    assert merged(await store.dirty()) == dict.fromkeys(deltas, 1)
    assert await store.scopes() == {("rep", ident) for ident in HOSTILE_IDS}
    stored = await store.load({0: list(records)})
    assert stored[0] == records
    for n, ident in enumerate(HOSTILE_IDS):
        assert await store.sums("rep", ident, ["A"]) == {"calls": n + 1}


async def test_a_change_past_64_bits_is_out_of_range_not_an_error(store: RedisStore) -> None:
    """A batch of 2,049 deals of the largest amount: a delta JSON cannot carry."""
    commit = Commits(store)
    landed = await commit({ALL: {"revenue_minor": 2_049 * (2**53 - 1)}})
    assert list(landed.out_of_range) == [0]
    assert not await store.client.exists(store.keys.aggregate(0, ALL))
    assert not (await commit({ALL: {"revenue_minor": 5}})).out_of_range


async def test_an_undone_commit_leaves_a_bucket_with_its_ttl(store: RedisStore) -> None:
    """A field that reached 0 in a commit that was then undone: its bucket keeps its TTL."""
    commit = Commits(store)
    await commit({MINUTE: {"calls": 1}, ALL: {"revenue_minor": 2**53 - 2}})
    minute = store.keys.aggregate(0, MINUTE)
    ttl = await store.client.ttl(minute)
    assert ttl > 0
    landed = await commit({MINUTE: {"calls": -1}, ALL: {"revenue_minor": 10}})
    assert landed.out_of_range
    assert await _bucket(store, MINUTE) == {"calls": 1}
    assert 0 < await store.client.ttl(minute) <= ttl
