"""The Redis table store: records, aggregate buckets, checkpoints; the one module using Redis.

Key layout (``ns`` is the namespace generation, e.g. ``salespulse:g1``):

* ``{ns:pN}:e:<kind>:<id>``: the record of one entity of partition N (a hash);
* ``{ns:pN}:a:<scope>:<id>:<bucket>``: partition N's share of one aggregate bucket
  (a hash of base fields, integers);
* ``{ns:pN}:ckpt``: the last applied offset per topic of partition N, plus ``!newest_ms``
  and ``!committed_ms`` (freshness), ``!stream_ms`` (the partition's stream time, see
  projections/lateness.py), ``!too_late`` (events passed as too late, moved with the
  offsets), ``!applied`` (distinct events applied, moved with the
  offsets, so it counts every event exactly once), ``!directory`` (a version that moves
  whenever a rep or team record of the partition changes), ``!refill:<topic>`` (while
  offsets the projections lost are applied again: the offset that ends it; the commit that
  reaches it removes it) and, during a rebuild, ``!frozen``;
* ``{ns:pN}:dir``: the rep and team records of partition N (a set of ``kind:id``);
* ``{ns:pN}:scopes``: every ``scope:id`` partition N has aggregates for (exporters list them);
* ``{ns:pN}:u:<scope>:<id>``: partition N's open, untouched leads of a scope (a sorted
  set scored by creation time), for the age of the oldest one;
* ``{ns:pN}:dirty``: calendar, all-time and gauge buckets changed since the KPI publisher
  last looked (a hash of ``scope<TAB>id<TAB>bucket`` -> count of commits).

Every key of a partition shares the hash tag ``{ns:pN}``, so one batch's
commit (records + deltas + checkpoint) is a single-slot Lua call that also
runs on Redis Cluster. Every script names each key it touches in KEYS (Redis
Cluster routes and guards a script by its declared keys: a key read but not
declared could be missed while its slot migrates). Readers sum an aggregate
over the partitions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit
from weakref import WeakKeyDictionary

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    ConnectionError,
    NoPermissionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    TimeoutError,
    TryAgainError,
)
from redis.typing import EncodableT, FieldT

from projections.engine import GAUGE_BUCKET, AggregateKey, EntityKey
from projections.namespaces import MARKER_SECONDS, TOMBSTONE_SECONDS, pointer, rebuild_marker
from projections.stores import (
    DIRTY_SEP,
    DIRTY_TIERS,
    FROZEN,
    REFILL,
    Commit,
    DerivedReads,
    DirtyMark,
    Landed,
    NamespaceFrozen,
    change_out_of_range,
)
from projections.windows import TIER_TTL_SECONDS

log = logging.getLogger(__name__)
T = TypeVar("T")

# Atomically: check the partition's checkpoints are what the plan was made from, add the
# deltas (dropping fields that reach 0), write the records, set TTLs of new buckets, keep the
# untouched-lead sets, and move the checkpoints. Returns {1}, or {0, topic, actual} when
# another writer moved a checkpoint first, or {0, '!range', key, field} when a sum would leave
# the range every reader handles exactly (|sum| < 2^53): then the increments made so far are
# undone and nothing was written. Redis never rolls a script back, so nothing after the first
# write may fail: the deltas (the only step that can) go first, and HSET takes records in
# chunks (Lua's unpack stops near 8,000 values: one entity can change more fields than that).
COMMIT_LUA = """
if redis.call('HEXISTS', KEYS[1], '!frozen') == 1 then return {0, '!frozen', ''} end
local p = cjson.decode(ARGV[1])
for _, c in ipairs(p.c) do
  local current = redis.call('HGET', KEYS[1], c[1]) or ''
  if current ~= c[2] then return {0, c[1], current} end
