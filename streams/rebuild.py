"""``salespulse rebuild``: replay the log into a new generation while live processing continues.

1. Pre-pass: read every directory event (teams, reps) of the events topic, so
   the replay credits every event with its rep's team at the event's time.
2. Replay the events and lead-facts topics from the beginning into
   ``<prefix>:g<N+1>`` (its own checkpoints; readers still use ``g<N>``). With
   ``processes`` > 1, child processes each replay every ``processes``-th
   partition at the same time (a partition's keys are its own, so they never
   write the same key), then this process replays what they left: the lead facts one child
   derived for another's partitions after that one had reached its end.
3. When the replay has reached the end of both topics, freeze ``g<N>``: live
   workers finish no more batches there and wait.
4. Catch up with the frozen checkpoints, point readers at ``g<N+1>``, and
   delete ``g<N>``. Live workers continue in ``g<N+1>`` from its checkpoints.

Readers never see a half-built generation, and no event is lost or counted
twice across the switch: the new generation's checkpoints are at least the
frozen ones before anyone reads or writes it.

Progress (``salespulse rebuild`` shows it) is measured in offsets: those the
pre-pass read, then those the new generation's checkpoints reached, whichever
process replays them, against the end offsets of the topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from config.connections import kafka_options, redis_client
from config.settings import Settings
from projections.engine import DirectoryView, plan_batch
from projections.errors import SalespulseError, described
from projections.events import Event, RepUpserted, TeamUpserted
from projections.lateness import judge
from projections.namespaces import MARKER_SECONDS, next_generation
from projections.store import (
    REDIS_FAILURES,
    RedisClient,
    RedisStore,
    current_namespace,
    drop,
    freeze,
    mark_rebuilding,
    rebuilt,
    switch,
)
from projections.validation import Rejection, occurred_at_ms, parse_event
from streams.facts_publisher import facts_producer, facts_publisher
from streams.garbage import tune_gc
from streams.ingest import projection_letter
from streams.logs import configure_logging
from streams.progress import (
    NoProgress,
    Progress,
    ProgressFactory,
    no_progress,
    offsets_progress,
    reporting,
)
from streams.projector import DeadLetter, Positioned, Projector, Span, read_record

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.5  # how often the replay's progress is read from its checkpoints
ENDS_SECONDS = 5.0  # how often the end offsets it is measured against are asked for again


@dataclass
class RebuildReport:
    old: str
    new: str
    records: int
    seconds: float  # the whole rebuild: directory pre-pass, replay, switch, dropping the old
    dropped_keys: int
    replay_seconds: float = 0.0  # the replay up to the end of the log alone

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


class RebuildFailed(SalespulseError):
    """A replay process failed: nothing was switched; the next rebuild starts over."""


class _Replay:
    def __init__(
        self, settings: Settings, projector: Projector, partitions: Sequence[int] | None = None
    ) -> None:
        self.settings = settings
        self.projector = projector
        self.records = 0
        self.tps = [
            TopicPartition(topic, p)
            for topic in (settings.events_topic, settings.facts_topic)
            for p in (range(settings.partitions) if partitions is None else partitions)
        ]
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            **kafka_options(settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.positions: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        """Read from the beginning, or after the checkpoints the new generation already has."""
        await self.consumer.start()
        self.consumer.assign(self.tps)
        partitions = sorted({tp.partition for tp in self.tps})
        done = dict(
            zip(partitions, await self.projector.store.checkpoints_of(partitions), strict=True)
        )
        for tp, start in (await self.consumer.beginning_offsets(self.tps)).items():
            self.positions[tp] = max(start, done[tp.partition].get(tp.topic, -1) + 1)
            self.consumer.seek(tp, self.positions[tp])

    async def run_to_end(self) -> None:
        # The end offsets are asked for only when a read comes back empty: not once per batch.
        while await self.step() or not await self.at_end():
            pass

    async def step(self) -> int:
        """Apply what the consumer has ready; returns how many records it read."""
        batch = await self.consumer.getmany(
            timeout_ms=200, max_records=self.settings.projection_batch_size
        )
        now_ms = time.time_ns() // 1_000_000
        # Settings' properties make these anew on every call: once a batch, not once a record.
        facts_topic, limits = self.settings.facts_topic, self.settings.limits
        items: list[Positioned] = []
        for tp, messages in batch.items():
            for m in messages:
                item = read_record(
                    tp.topic,
                    tp.partition,
                    m.offset,
                    m.value,
                    facts_topic=facts_topic,
                    limits=limits,
                    now_ms=now_ms,
                )
                if item is not None:
                    items.append(item)
        spans: dict[tuple[int, str], Span] = {}
        for tp in self.tps:  # offsets passed without data (transaction markers) move on too
            end = await self.consumer.position(tp)
            if end != self.positions[tp]:
                spans[(tp.partition, tp.topic)] = Span(self.positions[tp], end)
                self.positions[tp] = end
        if spans:
            await self.projector.apply(items, spans=spans)
            self.records += len(items)
        return sum(len(messages) for messages in batch.values())

    async def at_end(self) -> bool:
        ends = await self.consumer.end_offsets(self.tps)
        return all([await self.consumer.position(tp) >= ends[tp] for tp in self.tps])

    async def stop(self) -> None:
        await self.consumer.stop()


async def directory_events(settings: Settings, progress: Progress | None = None) -> list[Event]:
    """Every team and rep upsert of the events topic that the lateness rule applies (one
    too late is not learnt, as the live worker never learnt it); ``progress``: offsets read
    of them all."""
    progress = progress or NoProgress()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        **kafka_options(settings),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    found: list[Event] = []
    stream: dict[int, int] = {}  # stream time per partition (projections/lateness.py)
    horizon_ms = settings.rules.lateness_horizon_ms
    try:
        with reporting(progress):
            tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            begin = await consumer.beginning_offsets(tps)
            for tp, start in begin.items():
                consumer.seek(tp, start)
            now_ms = time.time_ns() // 1_000_000
            while not await _reached(consumer, begin, ends, progress):
                for tp, messages in (
                    await consumer.getmany(timeout_ms=500, max_records=20_000)
                ).items():
                    for m in messages:
                        at = occurred_at_ms(m.value)
                        if at is None:
                            continue  # not an event: the projector skips it too
                        late = judge(stream.get(tp.partition, 0), [(m.offset, at)], horizon_ms)
                        stream[tp.partition] = late.stream_ms
                        if late.late or b'.upserted"' not in (m.value or b""):
                            continue
                        event = parse_event(m.value or b"", now_ms=now_ms, limits=settings.limits)
                        if isinstance(event, RepUpserted | TeamUpserted):
                            found.append(event)
    finally:
        await consumer.stop()
    return found


async def _reached(
    consumer: AIOKafkaConsumer,
    begin: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    progress: Progress,
) -> bool:
    """Whether the consumer reached the end offsets; reports how far it is."""
    positions = {tp: await consumer.position(tp) for tp in begin}
    done, total = offsets_progress(begin, ends, positions)
    progress.update(done, done, total)
    return all(positions[tp] >= ends[tp] for tp in begin)


def learn(directory: DirectoryView, events: Sequence[Event], settings: Settings) -> None:
    """Learn directory events into the view only: the replay applies them again, in order."""
    plan_batch({}, list(events), directory, settings.rules)


async def learn_directory(settings: Settings, directory: DirectoryView) -> int:
    """Apply every team and rep upsert first, into the view."""
    events = await directory_events(settings)
    learn(directory, events, settings)
    return len(events)


async def _replay_partitions(
    settings: Settings, namespace: str, partitions: list[int], directory: list[Event]
) -> int:
    """One child's share of the replay: some partitions of both topics, to their end."""
    client = redis_client(settings)
    producer = facts_producer(settings)
    await producer.start()
    try:
        view = DirectoryView({}, settings.rules)
        learn(view, directory, settings)
        projector = Projector(
            RedisStore(client, namespace),
            view,
            settings.rules,
            facts_publisher(settings, producer),
            dead_letter=_dead_letterer(settings, producer),
        )
        replay = _Replay(settings, projector, partitions)
        await replay.start()
        try:
            await replay.run_to_end()
        finally:
            await replay.stop()
        return replay.records
    finally:
        await producer.stop()
        await client.aclose()


