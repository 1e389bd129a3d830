"""Apply batches of canonical events to the Redis projections, partition by partition.

Per partition: skip offsets at or below the stored checkpoint (redelivery),
load the records the batch touches in one round trip, plan the batch
(projections.engine), and commit records, deltas and the new checkpoint in one
atomic call. If another writer moved the checkpoint meanwhile (a rebalance),
reload and plan again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from projections.contributions import Rules
from projections.engine import DirectoryView, plan_batch
from projections.entities import entity_id
from projections.events import Event
from projections.store import CheckpointMoved, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Positioned:
    partition: int
    offset: int
    event: Event


@dataclass
class Outcome:
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0


class Projector:
    def __init__(self, store: Store, topic: str, directory: DirectoryView, rules: Rules) -> None:
        self.store = store
        self.topic = topic
        self.directory = directory
        self.rules = rules
        self._checkpoints: dict[int, int | None] = {}

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
            self._checkpoints[partition] = await self.store.checkpoint(partition, self.topic)
        done = self._checkpoints[partition]
        fresh = [i for i in items if done is None or i.offset > done]
        outcome.redelivered += len(items) - len(fresh)
        if not fresh:
            return
        events = [i.event for i in fresh]
        stored = await self.store.load(partition, {entity_id(e) for e in events})
        plan = plan_batch(stored, events, self.directory, self.rules)
        last = max(i.offset for i in fresh)
        await self.store.commit(partition, self.topic, done, last, plan)
        self._checkpoints[partition] = last
        outcome.applied += plan.applied
        outcome.duplicates += plan.duplicates
