"""The Redis table store: records, aggregate buckets, checkpoints; the one module using Redis.

Key layout (``ns`` is the namespace generation, e.g. ``salespulse:g1``):

* ``{ns:pN}:e:<kind>:<id>``: the record of one entity of partition N (a hash);
* ``{ns:pN}:a:<scope>:<id>:<bucket>``: partition N's share of one aggregate bucket
  (a hash of base fields, integers);
* ``{ns:pN}:ckpt``: the last applied offset per topic of partition N;
* ``{ns:pN}:dir``: the rep and team records of partition N (a set of ``kind:id``).

Every key of a partition shares the hash tag ``{ns:pN}``, so one batch's
commit (records + deltas + checkpoint) is a single-slot Lua call that also
runs on Redis Cluster. Readers sum an aggregate over the partitions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from projections.engine import (
    GAUGE_BUCKET,
    AggregateKey,
    BatchPlan,
    DirectoryView,
    EntityKey,
)
from projections.windows import TIER_TTL_SECONDS

log = logging.getLogger(__name__)

# Atomically: check the partition's checkpoint is what the plan was made from, write the
# records, add the deltas (dropping fields that reach 0), set TTLs of new buckets, and move
# the checkpoint. Returns {1, new} or {0, actual} when another writer moved it first.
COMMIT_LUA = """
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if current ~= ARGV[2] then return {0, current} end
local p = cjson.decode(ARGV[4])
for _, h in ipairs(p.h) do redis.call('HSET', KEYS[h[1]], unpack(h[2])) end
for _, d in ipairs(p.d) do
  if redis.call('HINCRBY', KEYS[d[1]], d[2], d[3]) == 0 then
    redis.call('HDEL', KEYS[d[1]], d[2])
  end
end
for _, t in ipairs(p.t) do redis.call('EXPIRE', KEYS[t[1]], t[2], 'NX') end
for _, s in ipairs(p.s) do redis.call('SADD', KEYS[s[1]], s[2]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {1, ARGV[3]}
"""


def connect(url: str) -> aioredis.Redis:
    """A client that retries connection errors with exponential backoff (redis-py's own Retry)."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), 6),
        retry_on_error=[ConnectionError, TimeoutError],
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


class CheckpointMoved(RuntimeError):
    """Another writer committed this partition since the batch was planned."""


@dataclass(frozen=True)
class Keys:
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


class Store:
    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.keys = Keys(namespace)
        self._commit = client.register_script(COMMIT_LUA)

    async def checkpoint(self, partition: int, topic: str) -> int | None:
        value = await self.client.hget(self.keys.checkpoint(partition), topic)
        return int(value) if value is not None else None

    async def load(
        self, partition: int, entities: Iterable[EntityKey]
    ) -> dict[EntityKey, dict[str, str]]:
        wanted = list(entities)
        async with self.client.pipeline(transaction=False) as pipe:
            for key in wanted:
                pipe.hgetall(self.keys.entity(partition, key))
            found = await pipe.execute()
        return {key: _text(raw) for key, raw in zip(wanted, found, strict=True) if raw}

    async def commit(
        self, partition: int, topic: str, expected: int | None, offset: int, plan: BatchPlan
    ) -> None:
        """Write one planned batch and move the checkpoint to ``offset``, atomically."""
        keys = [self.keys.checkpoint(partition)]
        index: dict[str, int] = {}

        def ref(key: str) -> int:
            if key not in index:
                keys.append(key)
                index[key] = len(keys)  # Lua arrays start at 1
            return index[key]

        records: list[list[object]] = []
        members: list[list[object]] = []
        for entity, changed in plan.changed_fields.items():
            flat = [part for pair in changed.items() for part in pair]
            records.append([ref(self.keys.entity(partition, entity)), flat])
            if entity[0] in ("rep", "team"):
                members.append([ref(self.keys.directory(partition)), f"{entity[0]}:{entity[1]}"])
        deltas: list[list[object]] = []
        ttls: list[list[int]] = []
        for aggregate, fields in plan.deltas.items():
            key = ref(self.keys.aggregate(partition, aggregate))
            deltas.extend([key, name, str(value)] for name, value in fields.items())
            ttl = TIER_TTL_SECONDS.get(aggregate[2][0], 0) if aggregate[2] != GAUGE_BUCKET else 0
            if ttl:
                ttls.append([key, ttl])
        payload = orjson.dumps({"h": records, "d": deltas, "t": ttls, "s": members})
        ok, actual = await self._commit(
            keys=keys,
            args=[topic, "" if expected is None else str(expected), str(offset), payload],
        )
        if not ok:
            raise CheckpointMoved(
                f"partition {partition} of {topic}: expected {expected}, found {actual!r}"
            )

    async def directory(
        self, partitions: Sequence[int], org_zone: str, queue_teams: Mapping[str, str]
    ) -> DirectoryView:
        async with self.client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.smembers(self.keys.directory(partition))
            memberships = await pipe.execute()
        wanted: list[tuple[int, EntityKey]] = []
        for partition, members in zip(partitions, memberships, strict=True):
            for member in members:
                kind, _, ident = member.decode().partition(":")
                wanted.append((partition, (kind, ident)))
        async with self.client.pipeline(transaction=False) as pipe:
            for partition, key in wanted:
                pipe.hgetall(self.keys.entity(partition, key))
            found = await pipe.execute()
        records = {key: _text(raw) for (_, key), raw in zip(wanted, found, strict=True)}
        return DirectoryView(records, org_zone, queue_teams)

    async def sums(
        self, partitions: Sequence[int], scope: str, scope_id: str, bucket_ids: Sequence[str]
    ) -> dict[str, int]:
        """Base fields of one scope summed over buckets and partitions."""
        async with self.client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                for bucket in bucket_ids:
                    pipe.hgetall(self.keys.aggregate(partition, (scope, scope_id, bucket)))
            found = await pipe.execute()
        total: dict[str, int] = {}
        for raw in found:
            for name, value in raw.items():
                field = name.decode()
                total[field] = total.get(field, 0) + int(value)
        return total


def _text(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}