def _child(
    settings: Settings,
    namespace: str,
    partitions: list[int],
    directory: list[Event],
    counts: multiprocessing.queues.Queue[int],
) -> None:
    configure_logging(
        settings, "%(asctime)s %(levelname)s %(name)s[replay %(process)d]: %(message)s"
    )
    if settings.log_level.lower() != "debug":
        # Its consumer's notices (topics assigned) would cut into the parent's progress line
        # on the terminal both share; warnings and errors still show.
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    tune_gc()
    counts.put(asyncio.run(_replay_partitions(settings, namespace, partitions, directory)))


async def _replay_in_processes(
    settings: Settings, namespace: str, processes: int, directory: list[Event]
) -> int:
    """Replay in child processes at once, each taking every ``processes``-th partition;
    returns the records they replayed."""
    context = multiprocessing.get_context("spawn")
    counts: multiprocessing.queues.Queue[int] = context.Queue()
    every = list(range(settings.partitions))
    shares = [share for i in range(processes) if (share := every[i::processes])]
    children = [
        context.Process(
            target=_child, args=(settings, namespace, share, directory, counts), daemon=True
        )
        for share in shares
    ]
    for child in children:
        child.start()
    try:
        for child in children:
            await asyncio.to_thread(child.join)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
    failed = [
        (share, c.exitcode) for share, c in zip(shares, children, strict=True) if c.exitcode != 0
    ]
    if failed:
        raise RebuildFailed(
            "the replay of partitions "
            + "; ".join(f"{share} exited with {code}" for share, code in failed)
        )
    return sum(counts.get(timeout=5) for _ in children)


