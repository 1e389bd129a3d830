"""Apply batches of events and lead facts to the Redis projections, partition by partition.

Per partition: skip offsets at or below the stored checkpoint of their topic
(redelivery), load the records the batch touches (all partitions in one round
trip), plan the batch (projections.engine), publish the lead facts it implies
(and wait for the broker), then commit records, deltas and the new checkpoints
in one atomic call. Planning, publishing and committing go in chunks of
partitions, so that one chunk lands while the next is planned (``_commit``).
If another writer moved a checkpoint meanwhile (a rebalance), re-read and
plan again. Publishing facts before the commit means a crash in between
only republishes facts with the same ids, which the leads ignore.

The stored checkpoints, not the consumer's committed offsets, say where each
partition continues: when the first new record of a topic is past the offset
after its checkpoint (offset 0 when there is none), the records in between are
read from the log (``fill``) and applied first. That is how the projections
rebuild themselves when Redis lost its last writes or was emptied, without
moving the consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from projections.contributions import Rules
from projections.engine import DirectoryView, EntityKey, key_of, plan_batch
from projections.events import Event
from projections.facts import LeadFact
from projections.namespaces import current_namespace, pointer
from projections.store import CheckpointMoved, Commit, NamespaceFrozen, Store
from projections.validation import Limits, Rejection, parse_event
from streams import metrics

log = logging.getLogger(__name__)

PublishFacts = Callable[[Sequence[LeadFact]], Awaitable[None]]
# The records of one topic partition from ``start`` up to ``end`` (exclusive), in chunks.
Fill = Callable[[str, int, int, int], AsyncIterator[list["Positioned"]]]
# Read every team and rep upsert of the log into a directory; returns how many.
LearnDirectory = Callable[[DirectoryView], Awaitable[int]]


async def no_gaps(
    topic: str, partition: int, start: int, end: int
) -> AsyncIterator[list[Positioned]]:
    """For readers that deliver every offset (the rebuild, tests): a gap is a bug."""
    raise RuntimeError(f"{topic}[{partition}]: offsets {start}..{end - 1} were never delivered")
    yield []  # pragma: no cover - makes this an async generator


@dataclass(frozen=True, slots=True)
class Positioned:
    topic: str
    partition: int
    offset: int
    item: Event | LeadFact


def read_record(
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    *,
    facts_topic: str,
    limits: Limits,
    now_ms: int,
) -> Positioned | None:
    """A record of the events or lead-facts topic as the projector takes it; None (logged)
    for an invalid event, which means a writer bypassed ingest, the topic's only writer."""
    if topic == facts_topic:
        return Positioned(topic, partition, offset, LeadFact.decode(value or b""))
    parsed = parse_event(value or b"", now_ms=now_ms, limits=limits)
    if isinstance(parsed, Rejection):
        log.error("skipping invalid record %s[%d]@%d: %s", topic, partition, offset, parsed.detail)
        return None
    return Positioned(topic, partition, offset, parsed)


@dataclass(frozen=True, slots=True)
class Gap:
    """Offsets ``start`` .. ``end - 1`` of a topic partition were missing from the projections
    when the record at ``end`` arrived: ``stored`` is False when Redis held nothing of the
    partition (it was emptied), True when its checkpoint was behind (it lost its last writes)."""

    topic: str
    partition: int
    start: int
    end: int
    stored: bool


@dataclass
class Outcome:
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    filled: int = 0  # records read from the log to fill gaps
    facts_published: int = 0
    facts_applied: int = 0
    facts_duplicate: int = 0
    gaps: list[Gap] = field(default_factory=list)


