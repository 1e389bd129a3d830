"""The projection loop: the events and lead-facts topics, read in batches as large as what
the broker has ready, applied by the LiveProjector.

It runs inside the Faust worker (``streams.app``) but with an aiokafka consumer
of its own, in the group ``<prefix>-projection``: a Faust stream hands records
over one by one through several layers, which capped this loop at about
12,000 records/s on the benchmark machine whatever the batch size
(benchmarks/RESULTS.md). ``getmany`` returns every buffered record at once.

* **Co-partitioned.** Partition N of both topics writes the keys of ``{ns:pN}``,
  so both must go to the same worker: the range assignor gives every member the
  same partition numbers of topics with equal partition counts, and an
  assignment that breaks this stops the worker.
* **Redis says where to continue.** On assignment, each partition is moved to the
  offset after its Redis checkpoint (a partition Redis knows nothing of starts at
  the group's committed offset, or the beginning; the projector refills any gap).
  The group's offsets are committed at most once per ``commit_seconds``, only
  for tools that show consumer lag.
* **A rebalance waits for the batch in hand**, so no two workers write a
  partition at the same time in the normal case (the checkpoint CAS covers the
  rest).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from projections.store import Store
from streams.projector import LiveProjector, Positioned
from streams.settings import Settings

log = logging.getLogger(__name__)

Decode = Callable[[str, int, int, bytes | None, int], Positioned | None]
ProjectBatch = Callable[[LiveProjector, Sequence[Positioned]], Awaitable[None]]


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: ProjectionLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.loop.busy:  # the batch in hand finishes first
            self.loop.projector.forget({tp.partition for tp in revoked})
            await self.loop.commit_offsets()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.loop.resume(assigned)


class ProjectionLoop:
    def __init__(
        self,
        settings: Settings,
        projector: LiveProjector,
        decode: Decode,
        project_batch: ProjectBatch,
        commit_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.projector = projector
        self.decode = decode
        self.project_batch = project_batch
        self.commit_seconds = commit_seconds
        self.topics = (settings.events_topic, settings.facts_topic)
        self.busy = asyncio.Lock()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=f"{settings.topic_prefix}-projection",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=int(settings.session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(min(3.0, settings.session_timeout_seconds / 3) * 1000),
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._committed_at = time.monotonic()

    async def resume(self, assigned: set[TopicPartition]) -> None:
        """Check the assignment is co-partitioned, then continue each partition after its
        Redis checkpoint."""
        by_topic = {
            topic: sorted(tp.partition for tp in assigned if tp.topic == topic)
            for topic in self.topics
        }
        if len(set(map(tuple, by_topic.values()))) > 1:
            # aiokafka only logs what a listener raises: stop here, before writing anything.
            log.critical("not co-partitioned, stopping: assigned %s", by_topic)
            os._exit(78)
        partitions = by_topic[self.settings.events_topic]
        log.info("projecting partitions %s", partitions)
        if not partitions:
            return
        store = Store(self.projector.client, await self.projector.namespace_in_use())
        for partition, done in zip(partitions, await store.checkpoints_of(partitions), strict=True):
            for topic in self.topics:
                if topic in done:
                    self.consumer.seek(TopicPartition(topic, partition), done[topic] + 1)

    async def commit_offsets(self) -> None:
        """Commit the group's offsets (lag tools read them; the checkpoints decide)."""
        self._committed_at = time.monotonic()
        try:
            await self.consumer.commit()
        except Exception as exc:  # a rebalance in progress; the next commit covers it
            log.info("committing the projection group's offsets failed: %r", exc)

    async def run(self) -> None:
        self.consumer.subscribe(list(self.topics), listener=_Rebalance(self))
        await self.consumer.start()
        try:
            timeout_ms = int(self.settings.projection_batch_seconds * 1000)
            limit = self.settings.projection_batch_size
            while True:
                fetched = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=limit)
                async with self.busy:
                    now_ms = time.time_ns() // 1_000_000
                    batch = [
                        item
                        for tp, messages in fetched.items()
                        for m in messages
                        if (item := self.decode(tp.topic, tp.partition, m.offset, m.value, now_ms))
                    ]
                    if batch:
                        await self.project_batch(self.projector, batch)
                if time.monotonic() - self._committed_at >= self.commit_seconds:
                    await self.commit_offsets()
        finally:
            await self.consumer.stop()