@contextlib.asynccontextmanager
async def _watched(
    settings: Settings, store: RedisStore, progress: Progress
) -> AsyncIterator[None]:
    """Report the replay's progress while the block runs, and its summary at the end."""
    stopping = asyncio.Event()
    with reporting(progress) as shown:
        watching = asyncio.create_task(_watch_replay(settings, store, shown, stopping))
        try:
            yield
        finally:
            stopping.set()
            await watching


async def _watch_replay(
    settings: Settings, store: RedisStore, progress: Progress, stopping: asyncio.Event
) -> None:
    """Report the replay's progress until ``stopping`` is set: the offsets the new
    generation's checkpoints reached (whichever process replays a partition) against the
    end offsets of both topics, asked for again every few seconds as the log grows. A
    failure here ends the reports, never the rebuild."""
    try:
        await _watch(settings, store, progress, stopping)
    except (KafkaError, *REDIS_FAILURES, OSError) as exc:
        log.warning("rebuild: no more progress reports (%s)", exc)


async def _watch(
    settings: Settings, store: RedisStore, progress: Progress, stopping: asyncio.Event
) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        **kafka_options(settings),
        enable_auto_commit=False,
        isolation_level="read_committed",  # the end offsets a replay reads up to
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in (settings.events_topic, settings.facts_topic)
            for p in range(settings.partitions)
        ]
        begin = await consumer.beginning_offsets(tps)
        ends, asked = await consumer.end_offsets(tps), time.monotonic()
        while True:
            reached = await store.checkpoints_of(range(settings.partitions))
            positions = {tp: reached[tp.partition].get(tp.topic, -1) + 1 for tp in tps}
            done, total = offsets_progress(begin, ends, positions)
            progress.update(done, done, total)
            if stopping.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), WATCH_SECONDS)
            if time.monotonic() - asked >= ENDS_SECONDS:
                ends, asked = await consumer.end_offsets(tps), time.monotonic()
    finally:
        await consumer.stop()


