"""What the projector, the readers and the KPI publisher need of a projection store.

``ProjectionStore`` is the interface; ``projections.store.RedisStore`` is the store the
engine runs on and ``projections.memory_store.MemoryStore`` its in-memory twin, for tests
that exercise the projector's logic without a server. One contract test suite
(``tests/contract/test_store_contract.py``) runs against both.

A store holds one namespace generation (``salespulse:g1``...) of projections, split by
partition: per partition, entity records, aggregate buckets (integers), a checkpoint hash
(offsets per topic and bookkeeping fields, below), the directory's members, the scopes
seen, the open untouched leads of each scope and the dirty marks the KPI publisher reads.
Reads are over every partition of the generation (the Redis store answers them from
rollups its commits fold, projections/store.py).
Pure: the types, errors and rules every implementation shares.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from projections.contributions import Rules
from projections.engine import GAUGE_BUCKET, BatchPlan, DirectoryView, EntityKey

# Fields of a partition's checkpoint hash beside the topics' offsets.
FROZEN = "!frozen"  # the generation is being replaced by a rebuild (namespaces.py)
REFILL = "!refill:"  # per topic, while a gap is refilled: the offset that ends it
NEWEST = "!newest_ms"  # occurred_at of the newest event applied
STREAM = "!stream_ms"  # the partition's stream time (projections/lateness.py)
TOO_LATE = "!too_late"  # events passed as beyond the lateness horizon (dead-lettered)
COMMITTED = "!committed_ms"  # wall time of the last commit
APPLIED = "!applied"  # distinct events applied
DIRECTORY_VERSION = "!directory"  # moves whenever a rep or team record of the partition does
VERSION = "!version"  # of the last commit, for the rollups' folds (projections/store.py)

# Buckets whose changes the KPI publisher announces (calendar, all-time, gauges): each change
# counts a mark per bucket, "scope<TAB>id<TAB>bucket" -> changes.
DIRTY_TIERS = frozenset("DWMQYA" + GAUGE_BUCKET)
DIRTY_SEP = "\t"

EXACT = 2**53  # every sum, and so every change, stays strictly inside -EXACT .. EXACT


class CheckpointMoved(RuntimeError):
    """Another writer committed this partition since the batch was planned."""


class NamespaceFrozen(RuntimeError):
    """A rebuild froze this generation: wait for the switch, then write to the new one."""


@dataclass
class Landed:
    """What ``commit`` did not write: partitions whose checkpoint another writer moved
    first, and partitions whose batch would take a sum out of range (why, per partition);
    and how many expired records it deleted."""

    moved: list[int] = field(default_factory=list)
    out_of_range: dict[int, str] = field(default_factory=dict)
    expired: int = 0  # records over by the lateness horizon that the commits deleted


@dataclass(frozen=True, slots=True)
class Commit:
    """One partition's planned batch and the checkpoint moves it makes, topic -> (the
    offset it was planned from, or None for none; the new offset)."""

    partition: int
    moves: Mapping[str, tuple[int | None, int]]
    plan: BatchPlan
    stream_ms: int = 0  # the stream time once the moves are passed (0: unchanged)
    too_late: int = 0  # events the moves pass that were too late (dead-lettered, not applied)
    # The lateness horizon: records of EXPIRING kinds whose LAST is more than this behind the
    # partition's stream time are over and may go (0: none goes).
    horizon_ms: int = 0


DirtyMark = tuple[str, str, str]  # scope, id, bucket


class ProjectionStore(Protocol):
    """One namespace generation of the projections. Every method takes the partitions it
    concerns; a multi-partition call is one round trip where the store has round trips."""

    @property
    def namespace(self) -> str: ...

    async def commit(self, commits: Sequence[Commit]) -> Landed:
        """Write planned batches, each atomically with the move of its checkpoints (expected
        -> new): records, bucket deltas (a field reaching 0 is dropped), directory members,
        scopes, untouched leads, dirty marks and the bookkeeping fields. A partition whose
        checkpoint moved, or whose sums would leave -(2^53 - 1) .. 2^53 - 1, writes nothing
        and is named in the answer; NamespaceFrozen, after the other partitions, when a
        rebuild froze one."""
        ...

    async def load(
        self, wanted: Mapping[int, Iterable[EntityKey]]
    ) -> dict[int, dict[EntityKey, dict[str, str]]]:
        """The stored records of some entities per partition (a missing one is left out)."""
        ...

    async def checkpoints(self, partition: int) -> dict[str, int]:
        """The last applied offset of each topic of a partition."""
        ...

    async def checkpoints_of(self, partitions: Sequence[int]) -> list[dict[str, int]]: ...

    async def progress(self, partitions: Sequence[int]) -> list[dict[str, str]]:
        """Each partition's whole checkpoint hash, offsets and bookkeeping fields, as text."""
        ...

    async def mark_refilling(self, partition: int, topic: str, end: int) -> None:
        """Offsets up to ``end`` (exclusive) are being applied again; the commit that reaches
        ``end - 1`` clears the mark. NamespaceFrozen when a rebuild froze the generation."""
        ...

    async def freeze(self, partitions: Iterable[int]) -> None:
        """Refuse every later commit and mark of these partitions (a rebuild replaces them)."""
        ...

    async def directory_versions(self, partitions: Sequence[int]) -> list[int]: ...

    async def directory_records(
        self, partitions: Sequence[int]
    ) -> dict[EntityKey, dict[str, str]]: ...

    async def directory(self, partitions: Sequence[int], rules: Rules) -> DirectoryView: ...

    async def oldest_untouched(self, scopes: Sequence[tuple[str, str]]) -> list[int | None]:
        """Creation time (ms) of each scope's oldest open, untouched lead, if any."""
        ...

    async def dirty(self) -> list[dict[DirtyMark, int]]:
        """The publisher's marks, in groups (the Redis store's rollup shards)."""
        ...

    async def clear_dirty(self, group: int, seen: Mapping[DirtyMark, int]) -> None:
        """Forget the marks of a group still at the count they were read with."""
        ...

    async def scopes(self) -> set[tuple[str, str]]:
        """Every (scope, id) with aggregates, beside the org."""
        ...

    async def has_scope(self, scope: str, scope_id: str) -> bool:
        """Whether (scope, id) has aggregates (without listing every scope)."""
        ...

    async def sums(
        self, scope: str, scope_id: str, bucket_ids: Sequence[str]
    ) -> dict[str, int]: ...

    async def sums_many(
        self, requests: Sequence[tuple[str, str, tuple[str, ...]]]
    ) -> list[dict[str, int]]:
        """Base fields of each (scope, id, buckets), summed over buckets and partitions."""
        ...

    async def unfolded(self, partitions: Sequence[int], grace_ms: int = 0) -> int:
        """Commits of these partitions that reads do not show yet (0: they show every one),
        leaving out those of the last ``grace_ms`` (their fold may be on its way)."""
        ...

    async def fold_missing(self, partitions: Sequence[int], grace_ms: int = 0) -> int:
        """Bring every commit of these partitions into what reads show (after a crash, a
        failed call, a failover); returns how much was redone."""
        ...

    async def refold_after_loss(self, partition: int) -> int:
        """The partition lost its last writes: undo what reads still show of them."""
        ...

    def hold_folds(self) -> None:
        """Until ``flush_folds``, commits land without bringing their changes into what
        reads show: a batch's landings then fold once, each mark's partitions together."""
        ...

    async def flush_folds(self, *, wait: bool = True) -> None:
        """Bring what the commits since ``hold_folds`` changed into what reads show, and
        stop holding (a fold that fails is redone before the next commit, as in ``commit``).
        With ``wait`` false, return once the fold is on its way: the next commit, flush,
        ``fold_missing`` or ``refold_after_loss`` of this store waits for it first."""
        ...

    async def settle_folds(self) -> None:
        """Wait for a fold ``flush_folds`` left on its way (raises what it raised, but for
        Redis being away: that fold is then redone before the next commit)."""
        ...