# A batch's partitions are planned and landed in up to this many chunks, overlapping the
# planning of one chunk with the facts and commits of the one before (see _commit).
LANDING_CHUNKS = 6
# Event-loop turns between two chunks: a landing needs a few (the facts' acks read, its
# waiter woken, its commit written) before Redis can work on it during the next planning.
YIELDS = 4


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Projector:
    def __init__(
        self,
        store: Store,
        directory: DirectoryView,
        rules: Rules,
        publish_facts: PublishFacts,
        clock: Callable[[], int] = wall_clock_ms,
        fill: Fill = no_gaps,
        on_lost: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.rules = rules
        self.publish_facts = publish_facts
        self.clock = clock  # "now" in epoch ms: which minute/hour/day buckets are still live
        self.fill = fill
        self.on_lost = on_lost  # before refilling a partition Redis holds nothing of
        self._checkpoints: dict[int, dict[str, int]] = {}

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the cached checkpoints of partitions another worker may write next."""
        for partition in partitions:
            self._checkpoints.pop(partition, None)

    async def apply(self, batch: Iterable[Positioned], outcome: Outcome | None = None) -> Outcome:
        """Apply a batch; counts add up in ``outcome`` (a new one by default)."""
        pending: dict[int, list[Positioned]] = defaultdict(list)
        for item in batch:
            pending[item.partition].append(item)
        outcome = outcome or Outcome()
        for attempt in range(3):
            unknown = [p for p in pending if p not in self._checkpoints]
            if unknown:
                found = await self.store.checkpoints_of(unknown)
                self._checkpoints.update(zip(unknown, found, strict=True))
            fresh, moved = {}, []
            for partition, items in pending.items():
                try:
                    fresh[partition] = await self._fresh(partition, items, outcome)
                except CheckpointMoved as error:
                    log.warning("%s", error)
                    moved.append(partition)
            if any(fresh.values()):
                moved += await self._commit({p: i for p, i in fresh.items() if i}, outcome)
            for partition, items in fresh.items():
                if partition not in moved:  # else counted by the attempt that lands
                    outcome.redelivered += len(pending[partition]) - len(items)
            if not moved:
                return outcome
            log.warning("re-reading partitions %s (attempt %d)", moved, attempt + 1)
            for partition in moved:
                self._checkpoints.pop(partition, None)
            pending = {partition: pending[partition] for partition in moved}
        raise CheckpointMoved(f"partitions {sorted(pending)}: gave up after 3 attempts")

    async def _fresh(
        self, partition: int, items: list[Positioned], outcome: Outcome
    ) -> list[Positioned]:
        """The items past the partition's checkpoints, once any gap before them is filled."""
        done = self._checkpoints[partition]
        fresh = [i for i in items if i.offset > done.get(i.topic, -1)]
        for topic in dict.fromkeys(i.topic for i in fresh):
            first = min(i.offset for i in fresh if i.topic == topic)
            start = done[topic] + 1 if topic in done else 0
            if first > start:
                await self._fill_gap(Gap(topic, partition, start, first, topic in done), outcome)
        return [i for i in fresh if i.offset > done.get(i.topic, -1)]

    async def _fill_gap(self, gap: Gap, outcome: Outcome) -> None:
        log.warning(
            "%s[%d]: the projections in Redis %s, but the next record is at offset %d; "
            "applying offsets %d..%d again from the log",
            gap.topic,
            gap.partition,
            f"end at offset {gap.start - 1}" if gap.stored else "hold nothing of it (emptied?)",
            gap.end,
            gap.start,
            gap.end - 1,
        )
        outcome.gaps.append(gap)
        if not gap.stored and self.on_lost is not None:
            await self.on_lost()
        async for chunk in self.fill(gap.topic, gap.partition, gap.start, gap.end):
            outcome.filled += len(chunk)
            if await self._commit({gap.partition: chunk}, outcome):
                raise CheckpointMoved(f"partition {gap.partition}: moved during a gap refill")

    async def _commit(self, fresh: dict[int, list[Positioned]], outcome: Outcome) -> list[int]:
        """Load, plan, publish the facts and commit records that continue the checkpoints of
        their partitions. Returns the partitions whose checkpoint another writer moved
        (nothing of theirs was written or counted).

        The records of every partition load in one round trip. The partitions are then
        planned in up to LANDING_CHUNKS chunks, and each chunk lands (facts published, then
        one round trip for its commits) while the next is planned: Redis and the broker work
        on one chunk while Python plans the next, instead of each waiting for the other.
        Chunks hold different partitions, so they write different keys. Every landing has
        finished before this returns or raises, so a retry never overlaps a commit."""
        stored = await self.store.load(
            {partition: {key_of(i.item) for i in items} for partition, items in fresh.items()}
        )
        now_ms = self.clock()
        partitions = list(fresh)
        size = -(-len(partitions) // LANDING_CHUNKS)
        landings: list[asyncio.Future[list[int]]] = []
        try:
            for first in range(0, len(partitions), size):
                commits = [
                    self._plan(partition, fresh[partition], stored[partition], now_ms)
                    for partition in partitions[first : first + size]
                ]
                landings.append(asyncio.ensure_future(self._land(commits, outcome)))
                for _ in range(YIELDS):  # let landings move on: acks in, commits out
                    await asyncio.sleep(0)
        finally:
            results = await asyncio.gather(*landings, return_exceptions=True)
        moved: list[int] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            moved += result
        return moved

    def _plan(
        self,
        partition: int,
        items: list[Positioned],
        stored: dict[EntityKey, dict[str, str]],
        now_ms: int,
    ) -> Commit:
        plan = plan_batch(stored, [i.item for i in items], self.directory, self.rules, now_ms)
        done = self._checkpoints[partition]
        moves: dict[str, tuple[int | None, int]] = {}
        for i in items:
            previous = moves.get(i.topic, (done.get(i.topic), -1))
            moves[i.topic] = (previous[0], max(previous[1], i.offset))
        return Commit(partition, moves, plan)

    async def _land(self, commits: list[Commit], outcome: Outcome) -> list[int]:
        """Publish the facts of some partitions' plans, then commit them; count what landed."""
        facts = [fact for commit in commits for fact in commit.plan.facts]
        if facts:
            await self.publish_facts(facts)
        moved = await self.store.commit(commits)
        for commit in commits:
            if commit.partition in moved:
                continue
            done = self._checkpoints[commit.partition]
            for topic, (_, new) in commit.moves.items():
                done[topic] = new
            plan = commit.plan
            outcome.applied += plan.applied
            outcome.duplicates += plan.duplicates
            outcome.facts_published += len(plan.facts)
            outcome.facts_applied += plan.facts_applied
            outcome.facts_duplicate += plan.facts_duplicate
        return moved


class LiveProjector:
    """The worker's projector: writes to the live generation, follows a rebuild's switch,
    and rides out a Redis outage of up to ``outage_seconds`` by retrying the batch (which
    the checkpoints make safe: a commit that landed before the connection broke is
    recognised and not applied twice)."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        partitions: int,
        rules: Rules,
        publish_facts: PublishFacts,
        fill: Fill = no_gaps,
        learn_directory: LearnDirectory | None = None,
        outage_seconds: float = 300.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.partitions = partitions
        self.rules = rules
        self.publish_facts = publish_facts
        self.fill = fill
        self.learn_directory = learn_directory
        self.outage_seconds = outage_seconds
        self.namespace = ""
        self._projector: Projector | None = None
        self._directory_versions: list[int] = []
        self._relearned = False  # in this batch

    async def _lost(self) -> None:
        """Redis was emptied. Readers must find this generation again (not a fresh g1), and
        the refill must credit every event with its rep's team even if the rep's upsert sits
        on a partition refilled later: learn the whole directory from the log first."""
        await self.client.set(pointer(self.prefix), self.namespace, nx=True)
        if self.learn_directory is not None and self._projector and not self._relearned:
            learned = await self.learn_directory(self._projector.directory)
            log.warning("relearned %d directory records from the log", learned)
            self._relearned = True

    async def _open(self, namespace: str) -> Projector:
        store = Store(self.client, namespace)
        self._directory_versions = await store.directory_versions(range(self.partitions))
        directory = await store.directory(range(self.partitions), self.rules)
        self.namespace = namespace
        self._projector = Projector(
            store, directory, self.rules, self.publish_facts, fill=self.fill, on_lost=self._lost
        )
        log.info("projecting into %s", namespace)
        return self._projector

    async def checkpoints_of(self, partitions: Sequence[int]) -> list[dict[str, int]]:
        """The stored checkpoints of some partitions in the generation this projector
        writes (opened on first use)."""
        projector = self._projector or await self._open(
            await current_namespace(self.client, self.prefix)
        )
        return await projector.store.checkpoints_of(partitions)

    def forget(self, partitions: Iterable[int]) -> None:
        if self._projector is not None:
            self._projector.forget(partitions)

    async def apply(self, batch: Sequence[Positioned]) -> Outcome:
        outcome = Outcome()
        self._relearned = False
        delay, give_up = 0.1, time.monotonic() + self.outage_seconds
        while True:
            try:
                await self._apply(batch, outcome)
                break
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if time.monotonic() + delay > give_up:
                    raise
                metrics.REDIS_RETRIES.inc()
                log.warning("Redis unavailable (%s); retrying the batch in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        return outcome

    async def _refresh_directory(self, projector: Projector) -> None:
        """Learn the rep and team changes other workers committed (their partitions' versions
        moved) before planning: events are credited with the directory as Redis knows it,
        not just as this worker's own partitions taught it."""
        partitions = range(self.partitions)
        versions = await projector.store.directory_versions(partitions)
        moved = [p for p in partitions if versions[p] != self._directory_versions[p]]
        if moved:
            for key, record in (await projector.store.directory_records(moved)).items():
                projector.directory.update(key, record)
            self._directory_versions = versions

    async def _apply(self, batch: Sequence[Positioned], outcome: Outcome) -> None:
        projector = self._projector or await self._open(
            await current_namespace(self.client, self.prefix)
        )
        while True:
            try:
                await self._refresh_directory(projector)
                await projector.apply(batch, outcome)
                return
            except NamespaceFrozen:
                frozen = self.namespace
                log.info("%s is frozen for a rebuild; waiting for the switch", frozen)
                while (live := await current_namespace(self.client, self.prefix)) == frozen:
                    await asyncio.sleep(0.1)
                projector = await self._open(live)
