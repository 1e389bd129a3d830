"""The worker's projector: the live generation, a rebuild's switch, and outages ridden out.

``Projector`` (streams.projector) applies batches to one generation of the projections;
``LiveProjector`` is what the worker's projection loop holds around it: it opens the live
generation, follows a rebuild's switch when the generation it writes is frozen, learns the
directory changes other workers commit, and retries a batch while Redis or Kafka is away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence

from aiokafka.errors import KafkaError

from projections.contributions import Rules
from projections.errors import described
from projections.namespaces import pointer
from projections.store import (
    RedisClient,
    RedisStore,
    current_namespace,
    redis_unavailable,
)
from projections.stores import NamespaceFrozen
from streams import metrics
from streams.projector import (
    DeadLetter,
    Fill,
    LearnDirectory,
    Outcome,
    Positioned,
    Projector,
    PublishFacts,
    Spans,
    no_gaps,
)

log = logging.getLogger(__name__)


class LiveProjector:
    """The worker's projector: writes to the live generation, follows a rebuild's switch,
    and rides out a Redis or Kafka outage of up to ``outage_seconds`` by retrying the batch
    (which the checkpoints make safe: a commit that landed before the connection broke is
    recognised and not applied twice)."""

    def __init__(
        self,
        client: RedisClient,
        prefix: str,
        partitions: int,
        rules: Rules,
        publish_facts: PublishFacts,
        fill: Fill = no_gaps,
        learn_directory: LearnDirectory | None = None,
        outage_seconds: float = 300.0,
        dead_letter: DeadLetter | None = None,
    ) -> None:
        self.client = client
        self.dead_letter = dead_letter
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
        store = RedisStore(self.client, namespace)
        self._directory_versions = await store.directory_versions(range(self.partitions))
        directory = await store.directory(range(self.partitions), self.rules)
        self.namespace = namespace
        self._projector = Projector(
            store,
            directory,
            self.rules,
            self.publish_facts,
            fill=self.fill,
            on_lost=self._lost,
            dead_letter=self.dead_letter,
            overlap_folds=True,
        )
        log.info("projecting into %s", namespace)
        return self._projector

    async def _writing(self) -> Projector:
        """The projector of the generation readers read. A rebuild that switched them to a
        new one since this worker's last batch (which would have met the old one frozen)
        leaves the old one to be dropped: whatever is folded into it meanwhile would be left
        behind, so this moves to the new one first, the old one's folds settled. Where the
        pointer is gone (Redis emptied), the generation opened stays (``_lost`` records it
        again)."""
        if self._projector is None:
            return await self._open(await current_namespace(self.client, self.prefix))
        found = await self.client.get(pointer(self.prefix))
        live = found.decode() if isinstance(found, bytes) else found
        if live is None or live == self.namespace:
            return self._projector
        await self._projector.store.settle_folds()
        return await self._open(str(live))

    async def checkpoints_of(self, partitions: Sequence[int]) -> list[dict[str, int]]:
        """The stored checkpoints of some partitions in the generation this projector
        writes (opened on first use)."""
        projector = await self._writing()
        return await projector.store.checkpoints_of(partitions)

    async def fold_missing(self, partitions: Sequence[int], *, assigned: bool = False) -> None:
        """Bring the partitions' commits that a stopped worker, a failed call or a failover
        left out of the rollups into them (projections/store.py). On assignment, also undo
        what a partition's lost writes left in the rollups: a worker that never wrote the
        partition sees no gap to refill."""
        projector = await self._writing()
        store = projector.store
        redone = 0
        if assigned:
            for partition in partitions:
                redone += await store.refold_after_loss(partition)
        # No grace: the recheck runs between this worker's batches, so each of its commits has
        # had its fold; another worker's fold on its way makes a second fold a no-op.
        redone += await store.fold_missing(partitions)
        if partitions and redone:
            log.warning("folded %d buckets of %s into the rollups again", redone, partitions)

    async def settle_folds(self) -> None:
        """Wait for the last batch's fold (on its way while the next batch comes)."""
        if self._projector is not None:
            await self._projector.store.settle_folds()

    def forget(self, partitions: Iterable[int]) -> None:
        if self._projector is not None:
            self._projector.forget(partitions)

    async def behind(self, partitions: Sequence[int]) -> list[int]:
        """Partitions whose checkpoints in Redis are behind what this worker committed there
        (Redis lost its last writes, or was emptied): a quiet partition would otherwise wait
        for its next record to notice."""
        if self._projector is None or not partitions:
            return []
        projector = await self._writing()  # a rebuild's tombstones are not checkpoints gone back
        stored = await projector.store.checkpoints_of(partitions)
        behind = []
        for partition, found in zip(partitions, stored, strict=True):
            cached = projector.cached(partition)
            if cached and any(found.get(t, -1) < offset for t, offset in cached.items()):
                behind.append(partition)
        return behind

    async def apply(self, batch: Sequence[Positioned], spans: Spans | None = None) -> Outcome:
        outcome = Outcome()
        self._relearned = False
        delay, give_up = 0.1, time.monotonic() + self.outage_seconds
        while True:
            try:
                await self._apply(batch, spans, outcome)
                break
            except Exception as exc:
                if not isinstance(exc, KafkaError) and not redis_unavailable(exc):
                    raise
                if time.monotonic() + delay > give_up:
                    raise
                server = "Kafka" if isinstance(exc, KafkaError) else "Redis"
                metrics.RETRIES.labels(server).inc()
                log.warning(
                    "%s unavailable (%s); retrying the batch in %.1fs",
                    server,
                    described(exc),
                    delay,
                )
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

    async def _apply(
        self, batch: Sequence[Positioned], spans: Spans | None, outcome: Outcome
    ) -> None:
        projector = self._projector or await self._open(
            await current_namespace(self.client, self.prefix)
        )
        while True:
            try:
                await self._refresh_directory(projector)
                await projector.apply(batch, outcome, spans)
                return
            except NamespaceFrozen:
                frozen = self.namespace
                # The folds of the partitions that did land first: once the rebuild drops the
                # old generation, a fold still on its way would leave keys of it behind.
                await projector.store.settle_folds()
                log.info("%s is frozen for a rebuild; waiting for the switch", frozen)
                while (live := await current_namespace(self.client, self.prefix)) == frozen:
                    await asyncio.sleep(0.1)
                projector = await self._open(live)
