"""The worker's two loops read Kafka in batches as large as what the broker has ready.

Both run inside the Faust worker (``streams.app``, as ``app.task``s) but each
with an aiokafka consumer of its own: a Faust stream hands records over one
by one through several layers, which capped a loop at about 12,000 records/s
on the benchmark machine whatever the batch size, and cost about 80 µs of CPU
per record at any rate (benchmarks/RESULTS.md). ``getmany`` returns every
buffered record at once: a backlog is read in large batches, a quiet stream in
small ones, without a fixed delay.

* **Ingest** (group ``<prefix>-ingest``, the raw topic): validate, forward,
  dead-letter, in one Kafka transaction per batch together with the batch's raw
  offsets (exactly once: ``streams.app``).
* **Projection** (group ``<prefix>-projection``, the events and lead-facts
  topics): apply to Redis. Partition N of both topics writes the keys of
  ``{ns:pN}``, so both go to the same worker: the range assignor gives every
  member the same partition numbers of topics with equal partition counts, and
  an assignment that breaks this stops the worker. On assignment each
  partition continues after its Redis checkpoint; the group's offsets are
  committed about once a second, only for tools that show consumer lag.

A rebalance waits for the batch in hand, so in the normal case no two workers
work on a partition at the same time (the checkpoint CAS covers the rest).

Both read ``read_committed`` and join their groups as static members (the
worker's ``SALESPULSE_WORKER_ID``): a worker restarted within the session
timeout gets its partitions back at once, without a rebalance. With every
batch goes its ``Span`` per topic partition: from where the consumer continued
to where it stands now. Offsets in between that hold no data (transaction
markers, aborted records) are never delivered, so a span, not the last
record's offset, says how far a batch took a partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from config.connections import kafka_options
from config.settings import Settings
from projections.errors import described
from streams.projector import Span

log = logging.getLogger(__name__)

Fetched = Mapping[TopicPartition, Sequence[ConsumerRecord]]
Spans = Mapping[TopicPartition, Span]
Handle = Callable[[Fetched, Spans], Awaitable[None]]
OnAssigned = Callable[[set[TopicPartition]], Awaitable[None]]
OnRevoked = Callable[[set[TopicPartition]], None]
Periodic = Callable[[], Awaitable[None]]


# How often a lingering batch looks for more records (see BatchLoop.linger).
LINGER_POLL_SECONDS = 0.01
# A broker answers a fetch once it has this many bytes for it, or this long passed. aiokafka's
# defaults (1 byte, 500 ms) answer each fetch as soon as a record comes, so at a steady rate
# the consumers fetched a few records at a time: at 1,000 events/s the worker spent about a
# fifth of its CPU and the broker a third of its on fetch round trips. 25 ms is well within a
# batch's linger (benchmarks/RESULTS.md, stop 36).
FETCH_MIN_BYTES = 16_384
FETCH_MAX_WAIT_MS = 25
# How long a revocation waits for the group to show the offsets its transactions committed
# (BatchLoop.committed_shown), and how often it asks.
SHOWN_SECONDS = 10.0
SHOWN_POLL_SECONDS = 0.02


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: BatchLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("%s: revoked %s", self.loop.group, _describe(revoked))
        async with self.loop.busy:  # the batch in hand finishes first
            if self.loop.on_revoked is not None:
                self.loop.on_revoked(revoked)
            await self.loop.commit_offsets()
            if self.loop.commit_seconds is None:
                await self.loop.committed_shown(revoked)
            for tp in revoked:
                self.loop.positions.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.loop.group, _describe(assigned))
        if self.loop.on_assigned is not None:
            # No batch meanwhile: once the listener seeks, the fetcher may hand over records of
            # these partitions, and a batch committed while ``on_assigned`` still repairs them
            # (the rollups' folds, for one) can race with it.
            async with self.loop.busy:
                await self.loop.on_assigned(assigned)


def _describe(tps: Iterable[TopicPartition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return ", ".join(f"{t} {sorted(p)}" for t, p in sorted(by_topic.items())) or "nothing"


def _hold_ms(settings: Settings) -> int:
    """How long the group waits for a member to finish its batch: the outage budget a batch
    may retry for, plus a minute for the batch itself."""
    return int((settings.redis_outage_seconds + 60) * 1000)


class BatchLoop:
    """Fetch, hand each batch to ``handle``, commit; ``commit_seconds`` 0 commits after
    every batch (and the offsets of a batch are never committed before ``handle`` returns),
    None leaves every commit to ``handle`` (a transaction that commits the offsets)."""

    def __init__(
        self,
        settings: Settings,
        group: str,
        topics: Sequence[str],
        handle: Handle,
        *,
        commit_seconds: float | None = 0.0,
        max_records: int,
        idle_seconds: float,
        linger_seconds: float = 0.0,
        on_assigned: OnAssigned | None = None,
        on_revoked: OnRevoked | None = None,
        periodic: Periodic | None = None,
        periodic_seconds: float = 5.0,
        paced: Periodic | None = None,
    ) -> None:
        self.group = group
        self.topics = list(topics)
        self.handle = handle
        self.commit_seconds = commit_seconds
        self.max_records = max_records
        self.idle_ms = int(idle_seconds * 1000)
        self.linger_seconds = linger_seconds
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.periodic = periodic  # every periodic_seconds, with or without records
        self.periodic_seconds = periodic_seconds
        self.paced = paced  # awaited before each fetch, without the batch held
        self._periodic_at = time.monotonic()
        self.busy = asyncio.Lock()
        # Where the consumer continues, per partition: set by ``seek`` and after each fetch.
        self.positions: dict[TopicPartition, int] = {}
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            **kafka_options(settings),
            group_id=group,
            group_instance_id=settings.worker_name,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=int(settings.session_timeout_seconds * 1000),
            # A member whose batch is still in hand (a revocation waits for it) must stay in
            # the group: aiokafka's defaults drop it after the session timeout (rebalance)
            # or 300 s without a fetch, and its partitions' next owner reads them again
            # while it still commits (an ingest transaction is not fenced by generation),
            # which wrote a dead letter twice. A batch retries for at most the outage
            # budget; a member that dies is still dropped at the session timeout.
            rebalance_timeout_ms=_hold_ms(settings),
            max_poll_interval_ms=_hold_ms(settings),
            heartbeat_interval_ms=int(min(3.0, settings.session_timeout_seconds / 3) * 1000),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self._committed_at = time.monotonic()
        self._uncommitted = False  # records handled since the last commit that succeeded

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Continue ``tp`` at ``offset`` (from a rebalance listener)."""
        self.consumer.seek(tp, offset)
        self.positions[tp] = offset

    async def commit_offsets(self) -> None:
        """Commit the positions of every record handled so far. A commit that fails (a
        rebalance, the broker away) is left to the next one, which covers the same records;
        until then a restart handles them again, as at-least-once allows."""
        self._committed_at = time.monotonic()
        if self.commit_seconds is None or not self.consumer.assignment():
            return
        try:
            await self.consumer.commit()
            self._uncommitted = False
        except KafkaError as exc:
            log.warning(
                "%s: a commit failed, the next one covers it: %s", self.group, described(exc)
            )

    async def committed_shown(self, revoked: set[TopicPartition]) -> None:
        """For a loop whose batches commit their offsets in a transaction: wait until the
        group shows, for each revoked partition, the offset its last batch committed.

        A transaction's commit returns once the commit is decided; the group coordinator
        applies its offsets when the commit markers reach it, a moment later. A next owner
        that read the offsets before then started from the older ones and forwarded a batch
        a second time (the cluster fault suite found dead letters written twice after a
        rebalance). Kafka's own answer, an offset fetch that waits for pending transactional
        offsets (KIP-447's require_stable), is not in aiokafka; so the partitions are let go
        only once their offsets show. Gives up after SHOWN_SECONDS with a warning (the broker
        away): the batch is then at worst forwarded again, as before."""
        waiting = {tp: self.positions[tp] for tp in revoked if tp in self.positions}
        deadline = time.monotonic() + SHOWN_SECONDS
        while waiting:
            left = deadline - time.monotonic()
            try:
                for tp, end in list(waiting.items()):
                    got = await asyncio.wait_for(self.consumer.committed(tp), max(left, 0.001))
                    if got is not None and got >= end:
                        del waiting[tp]
            except (TimeoutError, KafkaError) as exc:
                log.debug("%s: committed offsets not read: %r", self.group, exc)
            if not waiting:
                return
            if time.monotonic() >= deadline:
                log.warning(
                    "%s: the group does not show the committed offsets of %s after %.0fs; "
                    "letting them go",
                    self.group,
                    _describe(waiting),
                    SHOWN_SECONDS,
                )
                return
            await asyncio.sleep(SHOWN_POLL_SECONDS)

    async def spans(self, fetched: Fetched) -> dict[TopicPartition, Span]:
        """Per partition that delivered records or moved past offsets without data: from
        where the consumer continued to where it stands now. Runs right after the fetch,
        before anything can seek."""
        out: dict[TopicPartition, Span] = {}
        assigned = self.consumer.assignment()
        for tp in {*fetched, *(tp for tp in self.positions if tp in assigned)}:
            start = self.positions.get(tp)
            end = await self.consumer.position(tp)
            self.positions[tp] = end
            if tp in fetched or (start is not None and end > start):
                out[tp] = Span(start, end)
        return out

    async def linger(self, fetched: Fetched) -> Fetched:
        """Keep fetching for up to ``linger_seconds`` after records came, until the batch is
        full: each batch has costs of its own (an ingest transaction's round trips and
        markers; a projection batch's loads, commits and folds), and at a steady rate a
        batch that waits a little for more pays them for many more records.

        It runs with the batch held (``busy``), so a rebalance's revocation waits for it; it
        must then never wait for the rebalance itself. Once a rebalance began, aiokafka's
        fetch waits for the next assignment whatever its timeout, and the assignment waits
        for the revocation: a deadlock until the group's rebalance timeout. So it polls
        without waiting, every LINGER_POLL_SECONDS, and stops as soon as a rebalance began
        (aiokafka's subscription state says so; no public call does)."""
        batch = {tp: list(messages) for tp, messages in fetched.items()}
        got = sum(len(messages) for messages in batch.values())
        deadline = time.monotonic() + self.linger_seconds
        while got < self.max_records and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, LINGER_POLL_SECONDS))
            if self.consumer._subscription.reassignment_in_progress:
                break
            # No await between the check above and aiokafka's own: this cannot block.
            more = await self.consumer.getmany(timeout_ms=0, max_records=self.max_records - got)
            for tp, messages in more.items():
                batch.setdefault(tp, []).extend(messages)
                got += len(messages)
        return batch

    async def run(self) -> None:
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        await self.consumer.start()
        try:
            while True:
                if self.paced is not None:  # a rebalance meanwhile need not wait for it
                    await self.paced()
                fetched = await self.consumer.getmany(
                    timeout_ms=self.idle_ms, max_records=self.max_records
                )
                async with self.busy:  # from here, a rebalance waits for the batch
                    if fetched and self.linger_seconds > 0:
                        fetched = await self.linger(fetched)
                    spans = await self.spans(fetched)
                    if spans:
                        await self.handle(fetched, spans)
                        self._uncommitted = True
                    if (
                        self.periodic is not None
                        and time.monotonic() - self._periodic_at >= self.periodic_seconds
                    ):
                        self._periodic_at = time.monotonic()
                        await self.periodic()
                    # Also when nothing came: a commit that failed is retried, not left to
                    # a next batch that may never come.
                    waited = time.monotonic() - self._committed_at
                    if (
                        self._uncommitted
                        and self.commit_seconds is not None
                        and waited >= self.commit_seconds
                    ):
                        await self.commit_offsets()
        finally:
            await self.consumer.stop()
