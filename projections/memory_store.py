"""The in-memory twin of the Redis store: the same contract (``projections.stores``), kept in
dicts, for tests that run the projector, the readers and the publisher without a server.

A ``MemoryBackend`` plays the Redis server: stores made on the same backend and namespace
see the same data, as processes sharing one Redis do. What it does not model: bucket TTLs
(minute and hour buckets are never expired here), and persistence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from projections.engine import LAST, AggregateKey, EntityKey, can_end, compacted, swept
from projections.stores import (
    APPLIED,
    COMMITTED,
    DIRECTORY_VERSION,
    DIRTY_TIERS,
    EXACT,
    FROZEN,
    NEWEST,
    REFILL,
    STREAM,
    TOO_LATE,
    Commit,
    DerivedReads,
    DirtyMark,
    Landed,
    NamespaceFrozen,
    change_out_of_range,
)
from projections.windows import derived_buckets


@dataclass
class _Partition:
    checkpoint: dict[str, str] = field(default_factory=dict)
    records: dict[EntityKey, dict[str, str]] = field(default_factory=dict)
    buckets: dict[AggregateKey, dict[str, int]] = field(default_factory=dict)
    members: set[EntityKey] = field(default_factory=set)  # rep and team records
    scopes: set[tuple[str, str]] = field(default_factory=set)
    untouched: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    # The rollups' totals derived from minutes, hours and local days
    # (windows.derived_buckets): apart from the buckets, whose range the commit keeps, as
    # Redis keeps them apart from a partition's own hour, day, week... buckets.
    derived: dict[AggregateKey, dict[str, int]] = field(default_factory=dict)


class MemoryBackend:
    """The shared "server": namespace -> partition -> its data; the live generation of each
    prefix; the KPI publisher's lease and state hashes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.namespaces: dict[str, dict[int, _Partition]] = {}
        self.live: dict[str, str] = {}  # prefix -> namespace (none: <prefix>:g1)
        self.leases: dict[str, tuple[str, float]] = {}  # prefix -> holder, until (clock)
        self.hashes: dict[str, dict[str, bytes]] = {}
        self.dirty: dict[str, dict[DirtyMark, int]] = {}  # namespace -> the publisher's marks
        self.clock = clock

    def partition(self, namespace: str, partition: int) -> _Partition:
        return self.namespaces.setdefault(namespace, {}).setdefault(partition, _Partition())


