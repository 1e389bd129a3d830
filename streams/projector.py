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
partition continues. A checkpoint is the last offset applied *or passed*: the
events topic is written in transactions, so some offsets hold transaction
markers (or aborted records) that a ``read_committed`` consumer never delivers.
The reader therefore says, per topic partition, which span of offsets a batch
covers (``Span``: every record the consumer delivers from ``start`` up to
``end``), and the checkpoint moves to ``end - 1``. When a span starts past the
offset after the checkpoint (offset 0 when there is none), the records in
between were never applied: they are read from the log (``fill``) and applied
first. That is how the projections rebuild themselves when Redis lost its last
writes or was emptied, without moving the consumer.

No event can stop the projections. Planning is pure, so a batch whose plan
fails, or whose commit would take a sum out of range, fails the same way
every time: the partition's batch is then split in halves, and halves again,
until the events responsible are found. Those are dead-lettered as
``unprocessable`` with the error, their offsets are passed, and everything
else is applied (``_isolate``). Only infrastructure errors (Redis, Kafka) are
retried.

Events beyond the lateness horizon (projections/lateness.py), judged in offset order
against the partition's stream time stored with its checkpoint, are dead-lettered as
``too_late`` before the commit that passes them, and applied nowhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from projections.contributions import Rules
from projections.engine import BatchPlan, DirectoryView, EntityKey, key_of, plan_batch
from projections.entities import Record
from projections.errors import described
from projections.events import Event
from projections.facts import LeadFact
from projections.lateness import Judged, judge, late_passed, stream_upto
from projections.stores import (
    FROZEN,
    STREAM,
    CheckpointMoved,
    Commit,
    NamespaceFrozen,
    ProjectionStore,
    offsets,
)
from projections.validation import Limits, Reason, Rejection, parse_event

log = logging.getLogger(__name__)

PublishFacts = Callable[[Sequence[LeadFact]], Awaitable[None]]
# Send one record the projections do not apply (unprocessable, too late) to the dead-letter
# topic, with why, and wait until the broker has it.
DeadLetter = Callable[["Positioned", Rejection], Awaitable[None]]
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
    value: bytes | None = None  # the record's bytes, for the dead-letter topic


@dataclass(frozen=True, slots=True)
class Span:
    """The consumer delivered every record of a topic partition from offset ``start``
    (None: not known) up to ``end`` (exclusive); offsets it skipped in between hold no
    data (transaction markers, aborted records)."""

    start: int | None
    end: int


# (partition, topic) -> the span a batch covers
Spans = Mapping[tuple[int, str], Span]


@dataclass
class Work:
    """One partition's share of a batch: its new items and its checkpoint moves, topic ->
    (the offset it was planned from, or None for none; the new offset)."""

    items: list[Positioned]
    moves: dict[str, tuple[int | None, int]]


