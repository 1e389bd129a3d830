"""Rollups on the real Redis and on a Redis Cluster (projections/store.py, docs/projections.md
"Rollups"): reads come from per-scope totals that every commit folds in; a fold sent again or
late changes nothing; what a failed fold, a shard that lost its last writes or a partition that
lost its last writes leaves wrong is found and folded again."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError

from config.connections import redis_client
from config.settings import Settings
from projections.engine import AggregateKey, BatchPlan
from projections.store import RedisClient, RedisStore, Values, shard_of
from projections.stores import VERSION, Commit
from tests.support import Writer

pytestmark = pytest.mark.integration

DAY: AggregateKey = ("team", "emea", "D2026-11-23")
# A bucket written directly, not derived from DAY: the year of an event whose local day is no
# longer kept (windows.live_buckets); kept for ever, as all time is.
OLD: AggregateKey = ("team", "emea", "Y2016")
# What the rollups derive from DAY (windows.derived_buckets).
DAY_DERIVED = ("W2026-W48", "M2026-11", "Q2026-Q4", "Y2026", "A")


@pytest.fixture
async def store(any_stack_env: dict[str, str]) -> AsyncIterator[RedisStore]:
    client = redis_client(Settings.from_env(any_stack_env))
    namespace = f"rolluptest{uuid.uuid4().hex[:8]}"
    yield RedisStore(client, namespace)
    async for key in client.scan_iter(match=f"{{{namespace}:*", count=1000):
        await client.delete(key)
    await client.aclose()


class FoldFails(RedisStore):
    """A store whose folds fail (the shard's master away, or a worker that stops between
    commit and fold)."""

    async def fold(self, folds: object) -> None:
        raise ConnectionError("the fold never reached Redis")


async def version(store: RedisStore, partition: int) -> int:
    (found,) = await store.progress([partition])
    return int(found[VERSION])


async def snapshot(client: RedisClient, pattern: str) -> dict[bytes, bytes]:
    return {key: await client.dump(key) async for key in client.scan_iter(match=pattern)}


async def restore(client: RedisClient, pattern: str, saved: dict[bytes, bytes]) -> None:
    """The keys of ``pattern`` as they were when ``saved`` (as a master that lost its last
    writes holds them)."""
    async for key in client.scan_iter(match=pattern):
        await client.delete(key)
    for key, dumped in saved.items():
        await client.restore(key, 0, dumped, replace=True)


async def derived_follow_the_day(store: RedisStore) -> None:
    """The tests write no other local day of DAY's scope: each total derived from DAY equals
    DAY's total, whatever folds were lost, sent again or redone on the way."""
    day, *derived = await store.sums_many([(*DAY[:2], (b,)) for b in (DAY[2], *DAY_DERIVED)])
    assert derived == [day] * len(DAY_DERIVED)


async def test_reads_sum_every_partition_from_the_rollups(store: RedisStore) -> None:
    for partition in range(6):
        await Writer(store, partition)(deltas={DAY: {"calls": partition + 1}, OLD: {"calls": 1}})
    assert await store.sums(*DAY[:2], [DAY[2], OLD[2]]) == {"calls": 21 + 6}
    assert await store.unfolded(range(6)) == 0
    # The partitions hold their shares; a read touches the scope's shard only.
    bucket = await store.client.hgetall(store.keys.aggregate(5, DAY))
    assert bucket == {b"calls": b"6"}
    await derived_follow_the_day(store)


