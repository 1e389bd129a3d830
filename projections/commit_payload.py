"""What one partition's commit sends to Redis: the keys its script touches and its one JSON
argument, built from the batch's plan (COMMIT_LUA in projections/store.py reads them), and
how the store names its keys.

Pure, and compiled with the planner (projections/__init__.py): building the argument was
about 9 % of a worker's CPU end to end (benchmarks/RESULTS.md, stops 37 and 38).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import orjson

from projections.engine import AggregateKey, EntityKey
from projections.stores import DIRTY_SEP, Commit, DirtyMark
from projections.windows import stored_ttl_seconds

# Rollups (docs/projections.md "Rollups"): the shards scopes are spread over (a Redis Cluster
# spreads their slots over its masters; changing the number needs a rebuild), the pseudo
# bucket of a scope's oldest untouched lead, and how long (in versions, i.e. ms of commits)
# the marks a fold may have to redo are kept: a Redis that loses writes loses seconds of
# them, and the worker looks for what is missing every 5 s and at every assignment.
ROLLUP_SHARDS = 16
OLDEST = "!u"
REFOLD_WINDOW_MS = 2 * 60 * 1000
# Records a commit deletes at most (the rest go with the next ones): keeps a commit short
# when the stream time jumps, e.g. at the end of a backfill's gap.
SWEEP = 2_000

# What a commit's script is called with: its keys, its argument, the marks of the values it
# answers (buckets, then untouched sets) and the shards of the versions it answers.
CommitCall = tuple[list[str], bytes, list[DirtyMark], list[int]]


def shard_of(scope: str, scope_id: str) -> int:
    """The rollup shard of a scope (the same in every process: CRC-32, not ``hash``)."""
    return zlib.crc32(f"{scope}:{scope_id}".encode()) % ROLLUP_SHARDS


@dataclass(frozen=True)
class Keys:
    """The names of a namespace generation's keys. Every key of a partition carries the
    partition's hash tag, and every key of a rollup shard the shard's, so that a script's
    keys are in one slot of a Redis Cluster."""

    namespace: str

    def tag(self, partition: int) -> str:
        return f"{{{self.namespace}:p{partition}}}"

    def entity(self, partition: int, key: EntityKey) -> str:
        return f"{self.tag(partition)}:e:{key[0]}:{key[1]}"

    def aggregate(self, partition: int, key: AggregateKey) -> str:
        return f"{self.tag(partition)}:a:{key[0]}:{key[1]}:{key[2]}"

    def checkpoint(self, partition: int) -> str:
        return f"{self.tag(partition)}:ckpt"

    def directory(self, partition: int) -> str:
        return f"{self.tag(partition)}:dir"

    def untouched(self, partition: int, scope: tuple[str, str]) -> str:
        return f"{self.tag(partition)}:u:{scope[0]}:{scope[1]}"

    def expect(self, partition: int) -> str:
        return f"{self.tag(partition)}:expect"

    def recent(self, partition: int) -> str:
        return f"{self.tag(partition)}:recent"

    def expiry(self, partition: int) -> str:
        """The partition's records of EXPIRING kinds, scored by their latest event time."""
        return f"{self.tag(partition)}:expiry"

    def bucket(self, partition: int, mark: DirtyMark) -> str:
        """The partition's key behind a mark: an aggregate bucket, or for ``!u`` the scope's
        untouched-lead set."""
        if mark[2] == OLDEST:
            return self.untouched(partition, (mark[0], mark[1]))
        return self.aggregate(partition, mark)

    def shard(self, shard: int) -> str:
        return f"{{{self.namespace}:r{shard}}}"

    def total(self, mark: DirtyMark) -> str:
        return f"{self.shard(shard_of(mark[0], mark[1]))}:t:{mark[0]}:{mark[1]}:{mark[2]}"

    def shares(self, mark: DirtyMark) -> str:
        return f"{self.shard(shard_of(mark[0], mark[1]))}:s:{mark[0]}:{mark[1]}:{mark[2]}"

    def folded(self, shard: int, partition: int) -> str:
        return f"{self.shard(shard)}:v:{partition}"

    def shard_keys(self, shard: int) -> list[str]:
        """KEYS[1..3] of FOLD_LUA: the shard's dirty marks, scopes and seen versions."""
        tag = self.shard(shard)
        return [f"{tag}:dirty", f"{tag}:scopes", f"{tag}:seen"]