class PublisherState(Protocol):
    """What the KPI publisher keeps beside the projections (docs/kpi-topic.md): its lease (one
    active publisher) and, per window instance, the last state it published of each key."""

    async def live_store(self, prefix: str) -> ProjectionStore:
        """The store of the live generation (nothing is created when there is none yet)."""
        ...

    async def hold_lease(self, prefix: str, token: str, lease_ms: int) -> bool:
        """Take the lease, or renew it when ``token`` holds it; False when another does."""
        ...

    async def last_values(self, fields: Sequence[tuple[str, str]]) -> list[bytes | None]:
        """The stored value of each (state hash, key), in order (None where there is none)."""
        ...

    async def remember(
        self, values: Mapping[str, Mapping[str, bytes]], ttl_seconds: Mapping[str, int]
    ) -> None:
        """Store the values of some state hashes; a hash with a TTL expires with its buckets."""
        ...


class DerivedReads(ABC):
    """The reads every store answers the same way from its own primitives."""

    @abstractmethod
    async def progress(self, partitions: Sequence[int]) -> list[dict[str, str]]: ...

    @abstractmethod
    async def sums_many(
        self, requests: Sequence[tuple[str, str, tuple[str, ...]]]
    ) -> list[dict[str, int]]: ...

    @abstractmethod
    async def directory_records(
        self, partitions: Sequence[int]
    ) -> dict[EntityKey, dict[str, str]]: ...

    async def checkpoints(self, partition: int) -> dict[str, int]:
        (found,) = await self.checkpoints_of([partition])
        return found

    async def checkpoints_of(self, partitions: Sequence[int]) -> list[dict[str, int]]:
        return [offsets(stored) for stored in await self.progress(partitions)]

    async def sums(self, scope: str, scope_id: str, bucket_ids: Sequence[str]) -> dict[str, int]:
        (total,) = await self.sums_many([(scope, scope_id, tuple(bucket_ids))])
        return total

    async def directory(self, partitions: Sequence[int], rules: Rules) -> DirectoryView:
        return DirectoryView(await self.directory_records(partitions), rules)