async def test_totals_past_2_to_the_53_stay_exact(store: RedisStore) -> None:
    """Each partition's share is below 2^53 but their total is not: the fold moves such a total
    in 64-bit increments, and with one HSET again once it is back where Lua's doubles are
    exact; a total that reaches 0 is dropped."""
    big = 2**53 - 1
    writers = [Writer(store, partition) for partition in range(3)]
    for write in writers:
        await write(deltas={OLD: {"revenue": big, "won": 1}})
    assert await store.sums(*OLD[:2], [OLD[2]]) == {"revenue": 3 * big, "won": 3}
    await writers[1](deltas={OLD: {"revenue": -big + 5}})
    assert await store.sums(*OLD[:2], [OLD[2]]) == {"revenue": 2 * big + 5, "won": 3}
    await writers[0](deltas={OLD: {"revenue": -big, "won": -1}})
    await writers[2](deltas={OLD: {"revenue": -big + 7}})
    assert await store.sums(*OLD[:2], [OLD[2]]) == {"revenue": 12, "won": 2}
    await writers[1](deltas={OLD: {"revenue": -5, "won": -1}})
    await writers[2](deltas={OLD: {"revenue": -7, "won": -1}})
    assert await store.sums(*OLD[:2], [OLD[2]]) == {}
    total = store.keys.total((*OLD[:2], OLD[2]))
    assert not await store.client.exists(total)
    assert await store.unfolded(range(3)) == 0


async def test_buckets_and_totals_made_again_get_their_ttl_again(store: RedisStore) -> None:
    """Only keys that may be new get a TTL (a bucket that had fields, a totals key that held a
    field moved, a shares key that held the partition's share already have theirs): a bucket
    and a total that went to 0, and were deleted, get it again when they are written anew."""
    first, second = Writer(store, 0), Writer(store, 1)
    bucket, total = store.keys.aggregate(0, DAY), store.keys.total(DAY)
    shares = store.keys.shares(DAY)
    await first(deltas={DAY: {"calls": 1}})
    await first(deltas={DAY: {"calls": -1}})
    assert not await store.client.exists(bucket) and not await store.client.exists(total)
    await first(deltas={DAY: {"calls": 2}})
    await second(deltas={DAY: {"calls": 3}})  # the shares and totals keys hold fields already
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 5}
    for key in (bucket, total, shares, store.keys.aggregate(1, DAY)):
        assert await store.client.ttl(key) > 0, key
    assert await store.client.pexpiretime(total) == await store.client.pexpiretime(shares)
    # The totals derived from the day (gone at 0 too) have their own: the week's 120 days.
    week, all_time = (store.keys.total((*DAY[:2], b)) for b in ("W2026-W48", "A"))
    assert 119 * 86_400 < await store.client.ttl(week) <= 120 * 86_400
    assert await store.client.ttl(all_time) == -1  # kept


async def test_a_bucket_ahead_of_its_period_lives_until_its_period_start_plus_its_ttl(
    store: RedisStore,
) -> None:
    """An event up to a day ahead is accepted: its minute bucket (tier TTL 3 hours) 20 hours
    ahead must live until its minute's start plus 3 hours (``windows.kept_until``), and an
    hour more (the rollups derive its hour and day from it: ``stored_ttl_seconds``), about
    24 hours, not 3 hours from now; so must its totals and shares. The hour's total derived
    from it lives until the hour's start plus 3 days, and a day more."""
    now_ms = int(time.time() * 1000)
    ahead_minute = (now_ms + 20 * 3_600_000) // 60_000
    minute: AggregateKey = ("team", "emea", f"m{ahead_minute}")
    await Writer(store, 0)(deltas={minute: {"calls": 1}})
    assert await store.sums(*minute[:2], [minute[2]]) == {"calls": 1}
    # The minute starts between 20 h - 60 s and 20 h from now; a little more for the test's run.
    lowest, highest = 24 * 3600 - 60 - 60, 24 * 3600
    keys = store.keys.aggregate(0, minute), store.keys.total(minute), store.keys.shares(minute)
    for key in keys:
        assert lowest <= await store.client.ttl(key) <= highest, key
    hour: AggregateKey = ("team", "emea", f"h{ahead_minute // 60}")
    day: AggregateKey = ("team", "emea", f"d{ahead_minute // 1440}")
    assert await store.sums(*hour[:2], [hour[2]]) == {"calls": 1}
    assert await store.sums(*day[:2], [day[2]]) == {"calls": 1}
    hour_starts_in = (ahead_minute // 60 * 3_600_000 - now_ms) // 1000
    hour_keeps = hour_starts_in + 3 * 86_400 + 86_400
    assert hour_keeps - 60 <= await store.client.ttl(store.keys.total(hour)) <= hour_keeps + 1


async def test_a_fold_sent_again_or_late_changes_nothing(store: RedisStore) -> None:
    write = Writer(store)
    await write(deltas={DAY: {"calls": 1}})
    first = await version(store, 0)
    await write(deltas={DAY: {"calls": 2}})
    now = await version(store, 0)
    assert now > first
    await store.fold([Values(0, first, {DAY: b'{"calls":"1"}'}, {}, first)])  # late
    await store.fold([Values(0, now, {DAY: b'{"calls":"3"}'}, {}, now)])  # again
    await store.fold([Values(0, now, {DAY: b'{"calls":"300"}'}, {}, now)])  # same version
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 3}