async def _keep_marked(client: RedisClient, prefix: str, old: str, new: str) -> None:
    """Renew the marker that tells readers a rebuild runs, until cancelled. A renewal that
    fails (Redis away, a failover) is tried again at the next turn: the marker outlives
    three of them."""
    while True:
        try:
            await mark_rebuilding(client, prefix, old, new)
        except REDIS_FAILURES as exc:
            log.warning("the rebuild marker was not renewed (%s); trying again", described(exc))
        await asyncio.sleep(MARKER_SECONDS / 3)


def _dead_letterer(settings: Settings, producer: AIOKafkaProducer) -> DeadLetter:
    """A replay meets the records the live worker dead-lettered (unprocessable, too late)
    and does the same (a second copy, with the same source offset headers)."""

    async def send(record: Positioned, rejection: Rejection) -> None:
        key, letter = projection_letter(
            record.item,
            record.value,
            rejection,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        sent = await producer.send(
            settings.dlq_topic, letter.value, key=key, headers=letter.headers
        )
        await sent

    return send


async def rebuild(
    settings: Settings, processes: int = 1, progress: ProgressFactory = no_progress
) -> RebuildReport:
    """Replay the log into the next generation and switch readers to it. ``progress``
    makes what the directory pre-pass and the replay report to (offsets read)."""
    client = redis_client(settings)
    producer = facts_producer(settings)
    await producer.start()
    started = time.monotonic()
    marking: asyncio.Task[None] | None = None
    try:
        old = await current_namespace(client, settings.topic_prefix)
        new = next_generation(old)
        marking = asyncio.create_task(_keep_marked(client, settings.topic_prefix, old, new))
        await drop(client, new)  # what an interrupted rebuild left behind
        store = RedisStore(client, new)
        directory = DirectoryView({}, settings.rules)
        known = await directory_events(
            settings, progress(f"rebuild {new}: directory pre-pass", "records")
        )
        learn(directory, known, settings)
        log.info("rebuild %s -> %s: %d directory events known", old, new, len(known))
        tune_gc()  # this process replays too (all of it, or the facts left at the end)
        replay_started = time.monotonic()
        replayed = 0
        async with _watched(settings, store, progress(f"rebuild {old} -> {new}", "records")):
            if processes > 1:
                replayed = await _replay_in_processes(settings, new, processes, known)
            projector = Projector(
                store,
                directory,
                settings.rules,
                facts_publisher(settings, producer),
                dead_letter=_dead_letterer(settings, producer),
            )
            replay = _Replay(settings, projector)
            await replay.start()
            try:
                await replay.run_to_end()
            except BaseException:
                await replay.stop()
                raise
        try:
            replay_seconds = time.monotonic() - replay_started
            await freeze(client, old, range(settings.partitions))
            frozen = {
                p: await RedisStore(client, old).checkpoints(p) for p in range(settings.partitions)
            }
            while True:
                done = {p: await store.checkpoints(p) for p in range(settings.partitions)}
                if all(
                    done[p].get(topic, -1) >= offset
                    for p, ckpt in frozen.items()
                    for topic, offset in ckpt.items()
                ):
                    break
                await replay.step()
            await switch(client, settings.topic_prefix, new)
        finally:
            await replay.stop()
        dropped = await drop(client, old)
        return RebuildReport(
            old,
            new,
            replayed + replay.records,
            time.monotonic() - started,
            dropped,
            replay_seconds,
        )
    finally:
        if marking is not None:
            marking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await marking
            with contextlib.suppress(*REDIS_FAILURES):
                await rebuilt(client, settings.topic_prefix)
        await producer.stop()
        await client.aclose()