end
local limit, added, zeros, bad = 9007199254740992, {}, {}, nil
for _, d in ipairs(p.d) do
  local key = KEYS[d[1]]
  for i = 2, #d, 2 do
    local change = d[i + 1]
    local sum = false
    if change > -limit and change < limit then sum = redis.pcall('HINCRBY', key, d[i], change) end
    if type(sum) == 'number' then added[#added + 1] = {key, d[i], change} end
    if type(sum) ~= 'number' or sum <= -limit or sum >= limit then bad = {key, d[i]}; break end
    if sum == 0 then zeros[#zeros + 1] = {key, d[i]} end
  end
  if bad then break end
end
if bad then
  for j = #added, 1, -1 do
    local a = added[j]
    if redis.call('HINCRBY', a[1], a[2], -a[3]) == 0 then redis.call('HDEL', a[1], a[2]) end
  end
  return {0, '!range', bad[1], bad[2]}
end
-- Only now: a bucket emptied and then undone would have come back without its TTL.
for _, z in ipairs(zeros) do redis.call('HDEL', z[1], z[2]) end
for _, h in ipairs(p.h) do
  local key = KEYS[h[1]]
  for i = 2, #h, 1000 do redis.call('HSET', key, unpack(h, i, math.min(i + 999, #h))) end
end
for _, t in ipairs(p.t) do redis.call('EXPIRE', KEYS[t[1]], t[2], 'NX') end
for _, s in ipairs(p.s) do redis.call('SADD', KEYS[s[1]], s[2]) end
for _, z in ipairs(p.za) do redis.call('ZADD', KEYS[z[1]], z[2], z[3]) end
for _, z in ipairs(p.zr) do redis.call('ZREM', KEYS[z[1]], z[2]) end
for _, k in ipairs(p.k) do redis.call('HINCRBY', KEYS[k[1]], k[2], 1) end
for _, c in ipairs(p.c) do
  redis.call('HSET', KEYS[1], c[1], c[3])
  local refill = redis.call('HGET', KEYS[1], '!refill:' .. c[1])
  if refill and tonumber(c[3]) >= tonumber(refill) - 1 then
    redis.call('HDEL', KEYS[1], '!refill:' .. c[1])
  end
end
if tonumber(p.newest) > tonumber(redis.call('HGET', KEYS[1], '!newest_ms') or '0') then
  redis.call('HSET', KEYS[1], '!newest_ms', p.newest)
end
if tonumber(p.stream) > tonumber(redis.call('HGET', KEYS[1], '!stream_ms') or '0') then
  redis.call('HSET', KEYS[1], '!stream_ms', p.stream)
end
redis.call('HSET', KEYS[1], '!committed_ms', p.now)
if tonumber(p.applied) > 0 then redis.call('HINCRBY', KEYS[1], '!applied', p.applied) end
if tonumber(p.late) > 0 then redis.call('HINCRBY', KEYS[1], '!too_late', p.late) end
if p.dir == 1 then redis.call('HINCRBY', KEYS[1], '!directory', 1) end
return {1}
"""

# Read side, one call per partition (a single slot: every key has the partition's hash tag).
# KEYS are the bucket keys of every group, group after group; ARGV[1] is a JSON list of how
# many keys each group has. Each group's buckets are summed next to the data into one JSON
# object, so a rolling window's 60 bucket reads are one reply and the whole answer parses
# with one orjson call.
SUM_GROUPS_LUA = """
local sizes = cjson.decode(ARGV[1])
local out, next_key = {}, 1
for g, size in ipairs(sizes) do
  local total, order = {}, {}
  for k = next_key, next_key + size - 1 do
    local flat = redis.call('HGETALL', KEYS[k])
    for i = 1, #flat, 2 do
      local f, v = flat[i], tonumber(flat[i + 1])
      if total[f] == nil then order[#order + 1] = f; total[f] = v else total[f] = total[f] + v end
    end
  end
  next_key = next_key + size
  local parts = {}
  for i, f in ipairs(order) do
    parts[i] = cjson.encode(f) .. ':' .. string.format('%.0f', total[f])
  end
  out[g] = '{' .. table.concat(parts, ',') .. '}'
end
return '[' .. table.concat(out, ',') .. ']'
"""

# The records of some entities of one partition (KEYS), as one JSON array of flat
# [field, value, ...] lists (an empty one for a missing record): one reply that orjson
# parses at once, instead of a RESP reply per field.
LOAD_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local flat = redis.call('HGETALL', key)
  out[i] = #flat > 0 and cjson.encode(flat) or '[]'
end
return '[' .. table.concat(out, ',') .. ']'
"""

# Forget the dirty marks the KPI publisher has handled: a mark whose count moved since it was
# read (another commit changed the bucket again) stays for the next pass.
CLEAR_DIRTY_LUA = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
"""

# Set a field of a checkpoint hash, unless a rebuild froze it: returns 1 if set.
MARK_LUA = """
if redis.call('HEXISTS', KEYS[1], '!frozen') == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# The lowest score of each sorted set in KEYS (one partition), as a JSON array (null if empty).
LOWEST_SCORES_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  out[i] = first[2] and string.format('%.0f', tonumber(first[2])) or 'null'
end
return '[' .. table.concat(out, ',') .. ']'
"""


# A client of one Redis or of a Redis Cluster: every store takes either.
RedisClient = aioredis.Redis | RedisCluster

# One call of a registered script: the script, its KEYS and its ARGV.
ScriptCall = tuple[AsyncScript, list[str], list[EncodableT]]

# How long a script call on a cluster waits for a slot that moves between masters.
SLOT_MOVE_SECONDS = 30.0

# What a client raises while Redis, or the master of a cluster slot, cannot be reached (after
# the client's own retries): writers retry, readers answer "unavailable". A cluster in
# failover answers CLUSTERDOWN, a moving slot TRYAGAIN; redis-py's cluster client raises an
# exception of its own, outside RedisError, when no node answers.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    ClusterError,  # CLUSTERDOWN in a failover; "TTL exhausted" after redirections
    TryAgainError,
    RedisClusterException,
)
# Every failure of a Redis call, cluster client included.
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException)
# ... or of the socket beneath it.
REDIS_OR_SOCKET_FAILURES: tuple[type[Exception], ...] = (*REDIS_FAILURES, OSError)


# Every script of this module (a Redis Cluster gets them loaded on each master).
SCRIPTS = (
    COMMIT_LUA,
    SUM_GROUPS_LUA,
    LOAD_LUA,
    CLEAR_DIRTY_LUA,
    MARK_LUA,
    LOWEST_SCORES_LUA,
)


def connect(
    url: str,
    retries: int = 6,
    *,
    cluster: bool = False,
    timeout: float = 10.0,
    connect_timeout: float = 5.0,
    **options: Any,
) -> RedisClient:
    """A client that retries connection errors with exponential backoff (redis-py's own Retry).
    Readers that must answer fast when Redis is away (the exporter) ask for fewer retries.
    ``options`` (credentials, TLS) come from ``config.connections.redis_options``. With
    ``cluster``, ``url`` names one node or several seeds (``redis://h1:p1,h2:p2``) of a Redis
    Cluster; the client follows its slots (MOVED, ASK, failover) by itself."""
    common: dict[str, Any] = {
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        "retry_on_error": [ConnectionError, TimeoutError],
        "socket_timeout": timeout,
        "socket_connect_timeout": connect_timeout,
    }
    if cluster:
        nodes, credentials, tls = cluster_seeds(url)
        # reinitialize_steps=0: a MOVED (a slot that moved) patches the client's slot map;
        # redis-py's default also closes every connection at each 5th one, under the calls of
        # other tasks still using them (an API read failed inside redis-py when it did).
        return RedisCluster(
            startup_nodes=nodes,
            reinitialize_steps=0,
            **common,
            **{"ssl": tls, **credentials, **options},
        )
    return aioredis.Redis.from_url(url, **options, **common, health_check_interval=30)


def cluster_seeds(url: str) -> tuple[list[ClusterNode], dict[str, str], bool]:
    """The seed nodes of ``redis[s]://[user:password@]host:port[,host:port...]``, the
    credentials in the URL, and whether it asks for TLS."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    credentials: dict[str, str] = {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        credentials = {k: unquote(v) for k, v in (("username", user), ("password", password)) if v}
    nodes = []
    for seed in filter(None, hosts.split(",")):
        host, _, port = seed.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{seed!r} is not host:port")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    if not nodes:
        raise ValueError("no host:port in the URL")
    return nodes, credentials, parts.scheme == "rediss"


# What the commit script answers when a sum would leave the exact range.
OUT_OF_RANGE = "!range"


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

    def scopes(self, partition: int) -> str:
        return f"{self.tag(partition)}:scopes"

    def dirty(self, partition: int) -> str:
        return f"{self.tag(partition)}:dirty"

    def untouched(self, partition: int, scope: tuple[str, str]) -> str:
        return f"{self.tag(partition)}:u:{scope[0]}:{scope[1]}"


class RedisStore(DerivedReads):
    """``ProjectionStore`` (projections/stores.py) on Redis or Redis Cluster."""

    def __init__(self, client: RedisClient, namespace: str) -> None:
        self.client = client
        self.keys = Keys(namespace)
        self._commit = client.register_script(COMMIT_LUA)
        self._load = client.register_script(LOAD_LUA)
        self._sum_groups = client.register_script(SUM_GROUPS_LUA)
        self._lowest_scores = client.register_script(LOWEST_SCORES_LUA)
        self._clear_dirty = client.register_script(CLEAR_DIRTY_LUA)
        self._mark = client.register_script(MARK_LUA)

    async def _scripts(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run script calls, one per partition, in one round trip: a pipeline on one Redis,
        concurrent calls on a cluster (its pipelines refuse scripts; each call goes to the
        master of its slot, loads the script there if that node has not got it, and waits
        while its slot moves).

        A pipeline loads missing scripts before it sends them, but a Redis that restarted in
        between has forgotten them (NoScriptError): then run it once more. Safe for commits:
        one that landed fails its checkpoint check."""
        if not calls:
            return []
        client = self.client
        if isinstance(client, RedisCluster):
            # Every call ends before this returns or raises: a caller that retries must not
            # meet calls of its last attempt still running.
            limit = _call_limit(client)

            async def call(script: AsyncScript, keys: list[str], args: list[EncodableT]) -> Any:
                async with limit:
                    return await _while_slot_moves(partial(script, keys=keys, args=args))

            replies = await asyncio.gather(*(call(*c) for c in calls), return_exceptions=True)
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
            return replies

        async def run() -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    await script(keys=keys, args=args, client=pipe)
                return list(await pipe.execute())

        try:
            return await run()
        except NoScriptError:
            log.warning("Redis forgot the scripts (restarted?); running them again")
            return await run()

    @property
    def namespace(self) -> str:
        return self.keys.namespace

    async def progress(self, partitions: Sequence[int]) -> list[dict[str, str]]:
        """Each partition's checkpoint hash: offsets per topic, ``!newest_ms`` (occurred_at
        of the newest event applied), ``!committed_ms`` (wall time of the last commit) and
        ``!applied`` (distinct events applied)."""
        found = await pipelined(
            self.client, lambda pipe: [pipe.hgetall(self.keys.checkpoint(p)) for p in partitions]
        )
        return [_text(raw) for raw in found]

    async def load(
        self, wanted: Mapping[int, Iterable[EntityKey]]
    ) -> dict[int, dict[EntityKey, dict[str, str]]]:
        """The stored records of some entities of some partitions: one script call per
        partition, all in one round trip."""
        asked = {partition: list(keys) for partition, keys in wanted.items()}

        replies = await self._scripts(
            [
                (self._load, [self.keys.entity(partition, key) for key in keys], [])
                for partition, keys in asked.items()
            ]
        )
        out: dict[int, dict[EntityKey, dict[str, str]]] = {}
        for (partition, keys), reply in zip(asked.items(), replies, strict=True):
            out[partition] = {
                key: dict(zip(flat[::2], flat[1::2], strict=True))
                for key, flat in zip(keys, orjson.loads(reply), strict=True)
                if flat
            }
        return out

    async def commit(self, commits: Sequence[Commit]) -> Landed:
        """Write planned batches of some partitions, each atomically with the move of its
        checkpoints (expected -> new), in one round trip. Says which partitions' batches were
        not written: a checkpoint another writer moved first, or a sum out of range; raises
        NamespaceFrozen, after the other partitions' commits, when a rebuild froze this one."""
        landed = Landed()
        for commit in commits:
            found = change_out_of_range(commit.plan)
            if found is not None:  # JSON cannot even carry it to the script exactly
                landed.out_of_range[commit.partition] = (
                    f"a change of {found[1]!r} in {found[0]!r} would leave the exact range"
                )
        sent = [c for c in commits if c.partition not in landed.out_of_range]
        calls = [self._commit_call(commit) for commit in sent]

        results = await self._scripts([(self._commit, keys, [payload]) for keys, payload in calls])
        frozen = False
        for commit, result in zip(sent, results, strict=True):
            if result[0]:
                continue
            what = _str(result[1])
            if what == FROZEN:
                frozen = True
            elif what == OUT_OF_RANGE:
                landed.out_of_range[commit.partition] = (
                    f"the sum of {_str(result[3])!r} in {_str(result[2])!r} would leave the "
                    "exact range of -(2^53 - 1) .. 2^53 - 1"
                )
            else:
                log.warning(
                    "partition %d: checkpoint of %r moved to %r",
                    commit.partition,
                    what,
                    _str(result[2]),
                )
                landed.moved.append(commit.partition)
        if frozen:
            raise NamespaceFrozen(f"{self.keys.namespace} is frozen for a rebuild")
        return landed

    def _commit_call(self, commit: Commit) -> tuple[list[str], bytes]:
        """The keys and the JSON argument of COMMIT_LUA for one partition's batch."""
        partition, moves, plan = commit.partition, commit.moves, commit.plan
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
            records.append([ref(self.keys.entity(partition, entity)), *chain(*changed.items())])
            if entity[0] in ("rep", "team"):
                members.append([ref(self.keys.directory(partition)), f"{entity[0]}:{entity[1]}"])
        deltas: list[list[object]] = []
        ttls: list[list[int]] = []
        scopes = {(a[0], a[1]) for a in plan.deltas if a[0] != "org"}
        members += [[ref(self.keys.scopes(partition)), f"{s}:{i}"] for s, i in sorted(scopes)]
        dirty: list[list[object]] = []
        for aggregate, fields in plan.deltas.items():
            key = ref(self.keys.aggregate(partition, aggregate))
            if aggregate[2][0] in DIRTY_TIERS:
                dirty.append([ref(self.keys.dirty(partition)), DIRTY_SEP.join(aggregate)])
            # Integers: cjson reads them as doubles, exact to 2**53 (90 trillion in minor units).
            deltas.append([key, *chain(*fields.items())])
            ttl = TIER_TTL_SECONDS.get(aggregate[2][0], 0) if aggregate[2] != GAUGE_BUCKET else 0
            if ttl:
                ttls.append([key, ttl])
        adds = [
            [ref(self.keys.untouched(partition, scope)), str(since), lead]
            for scope, leads in plan.untouched_add.items()
            for lead, since in leads.items()
        ]
        removes = [
            [ref(self.keys.untouched(partition, scope)), lead]
            for scope, leads in plan.untouched_remove.items()
            for lead in leads
        ]
        checkpoints = [
            [topic, "" if expected is None else str(expected), str(new)]
            for topic, (expected, new) in moves.items()
        ]
        payload = orjson.dumps(
            {
                "c": checkpoints,
                "newest": str(plan.newest_ms),
                "stream": str(commit.stream_ms),
                "late": str(commit.too_late),
                "now": str(time.time_ns() // 1_000_000),
                "applied": str(plan.applied),
                "dir": int(any(entity[0] in ("rep", "team") for entity in plan.changed_fields)),
                "h": records,
                "d": deltas,
                "t": ttls,
                "s": members,
                "za": adds,
                "zr": removes,
                "k": dirty,
            }
        )
        return keys, payload

    async def mark_refilling(self, partition: int, topic: str, end: int) -> None:
        """Say that offsets up to ``end`` (exclusive) of a topic partition are being applied
        again: readers show partial numbers as such until a commit reaches ``end - 1``.
        Raises NamespaceFrozen (and marks nothing) when a rebuild froze this generation."""
        key = self.keys.checkpoint(partition)
        if not await self._mark(keys=[key], args=[REFILL + topic, str(end)]):
            raise NamespaceFrozen(f"{self.keys.namespace} is frozen for a rebuild")

    async def freeze(self, partitions: Iterable[int]) -> None:
        """Refuse every later commit and mark of these partitions (a rebuild replaces them)."""
        await pipelined(
            self.client,
            lambda pipe: [pipe.hset(self.keys.checkpoint(p), FROZEN, "1") for p in partitions],
        )

    async def directory_versions(self, partitions: Sequence[int]) -> list[int]:
        """Each partition's directory version: other workers' rep and team changes show
        here, so a worker reloads just the partitions whose version moved."""
        found = await pipelined(
            self.client,
            lambda pipe: [pipe.hget(self.keys.checkpoint(p), "!directory") for p in partitions],
        )
        return [int(v or 0) for v in found]

    async def directory_records(self, partitions: Sequence[int]) -> dict[EntityKey, dict[str, str]]:
        """The rep and team records of some partitions."""
        memberships = await pipelined(
            self.client, lambda pipe: [pipe.smembers(self.keys.directory(p)) for p in partitions]
        )
        wanted: list[tuple[int, EntityKey]] = []
        for partition, members in zip(partitions, memberships, strict=True):
            for member in members:
                kind, _, ident = member.decode().partition(":")
                wanted.append((partition, (kind, ident)))
        found = await pipelined(
            self.client, lambda pipe: [pipe.hgetall(self.keys.entity(p, k)) for p, k in wanted]
        )
        return {key: _text(raw) for (_, key), raw in zip(wanted, found, strict=True)}

    async def oldest_untouched(
        self, partitions: Sequence[int], scopes: Sequence[tuple[str, str]]
    ) -> list[int | None]:
        """Creation time (ms) of each scope's oldest open, untouched lead, if any."""
        if not scopes:
            return []

        calls: list[ScriptCall] = [
            (self._lowest_scores, [self.keys.untouched(partition, scope) for scope in scopes], [])
            for partition in partitions
        ]
        replies = [orjson.loads(reply) for reply in await self._scripts(calls)]
        out: list[int | None] = []
        for i in range(len(scopes)):
            scores = [reply[i] for reply in replies if reply[i] is not None]
            out.append(min(scores) if scores else None)
        return out

    async def dirty(self, partitions: Sequence[int]) -> list[dict[DirtyMark, int]]:
        """Per partition: (scope, id, bucket) changed since the publisher last cleared it."""
        found = await pipelined(
            self.client, lambda pipe: [pipe.hgetall(self.keys.dirty(p)) for p in partitions]
        )
        out = []
        for raw in found:
            marks = {}
            for mark, count in raw.items():
                # Scopes and bucket ids never hold the separator; an id may, so split around it.
                scope, rest = _str(mark).split(DIRTY_SEP, 1)
                scope_id, bucket = rest.rsplit(DIRTY_SEP, 1)
                marks[(scope, scope_id, bucket)] = int(count)
            out.append(marks)
        return out

    async def clear_dirty(self, partition: int, seen: Mapping[DirtyMark, int]) -> None:
        """Forget marks still at the count they were read with."""
        if not seen:
            return
        args = [part for mark, count in seen.items() for part in (DIRTY_SEP.join(mark), str(count))]
        await self._clear_dirty(keys=[self.keys.dirty(partition)], args=args)

    async def scopes(self, partitions: Sequence[int]) -> set[tuple[str, str]]:
        """Every (scope, id) with aggregates, beside the org."""
        found = await pipelined(
            self.client, lambda pipe: [pipe.smembers(self.keys.scopes(p)) for p in partitions]
        )
        out = set()
        for members in found:
            for member in members:
                scope, _, ident = _str(member).partition(":")
                out.add((scope, ident))
        return out

    async def has_scope(self, partitions: Sequence[int], scope: str, scope_id: str) -> bool:
        member = f"{scope}:{scope_id}"
        found = await pipelined(
            self.client,
            lambda pipe: [pipe.sismember(self.keys.scopes(p), member) for p in partitions],
        )
        return any(found)

    async def sums_many(
        self, partitions: Sequence[int], requests: Sequence[tuple[str, str, tuple[str, ...]]]
    ) -> list[dict[str, int]]:
        """``sums`` for many (scope, id, buckets) at once: one script call per partition."""
        if not requests:
            return []
        sizes = orjson.dumps([len(buckets) for _, _, buckets in requests])

        calls: list[ScriptCall] = []
        for partition in partitions:
            prefix = f"{self.keys.tag(partition)}:a:"
            keys = [
                f"{prefix}{scope}:{scope_id}:{bucket}"
                for scope, scope_id, buckets in requests
                for bucket in buckets
            ]
            calls.append((self._sum_groups, keys, [sizes]))
        replies = await self._scripts(calls)
        totals: list[dict[str, int]] = [{} for _ in requests]
        for reply in replies:
            for total, part in zip(totals, orjson.loads(reply), strict=True):
                for name, value in part.items():
                    total[name] = total.get(name, 0) + value
        return totals


# Script calls one cluster client makes at once. Each holds a connection of its node's pool,
# and redis-py's cluster pool refuses a connection past its size instead of waiting: many
# readers at once (the API's clients), each reading every partition, would meet that.
CLUSTER_CALLS_AT_ONCE = 32
_call_limits: WeakKeyDictionary[RedisCluster, asyncio.Semaphore] = WeakKeyDictionary()


def _call_limit(client: RedisCluster) -> asyncio.Semaphore:
    if client not in _call_limits:
        _call_limits[client] = asyncio.Semaphore(CLUSTER_CALLS_AT_ONCE)
    return _call_limits[client]


async def _while_slot_moves(call: Callable[[], Awaitable[T]]) -> T:
    """Make a call on a cluster, again while its slot moves between masters: Redis refuses a
    script whose keys are split between the two (TRYAGAIN), and redis-py gives up after half
    a second of redirections (TTL exhausted; also while a node still names the old master),
    where moving a slot's keys takes longer. A failover (CLUSTERDOWN) is not waited for here:
    writers retry it, readers report it."""
    delay, deadline = 0.05, time.monotonic() + SLOT_MOVE_SECONDS
    while True:
        try:
            return await call()
        except (TryAgainError, ClusterError) as exc:
            if isinstance(exc, ClusterDownError) or time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def pipelined(client: RedisClient, queue: Callable[[Any], object]) -> list[Any]:
    """The replies of the commands ``queue`` puts in one pipeline (a cluster's is split by
    master), sent again while a slot moves. Only for commands that may run twice."""

    async def run() -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            queue(pipe)
            return list(await pipe.execute())

    return await _while_slot_moves(run)


def _text(raw: Mapping[bytes, bytes] | Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """Redis replies are bytes (the client does not decode): keys and values as text."""
    return {_str(k): _str(v) for k, v in raw.items()}


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# Namespace generations (projections/namespaces.py): the pointer to the live one, the marker of
# a running rebuild, the freeze, the switch and the drop of an old generation.


# Set a hash's fields and its time to live at once (one key: a single slot on a cluster,
# where redis-py's transactions are not for an event loop's hot path).
SET_WITH_TTL_LUA = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return redis.call('EXPIRE', KEYS[1], ARGV[1])
"""

# Replace a checkpoint hash by a frozen tombstone that expires (see ``drop``).
TOMBSTONE_LUA = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], '1')
return redis.call('EXPIRE', KEYS[1], ARGV[2])
"""


async def mark_rebuilding(client: RedisClient, prefix: str, old: str, new: str) -> None:
    """Tell readers a rebuild runs (``old`` stays live until the switch to ``new``)."""
    started = await client.hget(rebuild_marker(prefix), "started_ms")
    since = int(started or time.time_ns() // 1_000_000)
    fields: list[EncodableT] = ["from", old, "to", new, "started_ms", since]
    await client.register_script(SET_WITH_TTL_LUA)(
        keys=[rebuild_marker(prefix)], args=[MARKER_SECONDS, *fields]
    )


async def used_memory(client: RedisClient) -> int | None:
    """Redis's ``used_memory`` (of the whole instance; on a Redis Cluster summed over the
    masters: the replicas hold copies), None if this user may not run INFO."""
    try:
        if isinstance(client, RedisCluster):
            nodes = await client.info("memory", target_nodes=RedisCluster.PRIMARIES)
            # One dict per master, by node name; a cluster of one master answers its dict alone.
            infos = [nodes] if "used_memory" in nodes else list(nodes.values())
            return sum(int(info["used_memory"]) for info in infos)
        return int((await client.info("memory"))["used_memory"])
    except NoPermissionError:
        return None


async def rebuilding(client: RedisClient, prefix: str) -> dict[str, Any] | None:
    """The running rebuild: ``from``, ``to`` and ``started_ms``; None when none runs."""
    found = await client.hgetall(rebuild_marker(prefix))
    if not found:
        return None
    text = _text(found)
    return {"from": text["from"], "to": text["to"], "started_ms": int(text["started_ms"])}


async def rebuilt(client: RedisClient, prefix: str) -> None:
    await client.delete(rebuild_marker(prefix))


async def current_namespace(client: RedisClient, prefix: str, *, create: bool = True) -> str:
    """The live generation. Writers (``create``) record the first one on first use; readers
    do not, so that after Redis was emptied the worker re-records the generation it writes."""
    if create:
        await client.set(pointer(prefix), f"{prefix}:g1", nx=True)
    value = await client.get(pointer(prefix))
    if value is None:
        return f"{prefix}:g1"
    return value.decode() if isinstance(value, bytes) else str(value)


async def freeze(client: RedisClient, namespace: str, partitions: Iterable[int]) -> None:
    await RedisStore(client, namespace).freeze(partitions)


async def switch(client: RedisClient, prefix: str, namespace: str) -> None:
    await client.set(pointer(prefix), namespace)


async def drop(client: RedisClient, namespace: str) -> int:
    """Delete every key of a generation; returns how many.

    Each partition's checkpoint hash is replaced, atomically, by a frozen tombstone that
    lives a day: a writer that still holds the old generation then meets the freeze and
    moves to the live one, instead of seeing no checkpoint and writing a fresh, orphaned
    copy.
    """
    deleted = 0
    batch: list[bytes] = []
    tombstone = client.register_script(TOMBSTONE_LUA)
    async for key in client.scan_iter(match=f"{{{namespace}:p*", count=1_000):
        if key.endswith(b":ckpt"):
            await tombstone(keys=[key], args=[FROZEN, TOMBSTONE_SECONDS])
            deleted += 1
            continue
        batch.append(key)
        if len(batch) >= 1_000:
            deleted += await client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += await client.unlink(*batch)
    return deleted


# Renew the publisher's lease only if this publisher still holds it, or take a free one.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class RedisPublisherState:
    """``PublisherState`` on Redis: ``<prefix>:kpi:lease`` and hashes of last states."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._renew = client.register_script(RENEW_LUA)

    async def live_store(self, prefix: str) -> RedisStore:
        return RedisStore(self.client, await current_namespace(self.client, prefix, create=False))

    async def hold_lease(self, prefix: str, token: str, lease_ms: int) -> bool:
        return bool(await self._renew(keys=[f"{prefix}:kpi:lease"], args=[token, lease_ms]))

    async def last_values(self, fields: Sequence[tuple[str, str]]) -> list[bytes | None]:
        """In one pipeline of HMGETs."""
        by_hash: dict[str, list[str]] = {}
        for name, key in fields:
            by_hash.setdefault(name, []).append(key)
        replies = await pipelined(
            self.client, lambda pipe: [pipe.hmget(name, keys) for name, keys in by_hash.items()]
        )
        found = {
            (name, key): raw
            for (name, keys), values in zip(by_hash.items(), replies, strict=True)
            for key, raw in zip(keys, values, strict=True)
        }
        return [found[pair] for pair in fields]

    async def remember(
        self, values: Mapping[str, Mapping[str, bytes]], ttl_seconds: Mapping[str, int]
    ) -> None:
        def queue(pipe: Any) -> None:
            for name, fields in values.items():
                mapping: dict[FieldT, EncodableT] = {key: value for key, value in fields.items()}
                pipe.hset(name, mapping=mapping)
                if ttl_seconds.get(name):
                    pipe.expire(name, ttl_seconds[name])

        await pipelined(self.client, queue)