T = TypeVar("T")


class SharedRead(Generic[T]):
    """One read for many concurrent callers. A caller takes the read in flight if it started
    at most ``max_age`` seconds before the call, else joins the read queued to start once the
    one in flight is done: what it gets was read at most ``max_age`` before it asked (0:
    after). Twenty readers at once cost one or two reads, not twenty."""

    def __init__(self, max_age: float = 0.0) -> None:
        self.max_age = max_age
        self._running: asyncio.Future[T] | None = None
        self._since = 0.0  # when the read in flight (or last done) started, monotonic
        self._queued: asyncio.Future[T] | None = None

    async def get(self, read: Callable[[], Awaitable[T]]) -> T:
        running = self._running
        if (
            running is not None
            and time.monotonic() - self._since <= self.max_age
            and not (running.done() and (running.cancelled() or running.exception()))
        ):
            return await asyncio.shield(running)
        if self._queued is None:
            self._queued = asyncio.ensure_future(self._after(running, read))
        return await asyncio.shield(self._queued)

    async def _after(
        self, running: asyncio.Future[T] | None, read: Callable[[], Awaitable[T]]
    ) -> T:
        if running is not None:
            await asyncio.wait([running])
        self._running, self._queued = self._queued, None
        self._since = time.monotonic()
        return await read()


class DirectoryCache:
    """A reader's directory, read again only when it changed. Every use compares each
    partition's directory version (a field of its checkpoint, moved by every commit that
    changes a rep or team record, one round trip for all partitions); any change, another
    namespace (a rebuild switched) or other partitions read the whole directory again. The
    versions are read before the records, so the view is never older than they say."""

    def __init__(self, rules: Rules, max_age: float = 0.0) -> None:
        self.rules = rules
        self.max_age = max_age  # how old a version read may be (SharedRead)
        self._seen: tuple[str, tuple[int, ...], tuple[int, ...]] | None = None
        self._view: DirectoryView | None = None
        self._loading = asyncio.Lock()
        self._versions: dict[tuple[str, tuple[int, ...]], SharedRead[list[int]]] = {}

    async def view(self, store: ProjectionStore, partitions: Sequence[int]) -> DirectoryView:
        which = (store.namespace, tuple(partitions))
        if which not in self._versions:  # the first, or a rebuild switched
            self._versions = {which: SharedRead(self.max_age)}
        shared = self._versions[which]
        versions = await shared.get(lambda: store.directory_versions(partitions))
        seen = (*which, tuple(versions))
        if seen != self._seen or self._view is None:
            async with self._loading:  # concurrent readers wait for one load
                if seen != self._seen or self._view is None:
                    self._view = await store.directory(partitions, self.rules)
                    self._seen = seen
        return self._view


def change_out_of_range(plan: BatchPlan) -> tuple[str, str] | None:
    """(bucket, field) of a change no sum can take and stay exact, if the plan has one: a
    batch of many maximal amounts sums past what a reader carries exactly."""
    for (scope, scope_id, bucket), fields in plan.deltas.items():
        for name, change in fields.items():
            if not -EXACT < change < EXACT:
                return f"{scope}:{scope_id}:{bucket}", name
    return None


def offsets(stored: Mapping[str, str]) -> dict[str, int]:
    """The topics' offsets of a checkpoint hash (its other fields start with ``!``)."""
    return {topic: int(offset) for topic, offset in stored.items() if not topic.startswith("!")}
