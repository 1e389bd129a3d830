"""Apply batches of events and lead facts to the Redis projections, partition by partition.

Per partition: skip offsets at or below the stored checkpoint of their topic
(redelivery), load the records the batch touches in one round trip, plan the
batch (projections.engine), publish the lead facts it implies (and wait for
the broker), then commit records, deltas and the new checkpoints in one atomic
call. If another writer moved a checkpoint meanwhile (a rebalance), re-read
and plan again. Publishing facts before the commit means a crash in between
only republishes facts with the same ids, which the leads ignore.

The stored checkpoints, not the consumer's committed offsets, say where each
partition continues: a record is applied only if it is the next offset after
its topic's checkpoint (the first offset of the log when there is none). A
record past a gap is not applied; the batch's outcome asks the caller to read
the partition again from the missing offset. That is how the projections
rebuild themselves when Redis lost writes or was emptied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from projections.contributions import Rules
from projections.engine import DirectoryView, key_of, plan_batch
from projections.events import Event
from projections.facts import LeadFact
from projections.namespaces import current_namespace, pointer
from projections.store import CheckpointMoved, NamespaceFrozen, Store
from streams import metrics

log = logging.getLogger(__name__)

PublishFacts = Callable[[Sequence[LeadFact]], Awaitable[None]]
# The first offset a topic partition still holds (0 for the kept-forever topics).
LogStart = Callable[[str, int], Awaitable[int]]
# Read every team and rep upsert of the log into a directory; returns how many.
LearnDirectory = Callable[[DirectoryView], Awaitable[int]]


async def from_zero(_topic: str, _partition: int) -> int:
    return 0


@dataclass(frozen=True, slots=True)
class Positioned:
    topic: str
    partition: int
    offset: int
    item: Event | LeadFact


@dataclass(frozen=True, slots=True)
class Rewind:
    """A topic partition to read again from ``offset``: the projections stop at
    ``offset - 1`` (``stored`` is False when they hold nothing of it), but the next
    record delivered was ``found``."""

    topic: str
    partition: int
    offset: int
    found: int
    stored: bool
    again: bool = False  # asked before: the consumer still delivers records past the gap


@dataclass
class Outcome:
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    past_gap: int = 0  # records not applied because an earlier offset is missing
    facts_published: int = 0
    facts_applied: int = 0
    facts_duplicate: int = 0
    rewinds: list[Rewind] = field(default_factory=list)


REWIND_AGAIN_SECONDS = 1.0


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
        log_start: LogStart = from_zero,
    ) -> None:
        self.store = store
        self.directory = directory
        self.rules = rules
        self.publish_facts = publish_facts
        self.clock = clock  # "now" in epoch ms: which minute/hour/day buckets are still live
        self.log_start = log_start
        self._checkpoints: dict[int, dict[str, int]] = {}

    async def apply(self, batch: Iterable[Positioned], outcome: Outcome | None = None) -> Outcome:
        """Apply a batch; counts add up in ``outcome`` (a new one by default)."""
        by_partition: dict[int, list[Positioned]] = defaultdict(list)
        for item in batch:
            by_partition[item.partition].append(item)
        outcome = outcome or Outcome()
        for partition, items in by_partition.items():
            for attempt in range(3):
                try:
                    await self._apply_partition(partition, items, outcome)
                    break
                except CheckpointMoved as moved:
                    log.warning("%s; re-reading (attempt %d)", moved, attempt + 1)
                    self._checkpoints.pop(partition, None)
            else:
                raise CheckpointMoved(f"partition {partition}: gave up after 3 attempts")
        return outcome

    async def _apply_partition(
        self, partition: int, items: list[Positioned], outcome: Outcome
    ) -> None:
        if partition not in self._checkpoints:
            self._checkpoints[partition] = await self.store.checkpoints(partition)
        done = self._checkpoints[partition]
        fresh = [i for i in items if i.offset > done.get(i.topic, -1)]
        outcome.redelivered += len(items) - len(fresh)
        fresh = await self._contiguous(partition, fresh, done, outcome)
        if not fresh:
            return
        stored = await self.store.load(partition, {key_of(i.item) for i in fresh})
        plan = plan_batch(stored, [i.item for i in fresh], self.directory, self.rules, self.clock())
        if plan.facts:
            await self.publish_facts(plan.facts)
        moves: dict[str, tuple[int | None, int]] = {}
        for i in fresh:
            previous = moves.get(i.topic, (done.get(i.topic), -1))
            moves[i.topic] = (previous[0], max(previous[1], i.offset))
        await self.store.commit(partition, moves, plan)
        for topic, (_, new) in moves.items():
            done[topic] = new
        outcome.applied += plan.applied
        outcome.duplicates += plan.duplicates
        outcome.facts_published += len(plan.facts)
        outcome.facts_applied += plan.facts_applied
        outcome.facts_duplicate += plan.facts_duplicate

    async def _contiguous(
        self, partition: int, fresh: list[Positioned], done: dict[str, int], outcome: Outcome
    ) -> list[Positioned]:
        """The records that continue their topic's checkpoint without a gap (in offset order,
        as Kafka delivers them); a gap becomes a Rewind."""
        expected: dict[str, int] = {}
        gapped: set[str] = set()
        kept = []
        for i in fresh:
            if i.topic in gapped:
                outcome.past_gap += 1
                continue
            if i.topic not in expected:
                stored = i.topic in done
                start = done[i.topic] + 1 if stored else await self.log_start(i.topic, partition)
                expected[i.topic] = start
            if i.offset != expected[i.topic]:
                gapped.add(i.topic)
                outcome.past_gap += 1
                outcome.rewinds.append(
                    Rewind(i.topic, partition, expected[i.topic], i.offset, i.topic in done)
                )
                continue
            expected[i.topic] += 1
            kept.append(i)
        return kept


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
        log_start: LogStart = from_zero,
        learn_directory: LearnDirectory | None = None,
        outage_seconds: float = 300.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.partitions = partitions
        self.rules = rules
        self.publish_facts = publish_facts
        self.log_start = log_start
        self.learn_directory = learn_directory
        self.outage_seconds = outage_seconds
        self.namespace = ""
        self._projector: Projector | None = None
        self._directory_versions: list[int] = []
        # Rewinds asked for and not yet seen through: (topic, partition) -> (offset, when).
        self._rewinding: dict[tuple[str, int], tuple[int, float]] = {}

    def _to_seek(self, rewinds: list[Rewind]) -> list[Rewind]:
        """The rewinds to seek for now. Records fetched before a seek keep arriving for a
        while, each past the same gap, and may even move the consumer's read position past
        the seek; so the same rewind is asked again, but at most every REWIND_AGAIN_SECONDS.
        A rewind asked before has ``again`` set."""
        now = time.monotonic()
        seek = []
        for r in rewinds:
            asked = self._rewinding.get((r.topic, r.partition))
            if asked is None or asked[0] != r.offset:
                self._rewinding[(r.topic, r.partition)] = (r.offset, now)
                seek.append(r)
            elif now - asked[1] >= REWIND_AGAIN_SECONDS:
                self._rewinding[(r.topic, r.partition)] = (r.offset, now)
                seek.append(replace(r, again=True))
        return seek

    async def _open(self, namespace: str) -> Projector:
        store = Store(self.client, namespace)
        self._directory_versions = await store.directory_versions(range(self.partitions))
        directory = await store.directory(range(self.partitions), self.rules)
        self.namespace = namespace
        self._projector = Projector(
            store, directory, self.rules, self.publish_facts, log_start=self.log_start
        )
        log.info("projecting into %s", namespace)
        return self._projector

    async def apply(self, batch: Sequence[Positioned]) -> Outcome:
        outcome = Outcome()
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
        outcome.rewinds = self._to_seek(outcome.rewinds)
        if any(not r.stored and not r.again for r in outcome.rewinds):
            # Redis was emptied. Readers must find this generation again (not a fresh g1),
            # and the replay must credit every event with its rep's team even if the rep's
            # upsert sits on a partition replayed later: learn the whole directory first.
            await self.client.set(pointer(self.prefix), self.namespace, nx=True)
            if self.learn_directory is not None and self._projector is not None:
                learned = await self.learn_directory(self._projector.directory)
                log.warning("relearned %d directory records from the log", learned)
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