class Unprocessable(Exception):
    """A batch the projections cannot apply, however often it is tried."""


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
    for an invalid one, which means a writer bypassed ingest (or the projector), the
    topic's only writer."""
    if topic == facts_topic:
        try:
            return Positioned(topic, partition, offset, LeadFact.decode(value or b""), value)
        except (ValueError, TypeError, KeyError) as exc:
            log.error(
                "skipping invalid lead fact %s[%d]@%d: %s", topic, partition, offset, described(exc)
            )
            return None
    parsed = parse_event(value or b"", now_ms=now_ms, limits=limits)
    if isinstance(parsed, Rejection):
        log.error("skipping invalid record %s[%d]@%d: %s", topic, partition, offset, parsed.detail)
        return None
    return Positioned(topic, partition, offset, parsed, value)


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
    unprocessable: int = 0  # records dead-lettered because they cannot be applied
    too_late: int = 0  # events dead-lettered because they are beyond the lateness horizon
    expired: int = 0  # records the commits deleted, over by the lateness horizon
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
        store: ProjectionStore,
        directory: DirectoryView,
        rules: Rules,
        publish_facts: PublishFacts,
        clock: Callable[[], int] = wall_clock_ms,
        fill: Fill = no_gaps,
        on_lost: Callable[[], Awaitable[None]] | None = None,
        dead_letter: DeadLetter | None = None,
        overlap_folds: bool = False,
    ) -> None:
        self.store = store
        self.directory = directory
        self.rules = rules
        self.publish_facts = publish_facts
        self.clock = clock  # "now" in epoch ms: which minute/hour/day buckets are still live
        self.fill = fill
        self.on_lost = on_lost  # before refilling a partition Redis holds nothing of
        # None: an unprocessable record stops the batch, a late one is only counted
        self.dead_letter = dead_letter
        # True: a batch returns once its commits landed, its fold on its way while the next
        # batch is fetched, decoded and planned (the store's next commit waits for it).
        self.overlap_folds = overlap_folds
        self._checkpoints: dict[int, dict[str, int]] = {}
        self._stream: dict[int, int] = {}  # stream time per partition, as committed
        # Late events this projector dead-lettered whose offsets no commit passed yet: a
        # batch retried (Redis away) does not write them again.
        self._late_sent: set[tuple[str, int, int]] = set()

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the cached checkpoints of partitions another worker may write next."""
        for partition in partitions:
            self._checkpoints.pop(partition, None)
            self._stream.pop(partition, None)

    def cached(self, partition: int) -> dict[str, int]:
        """The checkpoints this projector believes a partition has (empty: not known)."""
        return dict(self._checkpoints.get(partition, {}))

    async def apply(
        self,
        batch: Iterable[Positioned],
        outcome: Outcome | None = None,
        spans: Spans | None = None,
    ) -> Outcome:
        """Apply a batch; counts add up in ``outcome`` (a new one by default). ``spans`` say
        which offsets the batch covers (a span with no records moves a checkpoint past
        offsets that hold no data); without them a batch covers its records' offsets."""
        spans = spans or {}
        pending: dict[int, list[Positioned]] = defaultdict(list)
        for item in batch:
            pending[item.partition].append(item)
        for partition, _ in spans:
            pending.setdefault(partition, [])
        outcome = outcome or Outcome()
        for attempt in range(3):
            unknown = [p for p in pending if p not in self._checkpoints]
            if unknown:
                found = await self.store.progress(unknown)
                if any(FROZEN in hashed for hashed in found):
                    raise NamespaceFrozen(f"{self.store.namespace} is frozen for a rebuild")
                for p, hashed in zip(unknown, found, strict=True):
                    self._checkpoints[p] = offsets(hashed)
                    self._stream[p] = int(hashed.get(STREAM, 0))
            fresh: dict[int, Work] = {}
            moved: list[int] = []
            for partition, items in pending.items():
                try:
                    work = await self._fresh(partition, items, spans, outcome)
                except CheckpointMoved as error:
                    log.warning("%s", error)
                    moved.append(partition)
                    continue
                if work.moves:
                    fresh[partition] = work
            if fresh:
                moved += await self._commit(fresh, outcome)
            for partition, items in pending.items():
                if partition not in moved:  # else counted by the attempt that lands
                    landed = fresh[partition].items if partition in fresh else []
                    outcome.redelivered += len(items) - len(landed)
            if not moved:
                return outcome
            log.warning("re-reading partitions %s (attempt %d)", moved, attempt + 1)
            self.forget(moved)
            pending = {partition: pending[partition] for partition in moved}
        raise CheckpointMoved(f"partitions {sorted(pending)}: gave up after 3 attempts")

    async def _fresh(
        self, partition: int, items: list[Positioned], spans: Spans, outcome: Outcome
    ) -> Work:
        """The items past the partition's checkpoints, and where the checkpoints move, once
        any gap before them is filled."""
        done = self._checkpoints[partition]
        topics = dict.fromkeys([i.topic for i in items] + [t for p, t in spans if p == partition])
        for topic in topics:
            new = [i.offset for i in items if i.topic == topic and i.offset > done.get(topic, -1)]
            span = spans.get((partition, topic))
            if span is not None and span.end - 1 <= done.get(topic, -1):
                continue  # nothing past the checkpoint: a redelivery
            if span is not None and span.start is not None:
                first = span.start
            elif new:
                first = min(new)
            else:
                continue
            start = done[topic] + 1 if topic in done else 0
            if first > start:
                await self._fill_gap(Gap(topic, partition, start, first, topic in done), outcome)
        fresh = [i for i in items if i.offset > done.get(i.topic, -1)]
        moves: dict[str, tuple[int | None, int]] = {}
        for i in fresh:
            previous = moves.get(i.topic, (done.get(i.topic), -1))
            moves[i.topic] = (previous[0], max(previous[1], i.offset))
        for (p, topic), span in spans.items():
            if p == partition and span.end - 1 > done.get(topic, -1):
                previous = moves.get(topic, (done.get(topic), -1))
                moves[topic] = (previous[0], max(previous[1], span.end - 1))
        return Work(fresh, moves)

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
        await self.store.mark_refilling(gap.partition, gap.topic, gap.end)
        # The rollups may hold folds of the lost writes that the refill would not touch again.
        if redone := await self.store.refold_after_loss(gap.partition):
            log.warning("partition %d: %d rollup buckets folded again", gap.partition, redone)
        done = self._checkpoints[gap.partition]
        async for chunk in self.fill(gap.topic, gap.partition, gap.start, gap.end):
            outcome.filled += len(chunk)
            work = Work(chunk, {gap.topic: (done.get(gap.topic), max(i.offset for i in chunk))})
            if await self._commit({gap.partition: work}, outcome):
                raise CheckpointMoved(f"partition {gap.partition}: moved during a gap refill")

    async def _commit(self, fresh: dict[int, Work], outcome: Outcome) -> list[int]:
        """Load, plan, publish the facts and commit records that continue the checkpoints of
        their partitions. Returns the partitions whose checkpoint another writer moved
        (nothing of theirs was written or counted).

        The records of every partition load in one round trip. The partitions are then
        planned in up to LANDING_CHUNKS chunks, and each chunk lands (facts published, then
        one round trip for its commits) while the next is planned: Redis and the broker work
        on one chunk while Python plans the next, instead of each waiting for the other.
        Chunks hold different partitions, so they write different keys. Their folds into the
        rollups go once all have landed, a bucket's partitions together (``hold_folds``),
        and with ``overlap_folds`` go on while the next batch comes and is planned, its
        commits waiting for them. Every landing has finished before this returns or raises,
        so a retry never overlaps a commit. A partition whose plan fails, or whose commit
        would take a sum out of range, is then applied event by event where needed
        (``_isolate``). Events beyond the lateness horizon are dead-lettered first and left
        out of the plans."""
        judged = {p: self._judge(p, work) for p, work in fresh.items()}
        await self._send_late(fresh, judged, outcome)
        fresh = {p: _on_time(work, judged[p]) for p, work in fresh.items()}
        stored = await self.store.load(
            {p: {key_of(i.item) for i in work.items} for p, work in fresh.items()}
        )
        now_ms = self.clock()
        partitions = list(fresh)
        size = -(-len(partitions) // LANDING_CHUNKS)
        landings: list[asyncio.Future[tuple[list[int], dict[int, str]]]] = []
        failed: dict[int, str] = {}
        self.store.hold_folds()  # the landings' folds go once, after the last landed
        try:
            for first in range(0, len(partitions), size):
                commits = []
                for partition in partitions[first : first + size]:
                    work = fresh[partition]
                    try:
                        commits.append(
                            self._plan(
                                partition, work, stored[partition], now_ms, judged[partition]
                            )
                        )
                    except Exception as exc:
                        if isinstance(exc, MemoryError):
                            raise
                        failed[partition] = _describe(exc)
                        self._restore_directory(work.items, stored[partition])
                if commits:
                    landings.append(asyncio.ensure_future(self._land(commits, outcome)))
                for _ in range(YIELDS):  # let landings move on: acks in, commits out
                    await asyncio.sleep(0)
        finally:
            results = await asyncio.gather(*landings, return_exceptions=True)
            await self.store.flush_folds(wait=not self.overlap_folds)
        moved: list[int] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            moved += result[0]
            failed.update(result[1])
        for partition, why in failed.items():
            log.warning("partition %d: the batch cannot be applied (%r); isolating", partition, why)
            self._restore_directory(fresh[partition].items, stored[partition])
            if not await self._isolate(
                partition, fresh[partition], stored[partition], judged[partition], outcome
            ):
                moved.append(partition)
        return moved

    def _plan(
        self,
        partition: int,
        work: Work,
        stored: dict[EntityKey, Record],
        now_ms: int,
        judged: Judged,
    ) -> Commit:
        return self._commit_of(
            partition, work.moves, work.items, stored, now_ms, judged, judged.stream_ms
        )

    def _commit_of(
        self,
        partition: int,
        moves: Mapping[str, tuple[int | None, int]],
        items: Sequence[Positioned],
        stored: Mapping[EntityKey, Record],
        now_ms: int,
        judged: Judged,
        stream_ms: int,
    ) -> Commit:
        """``items`` planned over the ``stored`` records, as the commit of ``moves`` that
        leaves the stream time at ``stream_ms``."""
        plan = plan_batch(
            stored,
            [i.item for i in items],
            self.directory,
            self.rules,
            now_ms,
            streams(items, judged),
        )
        return Commit(
            partition,
            moves,
            plan,
            stream_ms,
            late_passed(judged, moves),
            self.rules.lateness_horizon_ms,
        )

    def _judge(self, partition: int, work: Work) -> Judged:
        """The lateness rule over the partition's events of this batch, in offset order."""
        events = [i for i in work.items if not isinstance(i.item, LeadFact)]
        judged = judge(
            self._stream.get(partition, 0),
            sorted((i.offset, i.item.occurred_at_ms) for i in events),  # type: ignore[union-attr]
            self.rules.lateness_horizon_ms,
        )
        judged.topic = events[0].topic if events else ""
        return judged

    async def _send_late(
        self, fresh: Mapping[int, Work], judged: Mapping[int, Judged], outcome: Outcome
    ) -> None:
        """Dead-letter the events too late to apply (each once per projector, however often
        its batch is tried), and wait until the broker has them."""
        horizon = self.rules.lateness_horizon_ms
        late = [
            (i, judged[p].stream_after[i.offset])
            for p, work in fresh.items()
            if judged[p].late  # most batches have none: no pass over their items
            for i in work.items
            if _late(i, judged[p]) and (i.topic, i.partition, i.offset) not in self._late_sent
        ]
        if not late:
            return
        if self.dead_letter is not None:
            await asyncio.gather(
                *(self.dead_letter(i, too_late(i, stream, horizon)) for i, stream in late)
            )
        self._late_sent.update((i.topic, i.partition, i.offset) for i, _ in late)
        outcome.too_late += len(late)
        log.warning(
            "%d event(s) beyond the lateness horizon dead-lettered as too_late, e.g. %s",
            len(late),
            too_late(*late[0], horizon).detail,
        )

    async def _land(
        self, commits: list[Commit], outcome: Outcome
    ) -> tuple[list[int], dict[int, str]]:
        """Publish the facts of some partitions' plans, then commit them; count what landed.
        Returns the partitions whose checkpoint moved, and those whose batch is out of range."""
        facts = [fact for commit in commits for fact in commit.plan.facts]
        if facts:
            await self.publish_facts(facts)
        landed = await self.store.commit(commits)
        outcome.expired += landed.expired
        for commit in commits:
            if commit.partition in landed.moved or commit.partition in landed.out_of_range:
                continue
            done = self._checkpoints[commit.partition]
            for topic, (_, new) in commit.moves.items():
                done[topic] = new
            if commit.stream_ms > self._stream.get(commit.partition, 0):
                self._stream[commit.partition] = commit.stream_ms
            if self._late_sent:
                self._late_sent = {
                    (t, p, o)
                    for t, p, o in self._late_sent
                    if p != commit.partition or o > done.get(t, -1)
                }
            plan = commit.plan
            outcome.applied += plan.applied
            outcome.duplicates += plan.duplicates
            outcome.facts_published += len(plan.facts)
            outcome.facts_applied += plan.facts_applied
            outcome.facts_duplicate += plan.facts_duplicate
        return landed.moved, landed.out_of_range

    async def _isolate(
        self,
        partition: int,
        work: Work,
        stored: dict[EntityKey, Record],
        judged: Judged,
        outcome: Outcome,
    ) -> bool:
        """Apply one partition's batch that cannot be applied whole: halves, then halves of a
        half that fails, in offset order, down to single records, which are dead-lettered as
        unprocessable. False if another writer moved the checkpoint meanwhile."""
        if self.dead_letter is None:
            raise Unprocessable(f"partition {partition}: the batch cannot be applied")
        done = self._checkpoints[partition]
        records = dict(stored)  # as committed so far
        now_ms = self.clock()
        parts = [sorted(work.items, key=lambda i: (i.topic, i.offset))]
        while parts:
            part = parts.pop()
            moves: dict[str, tuple[int | None, int]] = {}
            for i in part:  # a prefix of each topic's items: its last offset is its greatest
                moves[i.topic] = (done.get(i.topic), i.offset)
            events = [i.offset for i in part if not isinstance(i.item, LeadFact)]
            stream = stream_upto(judged, max(events)) if events else None
            why = ""
            try:
                passing = self._commit_of(
                    partition, moves, part, records, now_ms, judged, stream or 0
                )
            except Exception as exc:
                if isinstance(exc, MemoryError):
                    raise
                why = _describe(exc)
            else:
                moved, out_of_range = await self._land([passing], outcome)
                if moved:
                    return False
                why = out_of_range.get(partition, "")
                if not why:
                    records.update(passing.plan.records)  # (one the commit swept is over anyway)
                    continue
            self._restore_directory(part, records)
            if len(part) > 1:
                middle = len(part) // 2
                parts += [part[middle:], part[:middle]]  # the first half is taken first
                continue
            (record,) = part
            log.error(
                "%s[%d]@%d cannot be applied, dead-lettered as unprocessable: %r",
                record.topic,
                record.partition,
                record.offset,
                why,
            )
            await self.dead_letter(record, Rejection(Reason.UNPROCESSABLE, why))
            outcome.unprocessable += 1
            passing = Commit(partition, moves, BatchPlan(), stream or 0, late_passed(judged, moves))
            moved, _ = await self._land([passing], outcome)
            if moved:
                return False
        rest = {
            t: (done.get(t), new) for t, (_, new) in work.moves.items() if new > done.get(t, -1)
        }
        if rest:  # offsets past the last record (late events, offsets that hold no data)
            passing = Commit(
                partition, rest, BatchPlan(), judged.stream_ms, late_passed(judged, rest)
            )
            moved, _ = await self._land([passing], outcome)
            if moved:
                return False
        return True

    def _restore_directory(
        self, items: Iterable[Positioned], records: Mapping[EntityKey, Record]
    ) -> None:
        """Forget what a plan that did not land taught the directory: the rep and team
        records it touched are taken again as they are committed."""
        for i in items:
            key = key_of(i.item)
            if key[0] in ("rep", "team"):
                self.directory.update(key, records.get(key, {}))


def streams(items: Sequence[Positioned], judged: Judged) -> list[int]:
    """Beside each item, the stream time before it (a lead fact moves none: 0)."""
    before = judged.stream_before
    return [0 if isinstance(i.item, LeadFact) else before[i.offset] for i in items]


def _on_time(work: Work, judged: Judged) -> Work:
    """``work`` without its events too late to apply."""
    if not judged.late:
        return work
    return Work([i for i in work.items if not _late(i, judged)], work.moves)


def _late(i: Positioned, judged: Judged) -> bool:
    return not isinstance(i.item, LeadFact) and i.offset in judged.late


def too_late(record: Positioned, stream_ms: int, horizon_ms: int) -> Rejection:
    """Why an event is too late: its time, the stream time it was behind, the horizon."""
    at = record.item.occurred_at_ms if not isinstance(record.item, LeadFact) else 0
    return Rejection(
        Reason.TOO_LATE,
        f"occurred_at {_iso(at)} is more than {horizon_ms // 1000}s behind partition "
        f"{record.partition}'s stream time {_iso(stream_ms)} (the lateness horizon)",
    )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _describe(error: BaseException) -> str:
    """An error as the one line a dead letter carries."""
    return described(error)[:500]