async def test_a_commit_whose_fold_failed_is_folded_again(store: RedisStore) -> None:
    write = Writer(store)
    await write(deltas={DAY: {"calls": 1}})
    failing = _continuing(write, FoldFails(store.client, store.namespace))
    await failing(deltas={OLD: {"calls": 5}})  # lands; its fold fails
    assert await store.sums(*OLD[:2], [OLD[2]]) == {}
    assert await store.unfolded([0]) == 1
    assert await store.unfolded([0], grace_ms=60_000) == 0  # its fold may still be on its way
    # The failing store folds again before it commits again, and while it cannot, nothing
    # new lands.
    with pytest.raises(ConnectionError):
        await failing(deltas={DAY: {"calls": 100}})
    assert (await store.checkpoints(0))["events"] == 1
    # Another writer's commit of the same shard folds fine, yet the one before is still
    # missing: the shard's seen version does not pass it.
    write.offset = 1
    await write(deltas={DAY: {"calls": 1}})
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 2}
    assert await store.unfolded([0]) == 1
    assert await store.fold_missing([0]) >= 1
    assert await store.sums(*OLD[:2], [OLD[2]]) == {"calls": 5}
    assert await store.unfolded([0]) == 0
    assert await store.fold_missing([0]) == 0
    await derived_follow_the_day(store)


class SlowFold(RedisStore):
    """A store whose folds take a while (a busy Redis), noting when folds end and when its
    commits are sent."""

    def __init__(self, *args: Any, fails: int = 0) -> None:
        super().__init__(*args)
        self.happened: list[str] = []
        self.fails = fails  # folds that fail (Redis away), after the wait

    async def fold(self, folds: Any) -> None:
        await asyncio.sleep(0.2)
        if self.fails:
            self.fails -= 1
            raise ConnectionError("Redis went away during the fold")
        await super().fold(folds)
        self.happened.append("folded")

    async def _scripts(self, calls: Any) -> Any:
        if calls and calls[0][0] is self._commit:
            self.happened.append("commit sent")
        return await super()._scripts(calls)


async def test_a_fold_left_on_its_way_ends_before_the_next_commit_is_sent(
    store: RedisStore,
) -> None:
    """A live worker's batch returns once its commits landed (``flush_folds(wait=False)``);
    the store's next commit waits for that fold, so folds stay in their commits' order."""
    slow = SlowFold(store.client, store.namespace)
    write = Writer(slow)
    slow.hold_folds()
    await write(deltas={DAY: {"calls": 1}})
    await slow.flush_folds(wait=False)
    assert slow.happened == ["commit sent"]  # returned before the fold ended
    await write(deltas={DAY: {"calls": 2}})
    assert slow.happened == ["commit sent", "folded", "commit sent", "folded"]
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 3}
    assert await store.unfolded([0]) == 0


async def test_a_fold_left_on_its_way_that_fails_is_redone_before_the_next_commit(
    store: RedisStore,
) -> None:
    slow = SlowFold(store.client, store.namespace, fails=1)
    write = Writer(slow)
    slow.hold_folds()
    await write(deltas={DAY: {"calls": 1}})
    await slow.flush_folds(wait=False)
    await write(deltas={DAY: {"calls": 2}})  # folds the first again (fold_missing), then its own
    assert await store.unfolded([0]) == 0
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 3}
    await derived_follow_the_day(store)


