"""Apply batches of events and lead facts to the Redis projections, partition by partition.

Per partition: skip offsets at or below the stored checkpoint of their topic
(redelivery), load the records the batch touches in one round trip, plan the
batch (projections.engine), publish the lead facts it implies (and wait for
the broker), then commit records, deltas and the new checkpoints in one atomic
call. If another writer moved a checkpoint meanwhile (a rebalance), re-read
and plan again. Publishing facts before the commit means a crash in between
only republishes facts with the same ids, which the leads ignore.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from projections.contributions import Rules
from projections.engine import DirectoryView, key_of, plan_batch
from projections.events import Event
from projections.facts import LeadFact
from projections.namespaces import current_namespace
from projections.store import CheckpointMoved, NamespaceFrozen, Store

log = logging.getLogger(__name__)

PublishFacts = Callable[[Sequence[LeadFact]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Positioned:
    topic: str
    partition: int
    offset: int
    item: Event | LeadFact


@dataclass
class Outcome:
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    facts_published: int = 0
    facts_applied: int = 0
    facts_duplicate: int = 0


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
    ) -> None:
        self.store = store
        self.directory = directory
        self.rules = rules
        self.publish_facts = publish_facts
        self.clock = clock  # "now" in epoch ms: which minute/hour/day buckets are still live
        self._checkpoints: dict[int, dict[str, int]] = {}

    async def apply(self, batch: Iterable[Positioned]) -> Outcome:
        by_partition: dict[int, list[Positioned]] = defaultdict(list)
        for item in batch:
            by_partition[item.partition].append(item)
        outcome = Outcome()
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


class LiveProjector:
    """The worker's projector: writes to the live generation, follows a rebuild's switch."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        partitions: int,
        rules: Rules,
        publish_facts: PublishFacts,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.partitions = partitions
        self.rules = rules
        self.publish_facts = publish_facts
        self.namespace = ""
        self._projector: Projector | None = None

    async def _open(self, namespace: str) -> Projector:
        store = Store(self.client, namespace)
        directory = await store.directory(range(self.partitions), self.rules)
        self.namespace = namespace
        self._projector = Projector(store, directory, self.rules, self.publish_facts)
        log.info("projecting into %s", namespace)
        return self._projector

    async def apply(self, batch: Sequence[Positioned]) -> Outcome:
        projector = self._projector or await self._open(
            await current_namespace(self.client, self.prefix)
        )
        while True:
            try:
                return await projector.apply(batch)
            except NamespaceFrozen:
                frozen = self.namespace
                log.info("%s is frozen for a rebuild; waiting for the switch", frozen)
                while (live := await current_namespace(self.client, self.prefix)) == frozen:
                    await asyncio.sleep(0.1)
                projector = await self._open(live)