def commit_call(keys: Keys, commit: Commit, now_ms: int) -> CommitCall:
    """The keys and the JSON argument of COMMIT_LUA for one partition's batch, and what its
    answer lists: the marks of its values (buckets, then untouched sets) and the shards of
    its previous versions. A key is listed once; the argument names keys by their place in
    the list (from 1, as Lua counts)."""
    partition, moves, plan = commit.partition, commit.moves, commit.plan
    listed = [keys.checkpoint(partition)]
    index: dict[str, int] = {}

    def ref(key: str) -> int:
        place = index.get(key)
        if place is None:
            listed.append(key)
            place = index[key] = len(listed)
        return place

    replaced = [ref(keys.entity(partition, entity)) for entity in plan.replaced]
    records: list[list[object]] = []
    members: list[list[object]] = []
    directory_changed = 0
    for entity, changed in plan.changed_fields.items():
        row: list[object] = [ref(keys.entity(partition, entity))]
        for name, value in changed.items():
            row.append(name)
            row.append(value)
        records.append(row)
        if entity[0] == "rep" or entity[0] == "team":
            members.append([ref(keys.directory(partition)), f"{entity[0]}:{entity[1]}"])
            directory_changed = 1
    deltas: list[list[object]] = []
    ttls: list[list[int]] = []
    bucket_ttls: dict[str, int] = {}  # a batch writes few buckets, of many scopes
    for aggregate, fields in plan.deltas.items():
        # Each aggregate key is distinct, and names no other kind of key: listed as is.
        listed.append(keys.aggregate(partition, aggregate))
        place = len(listed)
        # Integers: cjson reads them as doubles, exact to 2**53 (90 trillion in minor units).
        row = [place]
        for name, change in fields.items():
            row.append(name)
            row.append(change)
        deltas.append(row)
        bucket = aggregate[2]
        ttl = bucket_ttls.get(bucket)
        if ttl is None:
            ttl = bucket_ttls[bucket] = stored_ttl_seconds(bucket, now_ms)
        if ttl:
            ttls.append([place, ttl])
    adds: list[list[object]] = []
    for owner, leads in plan.untouched_add.items():
        place = ref(keys.untouched(partition, owner))
        for lead, since in leads.items():
            adds.append([place, str(since), lead])
    removes: list[list[object]] = []
    for owner, gone in plan.untouched_remove.items():
        place = ref(keys.untouched(partition, owner))
        for lead in gone:
            removes.append([place, lead])
    checkpoints = [
        [topic, "" if expected is None else str(expected), str(new)]
        for topic, (expected, new) in moves.items()
    ]
    untouched = sorted({*plan.untouched_add, *plan.untouched_remove})
    marks: list[DirtyMark] = [*plan.deltas, *((s, i, OLDEST) for s, i in untouched)]
    shards = sorted({shard_of(m[0], m[1]) for m in marks})
    expect, recent = ref(keys.expect(partition)), ref(keys.recent(partition))
    expiry = ref(keys.expiry(partition))
    payload = orjson.dumps(
        {
            "c": checkpoints,
            "newest": str(plan.newest_ms),
            "stream": str(commit.stream_ms),
            "late": str(commit.too_late),
            "now": str(now_ms),
            "applied": str(plan.applied),
            "dir": directory_changed,
            "h": records,
            "d": deltas,
            "t": ttls,
            "s": members,
            "za": adds,
            "zr": removes,
            "u": [index[keys.untouched(partition, u)] for u in untouched],
            "x": [str(shard) for shard in shards],
            "xk": expect,
            "r": [DIRTY_SEP.join(m) for m in marks],
            "rk": recent,
            "keep": REFOLD_WINDOW_MS,
            "rd": replaced,
            "e": [[f"{kind}:{ident}", last] for (kind, ident), last in plan.expiring.items()],
            # A record that started anew and no longer ends (a deal reopened): out.
            "ue": [f"{k}:{i}" for k, i in plan.replaced if (k, i) not in plan.expiring],
            "ek": expiry,
            "ep": f"{keys.tag(partition)}:e:",
            "hz": commit.horizon_ms,
            "sweep": SWEEP,
        }
    )
    return listed, payload, marks, shards