async def test_totals_move_by_a_commits_changes_only_over_the_share_of_the_commit_before(
    store: RedisStore,
) -> None:
    """A fold adds its commit's changes to the totals when the partition's share is of the
    commit before that changed the bucket; when that commit's fold was lost, the share is
    older, and the fold moves the totals by new values - share instead."""
    write = Writer(store)
    await write(deltas={DAY: {"calls": 1, "emails": 2}})
    await write(deltas={DAY: {"calls": 2}})  # over the share of the commit before
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 3, "emails": 2}
    failing = _continuing(write, FoldFails(store.client, store.namespace))
    await failing(deltas={DAY: {"calls": 4, "emails": -2}})  # lands; its fold is lost
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 3, "emails": 2}
    later = _continuing(failing, RedisStore(store.client, store.namespace))
    await later(deltas={DAY: {"calls": 8}})  # the share is two commits behind
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 15}
    await later(deltas={DAY: {"meetings": 1}})
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 15, "meetings": 1}
    await derived_follow_the_day(store)


async def test_a_busy_partition_behind_counts_once_the_gap_is_older_than_the_grace(
    store: RedisStore,
) -> None:
    """A partition that commits all the time has a young last commit; a fold missing under
    it still counts once the first fold that found it missing is older than the grace."""
    write = Writer(store)
    await write(deltas={DAY: {"calls": 1}})
    await _continuing(write, FoldFails(store.client, store.namespace))(deltas={DAY: {"calls": 5}})
    write.offset = 1
    counted = []
    started = time.monotonic()
    while time.monotonic() - started < 0.6:  # a commit every few ms, each folded
        await write(deltas={DAY: {"calls": 1}})
        counted.append(await store.unfolded([0], grace_ms=300))
    assert counted[0] == 0  # just found missing: its fold may be on its way
    assert counted[-1] == 1, counted
    assert await store.fold_missing([0]) >= 1
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": len(counted) + 1 + 5}
    assert await store.unfolded([0]) == 0
    await derived_follow_the_day(store)


async def test_a_loss_after_a_failed_fold_does_not_hide_it(store: RedisStore) -> None:
    """A fold fails, the next commit folds, then the partition loses that commit: folding
    again after the loss must not mark the shard as complete past the failed fold."""
    write = Writer(store)
    await write(deltas={DAY: {"calls": 1}})
    await _continuing(write, FoldFails(store.client, store.namespace))(deltas={OLD: {"calls": 5}})
    write.offset = 1
    partition = f"{store.keys.tag(0)}*"
    saved = await snapshot(store.client, partition)
    await write(deltas={DAY: {"calls": 2}})
    await restore(store.client, partition, saved)  # the last commit is lost
    write.offset = 1
    await store.refold_after_loss(0)
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 1}
    assert await store.unfolded([0]) == 1  # the failed fold is still known to be missing
    await store.fold_missing([0])
    assert await store.sums(*DAY[:2], [DAY[2], OLD[2]]) == {"calls": 6}
    assert await store.unfolded([0]) == 0
    await derived_follow_the_day(store)


async def test_a_shard_that_lost_its_last_folds_is_folded_again(store: RedisStore) -> None:
    write = Writer(store)
    await write(deltas={DAY: {"calls": 1}})
    shard = f"{store.keys.shard(shard_of(*DAY[:2]))}*"
    saved = await snapshot(store.client, shard)
    await write(deltas={DAY: {"calls": 2}, OLD: {"calls": 7}})
    await restore(store.client, shard, saved)  # a replica one fold behind was promoted
    assert await store.sums(*DAY[:2], [DAY[2], OLD[2]]) == {"calls": 1}
    assert await store.unfolded([0]) == 1
    await store.fold_missing([0])
    assert await store.sums(*DAY[:2], [DAY[2], OLD[2]]) == {"calls": 10}
    assert await store.unfolded([0]) == 0
    await derived_follow_the_day(store)