class MemoryStore(DerivedReads):
    """``ProjectionStore`` in memory. Every call is atomic (nothing else runs in between)."""

    def __init__(self, backend: MemoryBackend, namespace: str) -> None:
        self.backend = backend
        self._namespace = namespace

    @property
    def namespace(self) -> str:
        return self._namespace

    def _p(self, partition: int) -> _Partition:
        return self.backend.partition(self._namespace, partition)

    async def commit(self, commits: Sequence[Commit]) -> Landed:
        landed = Landed()
        frozen = False
        for commit in commits:
            found = change_out_of_range(commit.plan)
            if found is not None:
                landed.out_of_range[commit.partition] = (
                    f"a change of {found[1]!r} in {found[0]!r} would leave the exact range"
                )
                continue
            part = self._p(commit.partition)
            if FROZEN in part.checkpoint:
                frozen = True
                continue
            if any(
                part.checkpoint.get(topic, "") != ("" if expected is None else str(expected))
                for topic, (expected, _) in commit.moves.items()
            ):
                landed.moved.append(commit.partition)
                continue
            bad = _apply_deltas(part, commit)
            if bad is not None:
                landed.out_of_range[commit.partition] = bad
                continue
            landed.expired += _write(
                part, commit, self.backend.dirty.setdefault(self._namespace, {})
            )
        if frozen:
            raise NamespaceFrozen(f"{self._namespace} is frozen for a rebuild")
        return landed

    async def load(
        self, wanted: Mapping[int, Iterable[EntityKey]]
    ) -> dict[int, dict[EntityKey, dict[str, str]]]:
        out: dict[int, dict[EntityKey, dict[str, str]]] = {}
        for partition, keys in wanted.items():
            records = self._p(partition).records
            out[partition] = {key: dict(records[key]) for key in keys if records.get(key)}
        return out

    async def progress(self, partitions: Sequence[int]) -> list[dict[str, str]]:
        return [dict(self._p(p).checkpoint) for p in partitions]

    async def mark_refilling(self, partition: int, topic: str, end: int) -> None:
        checkpoint = self._p(partition).checkpoint
        if FROZEN in checkpoint:
            raise NamespaceFrozen(f"{self._namespace} is frozen for a rebuild")
        checkpoint[REFILL + topic] = str(end)

    async def freeze(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._p(partition).checkpoint[FROZEN] = "1"

    async def directory_versions(self, partitions: Sequence[int]) -> list[int]:
        return [int(self._p(p).checkpoint.get(DIRECTORY_VERSION, 0)) for p in partitions]

    async def directory_records(self, partitions: Sequence[int]) -> dict[EntityKey, dict[str, str]]:
        out = {}
        for partition in partitions:
            part = self._p(partition)
            for key in part.members:
                out[key] = dict(part.records.get(key, {}))
        return out

    def _all(self) -> list[_Partition]:
        return list(self.backend.namespaces.get(self._namespace, {}).values())

    async def oldest_untouched(self, scopes: Sequence[tuple[str, str]]) -> list[int | None]:
        out: list[int | None] = []
        for scope in scopes:
            found = [min(leads.values()) for p in self._all() if (leads := p.untouched.get(scope))]
            out.append(min(found) if found else None)
        return out

    async def dirty(self) -> list[dict[DirtyMark, int]]:
        return [dict(self.backend.dirty.get(self._namespace, {}))]

    async def clear_dirty(self, group: int, seen: Mapping[DirtyMark, int]) -> None:
        marks = self.backend.dirty.get(self._namespace, {})
        for mark, count in seen.items():
            if marks.get(mark) == count:
                del marks[mark]

    async def scopes(self) -> set[tuple[str, str]]:
        return {scope for p in self._all() for scope in p.scopes}

    async def has_scope(self, scope: str, scope_id: str) -> bool:
        return any((scope, scope_id) in p.scopes for p in self._all())

    # Reads sum the partitions themselves: nothing to fold.
    async def unfolded(self, partitions: Sequence[int], grace_ms: int = 0) -> int:
        return 0

    async def fold_missing(self, partitions: Sequence[int], grace_ms: int = 0) -> int:
        return 0

    async def refold_after_loss(self, partition: int) -> int:
        return 0

    def hold_folds(self) -> None:
        pass

    async def flush_folds(self, *, wait: bool = True) -> None:
        pass

    async def settle_folds(self) -> None:
        pass

    async def sums_many(
        self, requests: Sequence[tuple[str, str, tuple[str, ...]]]
    ) -> list[dict[str, int]]:
        totals = []
        for scope, scope_id, bucket_ids in requests:
            total: dict[str, int] = {}
            for part in self._all():
                for bucket in bucket_ids:
                    key = (scope, scope_id, bucket)
                    for found in (part.buckets.get(key, {}), part.derived.get(key, {})):
                        for name, value in found.items():
                            total[name] = total.get(name, 0) + value
            totals.append(total)
        return totals


def _apply_deltas(part: _Partition, commit: Commit) -> str | None:
    """Add the plan's deltas, all or none: why not, when a sum would leave the exact range."""
    sums: dict[tuple[AggregateKey, str], int] = {}
    for aggregate, fields in commit.plan.deltas.items():
        bucket = part.buckets.get(aggregate, {})
        for name, change in fields.items():
            total = bucket.get(name, 0) + change
            if not -EXACT < total < EXACT:
                where = ":".join(aggregate)
                return (
                    f"the sum of {name!r} in {where!r} would leave the exact range of "
                    "-(2^53 - 1) .. 2^53 - 1"
                )
            sums[(aggregate, name)] = total
    for (aggregate, name), total in sums.items():
        _put(part.buckets, aggregate, name, total)
    # The derived totals have no range to keep (Python integers; Redis's are exact too).
    for (owner, owner_id, written), fields in commit.plan.deltas.items():
        for longer in derived_buckets(written):
            derived = part.derived.get((owner, owner_id, longer), {})
            for name, change in fields.items():
                total = derived.get(name, 0) + change
                _put(part.derived, (owner, owner_id, longer), name, total)
    return None


def _put(
    buckets: dict[AggregateKey, dict[str, int]], aggregate: AggregateKey, name: str, total: int
) -> None:
    bucket = buckets.setdefault(aggregate, {})
    if total:
        bucket[name] = total
    else:
        bucket.pop(name, None)
        if not bucket:
            del buckets[aggregate]


def _write(part: _Partition, commit: Commit, dirty: dict[DirtyMark, int]) -> int:
    """Everything but the deltas, once they are in; returns how many records expired (leads
    over by the horizon are compacted, not counted)."""
    plan = commit.plan
    directory_changed = False
    for entity in plan.replaced:
        part.records.pop(entity, None)
    for entity, changed in plan.changed_fields.items():
        part.records.setdefault(entity, {}).update(changed)
        if entity[0] in ("rep", "team"):
            part.members.add(entity)
            directory_changed = True
    part.scopes |= {(a[0], a[1]) for a in plan.deltas if a[0] != "org"}
    for owner, owner_id, written in plan.deltas:
        longer = derived_buckets(written)
        for mark in ((owner, owner_id, written), *((owner, owner_id, b) for b in longer)):
            if mark[2][0] in DIRTY_TIERS:
                dirty[mark] = dirty.get(mark, 0) + 1
    for scope, leads in plan.untouched_add.items():
        part.untouched.setdefault(scope, {}).update(leads)
    for scope, gone in plan.untouched_remove.items():
        kept = part.untouched.get(scope, {})
        for lead in gone:
            kept.pop(lead, None)
        if not kept:
            part.untouched.pop(scope, None)
    checkpoint = part.checkpoint
    for topic, (_, new) in commit.moves.items():
        checkpoint[topic] = str(new)
        refill = checkpoint.get(REFILL + topic)
        if refill is not None and new >= int(refill) - 1:
            del checkpoint[REFILL + topic]
    if plan.newest_ms > int(checkpoint.get(NEWEST, "0")):
        checkpoint[NEWEST] = str(plan.newest_ms)
    if commit.stream_ms > int(checkpoint.get(STREAM, "0")):
        checkpoint[STREAM] = str(commit.stream_ms)
    expired = 0
    if commit.horizon_ms and STREAM in checkpoint:
        cut = int(checkpoint[STREAM]) - commit.horizon_ms
        for entity, record in list(part.records.items()):
            if swept(entity[0], record) and int(record[LAST]) < cut:
                if can_end(entity[0], record):
                    del part.records[entity]
                    expired += 1
                else:
                    part.records[entity] = compacted(record)
    if commit.too_late:
        checkpoint[TOO_LATE] = str(int(checkpoint.get(TOO_LATE, "0")) + commit.too_late)
    checkpoint[COMMITTED] = str(time.time_ns() // 1_000_000)
    if plan.applied > 0:
        checkpoint[APPLIED] = str(int(checkpoint.get(APPLIED, "0")) + plan.applied)
    if directory_changed:
        checkpoint[DIRECTORY_VERSION] = str(int(checkpoint.get(DIRECTORY_VERSION, "0")) + 1)
    return expired


class MemoryPublisherState:
    """``PublisherState`` in memory (state hashes never expire here)."""

    def __init__(self, backend: MemoryBackend) -> None:
        self.backend = backend

    async def live_store(self, prefix: str) -> MemoryStore:
        return MemoryStore(self.backend, self.backend.live.get(prefix, f"{prefix}:g1"))

    async def hold_lease(self, prefix: str, token: str, lease_ms: int) -> bool:
        now = self.backend.clock()
        holder = self.backend.leases.get(prefix)
        if holder is not None and holder[0] != token and holder[1] > now:
            return False
        self.backend.leases[prefix] = (token, now + lease_ms / 1000)
        return True

    async def last_values(self, fields: Sequence[tuple[str, str]]) -> list[bytes | None]:
        return [self.backend.hashes.get(name, {}).get(key) for name, key in fields]

    async def remember(
        self, values: Mapping[str, Mapping[str, bytes]], ttl_seconds: Mapping[str, int]
    ) -> None:
        for name, fields in values.items():
            self.backend.hashes.setdefault(name, {}).update(fields)