async def test_a_partition_that_lost_its_last_writes_takes_them_out_of_the_rollups(
    store: RedisStore,
) -> None:
    """The lost commit moved a bucket that the commits applied again after the loss do not
    touch (their batch nets it to zero): only the rollups' index of recent folds finds it."""
    write = Writer(store)
    await write(deltas={DAY: {"calls": 1}})
    partition = f"{store.keys.tag(0)}*"
    saved = await snapshot(store.client, partition)
    await write(deltas={OLD: {"calls": 4}})
    await restore(store.client, partition, saved)  # the partition's master lost that commit
    write.offset = 0
    assert await store.sums(*OLD[:2], [OLD[2]]) == {"calls": 4}  # what the loss left wrong
    assert await store.refold_after_loss(0) == 1
    assert await store.sums(*OLD[:2], [OLD[2]]) == {}
    await write(deltas={DAY: {"calls": 1}})  # the log applied again, batched otherwise
    assert await store.sums(*DAY[:2], [DAY[2], OLD[2]]) == {"calls": 2}
    assert await store.unfolded([0]) == 0
    await derived_follow_the_day(store)


def _continuing(write: Writer, other: RedisStore) -> Writer:
    """A writer on ``other`` that continues ``write``'s checkpoint."""
    follower = Writer(other, write.partition)
    follower.offset = write.offset
    return follower


async def together(writers: list[Writer], deltas: list[dict[AggregateKey, dict[str, int]]]) -> None:
    """One commit of several partitions at once (as a projector's landing sends them): their
    values fold in one call, a mark's partitions together."""
    store = writers[0].store
    commits = [
        Commit(
            w.partition,
            {"events": (w.offset, (w.offset if w.offset is not None else -1) + 1)},
            BatchPlan(applied=1, deltas=d),
        )
        for w, d in zip(writers, deltas, strict=True)
    ]
    landed = await store.commit(commits)
    assert not landed.moved and not landed.out_of_range
    for w in writers:
        w.offset = (w.offset if w.offset is not None else -1) + 1


async def test_partitions_folded_together_move_their_totals_exactly(store: RedisStore) -> None:
    """A mark's partitions fold together: their moves are summed while Lua's doubles hold
    every step exactly, else made one by one in 64-bit increments; a total they bring to 0
    is dropped; and after a failed fold their values fold together again by new - stored
    share."""
    big = 2**53 - 1
    writers = [Writer(store, partition) for partition in range(3)]
    # Units: each partition's value is exact, their sum (3) too, but a double's partial sum
    # (big + 2) is not: they move one by one.
    units = (big, 2, -(big - 1))
    first = [
        {OLD: {"revenue": big, "won": 1}, DAY: {"calls": n, "units": u}}
        for n, u in zip((1, 2, 3), units, strict=True)
    ]
    await together(writers, first)
    assert await store.sums(*OLD[:2], [OLD[2]]) == {"revenue": 3 * big, "won": 3}
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 6, "units": 3}
    await together(
        writers,
        [
            {OLD: {"revenue": -big, "won": -1}, DAY: {"calls": -1}},
            {OLD: {"revenue": -big + 5}, DAY: {"calls": 1}},
            {OLD: {"revenue": -big + 7, "won": -1}},
        ],
    )
    assert await store.sums(*OLD[:2], [OLD[2]]) == {"revenue": 12, "won": 1}
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 6, "units": 3}
    await together(writers[1:], [{OLD: {"revenue": -5, "won": -1}}, {OLD: {"revenue": -7}}])
    assert await store.sums(*OLD[:2], [OLD[2]]) == {}
    assert not await store.client.exists(store.keys.total(OLD))
    # Commits whose folds fail, then folded again (by the values, not the changes) together.
    failing = FoldFails(store.client, store.namespace)
    stuck = [Writer(failing, w.partition) for w in writers]
    for w, s in zip(writers, stuck, strict=True):
        s.offset = w.offset
    await together(stuck, [{DAY: {"calls": 10}}, {DAY: {"calls": -3}, OLD: {"won": 2}}, {}])
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 6, "units": 3}
    assert await store.fold_missing(range(3)) >= 3
    assert await store.sums(*DAY[:2], [DAY[2]]) == {"calls": 13, "units": 3}
    assert await store.sums(*OLD[:2], [OLD[2]]) == {"won": 2}
    assert await store.unfolded(range(3)) == 0
    await derived_follow_the_day(store)
