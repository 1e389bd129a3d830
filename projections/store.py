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
* ``{ns:pN}:u:<scope>:<id>``: partition N's open, untouched leads of a scope (a sorted
  set scored by creation time), for the age of the oldest one;
* ``{ns:pN}:expect``: per rollup shard, the version of the last commit that changed one of
  its buckets; ``{ns:pN}:recent``: the marks (``scope<TAB>id<TAB>bucket``) the partition's
  commits changed lately, scored by version (both for folding, below).

Every key of a partition shares the hash tag ``{ns:pN}``, so one batch's
commit (records + deltas + checkpoint) is a single-slot Lua call that also
runs on Redis Cluster. Every script names each key it touches in KEYS (Redis
Cluster routes and guards a script by its declared keys: a key read but not
declared could be missed while its slot migrates).

Readers do not sum over partitions: every commit is folded into per-scope rollups
(docs/projections.md "Rollups"), in ``ROLLUP_SHARDS`` shards with hash tags ``{ns:rK}``
(a scope's keys all in the shard ``shard_of`` names):

* ``{ns:rK}:t:<scope>:<id>:<bucket>``: the bucket's totals over the partitions;
* ``{ns:rK}:s:<scope>:<id>:<bucket>``: each partition's share of them, ``N`` ->
  ``[version, {field: value}]`` (the share of bucket ``!u`` is the partition's oldest
  untouched lead, ``{"u": ms}``);
* ``{ns:rK}:seen``: per partition N, the version up to which every change is folded
  (and ``N!since``, while a fold has found an earlier change missing: that fold's version);
  ``{ns:rK}:v:N``: the marks of partition N folded lately, scored by version;
* ``{ns:rK}:scopes``: every ``scope:id`` with aggregates (exporters list them);
* ``{ns:rK}:dirty``: calendar, all-time and gauge buckets changed since the KPI publisher
  last looked (a hash of ``scope<TAB>id<TAB>bucket`` -> count of folds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
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

from projections.command_packing import use_fast_packing
from projections.commit_payload import (
    OLDEST,
    REFOLD_WINDOW_MS,
    ROLLUP_SHARDS,
    Keys,
    commit_call,
    shard_of,
)
from projections.engine import EntityKey
from projections.errors import described
from projections.namespaces import MARKER_SECONDS, TOMBSTONE_SECONDS, pointer, rebuild_marker
from projections.stores import (
    DIRTY_SEP,
    DIRTY_TIERS,
    FROZEN,
    REFILL,
    VERSION,
    Commit,
    DerivedReads,
    DirtyMark,
    Landed,
    NamespaceFrozen,
    change_out_of_range,
)
from projections.windows import derived_buckets, stored_ttl_seconds

log = logging.getLogger(__name__)
T = TypeVar("T")

# Run a command on one key with many arguments, at most 1,000 at a time (Lua's unpack stops
# near 8,000 values; 1,000 keeps field-value pairs together).
CHUNKED_LUA = """
local function chunked(command, key, args)
  for i = 1, #args, 1000 do
    redis.call(command, key, unpack(args, i, math.min(i + 999, #args)))
  end
end
"""

# The lowest score of each untouched-lead set (KEYS index in ``uk``), as a JSON array.
LOWS_LUA = """
local function lows(uk)
  local u = {}
  for i, k in ipairs(uk) do
    local first = redis.call('ZRANGE', KEYS[k], 0, 0, 'WITHSCORES')
    u[i] = first[2] and string.format('%.0f', tonumber(first[2])) or 'null'
  end
  return '[' .. table.concat(u, ',') .. ']'
end
"""

# The values a fold needs, as JSON text: each bucket (KEYS index in ``fk``) as a flat
# [field, value, ...] list, and the lowest score of each untouched-lead set (in ``uk``).
VALUES_LUA = (
    LOWS_LUA
    + """
local function values(fk, uk)
  local b = {}
  for i, k in ipairs(fk) do
    local flat = redis.call('HGETALL', KEYS[k])
    b[i] = #flat > 0 and cjson.encode(flat) or '[]'
  end
  return '[' .. table.concat(b, ',') .. '],' .. lows(uk)
end
"""
)

# Atomically: check the partition's checkpoints are what the plan was made from, add the
# deltas (dropping fields that reach 0), write the records, set TTLs of new buckets, keep the
# untouched-lead sets, and move the checkpoints. Each commit gets a version (its wall time,
# or one more than the last, whichever is larger), records it per rollup shard it changes
# (``expect``, answering the shard's version before) and its marks in ``recent``. Records of
# the EXPIRING kinds and leads (projections/engine.py ``swept``) are indexed by their latest
# event time in the partition's ``expiry`` set; up to ``sweep`` of those more than the horizon
# behind the stream time are deleted, or for a lead compacted (a record the plan found over is
# deleted before it is written anew).
# Returns {1, '[version, buckets, lows, previous versions, records deleted]'} for the fold, or
# {0, topic, actual} when
# another writer moved a checkpoint first, or {0, '!range', key, field} when a sum would leave
# the range every reader handles exactly (|sum| < 2^53): then nothing was written. Redis never
# rolls a script back, so nothing after the first write may fail: every bucket's new sums are
# worked out first (one HGETALL a bucket; Lua's doubles are exact below 2^53, and a sum at or
# past it is refused), then written with one HSET and one HDEL a bucket. HSET takes records
# in chunks (one entity can change more fields than Lua's unpack takes at once).
COMMIT_LUA = (
    CHUNKED_LUA
    + LOWS_LUA
    + """
if redis.call('HEXISTS', KEYS[1], '!frozen') == 1 then return {0, '!frozen', ''} end
local p = cjson.decode(ARGV[1])
for _, c in ipairs(p.c) do
  local current = redis.call('HGET', KEYS[1], c[1]) or ''
  if current ~= c[2] then return {0, c[1], current} end
end
-- had[KEYS index]: whether the bucket had fields before this commit.
local limit, writes, buckets, bad, had = 9007199254740992, {}, {}, nil, {}
for n, d in ipairs(p.d) do
  local key = KEYS[d[1]]
  local flat = redis.call('HGETALL', key)
  had[d[1]] = #flat > 0
  local values, sets, zeros = {}, {}, {}
  for i = 1, #flat, 2 do values[flat[i]] = flat[i + 1] end
  for i = 2, #d, 2 do
    local name, change = d[i], d[i + 1]
    local was = values[name]
    local sum = was and tonumber(was) or (not was and 0)
    if sum and change > -limit and change < limit then sum = sum + change else sum = nil end
    if not sum or sum % 1 ~= 0 or sum <= -limit or sum >= limit then bad = {key, name}; break end
    if sum == 0 then
      zeros[#zeros + 1] = name
      values[name] = nil
    else
      local text = string.format('%.0f', sum)
      sets[#sets + 1] = name
      sets[#sets + 1] = text
      values[name] = text
    end
  end
  if bad then return {0, '!range', bad[1], bad[2]} end
  writes[n] = {key, sets, zeros}
  buckets[n] = cjson.encode(values)
end
-- HSET before HDEL: a bucket that keeps a field keeps its TTL.
for _, w in ipairs(writes) do chunked('HSET', w[1], w[2]); chunked('HDEL', w[1], w[3]) end
for _, k in ipairs(p.rd) do redis.call('DEL', KEYS[k]) end
for _, h in ipairs(p.h) do
  local key = KEYS[h[1]]
  for i = 2, #h, 1000 do redis.call('HSET', key, unpack(h, i, math.min(i + 999, #h))) end
end
-- A bucket that had fields got its TTL when it was created (and HSET before HDEL kept it).
for _, t in ipairs(p.t) do
  if not had[t[1]] then redis.call('EXPIRE', KEYS[t[1]], t[2], 'NX') end
end
for _, s in ipairs(p.s) do redis.call('SADD', KEYS[s[1]], s[2]) end
for _, z in ipairs(p.za) do redis.call('ZADD', KEYS[z[1]], z[2], z[3]) end
for _, z in ipairs(p.zr) do redis.call('ZREM', KEYS[z[1]], z[2]) end
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
local stream = tonumber(redis.call('HGET', KEYS[1], '!stream_ms') or '0')
if tonumber(p.stream) > stream then
  stream = tonumber(p.stream)
  redis.call('HSET', KEYS[1], '!stream_ms', p.stream)
end
local indexed = {}
for _, e in ipairs(p.e) do indexed[#indexed + 1] = e[2]; indexed[#indexed + 1] = e[1] end
chunked('ZADD', KEYS[p.ek], indexed)
for _, m in ipairs(p.ue) do redis.call('ZREM', KEYS[p.ek], m) end
local expired = 0
if p.hz > 0 and stream > 0 then
  -- The records are not among KEYS (they share the partition's hash tag): pcall, so that a
  -- slot moving under the script leaves one in the index for a later commit instead of
  -- stopping the script halfway.
  local cut = string.format('(%.0f', stream - p.hz)
  local over = redis.call('ZRANGEBYSCORE', KEYS[p.ek], '-inf', cut, 'LIMIT', 0, p.sweep)
  for _, m in ipairs(over) do
    local key, done = p.ep .. m, nil
    if string.sub(m, 1, 5) == 'lead:' then
      -- Compacted (engine.compacted): its '#' fields and '<group>@' fields go, and its
      -- owner and owner's team where they are the creating rep and team.
      local names = redis.pcall('HKEYS', key)
      local same = redis.pcall('HMGET', key, 'owner', 'c_rep', 'o_team', 'c_team')
      if type(names) == 'table' and not names.err and type(same) == 'table' and not same.err then
        local drop = {}
        for _, f in ipairs(names) do
          if string.sub(f, 1, 1) == '#' or string.sub(f, -1) == '@' then drop[#drop + 1] = f end
        end
        if same[1] and same[1] == same[2] then drop[#drop + 1] = 'owner' end
        if same[3] and same[3] == same[4] then drop[#drop + 1] = 'o_team' end
        done = true
        for i = 1, #drop, 1000 do
          local r = redis.pcall('HDEL', key, unpack(drop, i, math.min(i + 999, #drop)))
          if type(r) == 'table' and r.err then done = false end
        end
      end
    else
      local r = redis.pcall('DEL', key)
      done = type(r) == 'number'
      if done then expired = expired + 1 end
    end
    if done then redis.call('ZREM', KEYS[p.ek], m) end
  end
end
redis.call('HSET', KEYS[1], '!committed_ms', p.now)
if tonumber(p.applied) > 0 then redis.call('HINCRBY', KEYS[1], '!applied', p.applied) end
if tonumber(p.late) > 0 then redis.call('HINCRBY', KEYS[1], '!too_late', p.late) end
if p.dir == 1 then redis.call('HINCRBY', KEYS[1], '!directory', 1) end
local v = math.max(tonumber(p.now), tonumber(redis.call('HGET', KEYS[1], '!version') or '0') + 1)
local vs = string.format('%.0f', v)
redis.call('HSET', KEYS[1], '!version', vs)
local before = {}
for i, x in ipairs(p.x) do
  before[i] = redis.call('HGET', KEYS[p.xk], x) or '0'
  redis.call('HSET', KEYS[p.xk], x, vs)
end
-- Per bucket, for the fold (FOLD_LUA) to move the totals by this commit's changes: -1 if the
-- bucket was empty, else the version of the commit before this one that changed it while
-- that commit is still among the recent marks (0: not known).
local prior = {}
for i = 1, #p.d, 1000 do
  local got = redis.call('ZMSCORE', KEYS[p.rk], unpack(p.r, i, math.min(i + 999, #p.d)))
  for j = 1, #got do
    local n = i + j - 1
    prior[n] = (not had[p.d[n][1]] and '-1') or got[j] or '0'
  end
end
local recent = {}
for _, m in ipairs(p.r) do recent[#recent + 1] = vs; recent[#recent + 1] = m end
chunked('ZADD', KEYS[p.rk], recent)
if #p.r > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[p.rk], '-inf', '(' .. string.format('%.0f', v - p.keep))
end
local out = {1, '[' .. vs .. ',' .. lows(p.u) .. ',[' .. table.concat(before, ',') .. '],'
  .. expired .. ',[' .. table.concat(prior, ',') .. ']]'}
for n = 1, #buckets do out[n + 2] = buckets[n] end
return out
"""
)

# Read side, one call per rollup shard (a single slot: every key has the shard's hash tag).
# KEYS are the bucket keys of every group, group after group; ARGV[1] is a JSON list of how
# many keys each group has. Each group's buckets are summed next to the data into one JSON
# object, so a rolling window's 60 bucket reads are one reply and the whole answer parses
# with one orjson call. Lua numbers are doubles: a group whose largest value times the
# number of values summed reaches 2^52 (a sum along the way might) is answered as its
# buckets' flat [field, value, ...] lists instead, which the reader sums exactly (totals over
# partitions may pass 2^53).
SUM_GROUPS_LUA = """
local sizes = cjson.decode(ARGV[1])
local out, next_key, big = {}, 1, 4503599627370496
for g, size in ipairs(sizes) do
  local total, order, flats, largest, added = {}, {}, {}, 0, 0
  for k = next_key, next_key + size - 1 do
    local flat = redis.call('HGETALL', KEYS[k])
    flats[#flats + 1] = flat
    added = added + #flat / 2
    for i = 1, #flat, 2 do
      local f, v = flat[i], tonumber(flat[i + 1])
      local t = total[f]
      if t == nil then order[#order + 1] = f; total[f] = v else total[f] = t + v end
      if v > largest then largest = v elseif -v > largest then largest = -v end
    end
  end
  next_key = next_key + size
  -- No sum along the way is larger than the largest value times the values added.
  if largest * added < big then
    local parts = {}
    for i, f in ipairs(order) do
      parts[i] = cjson.encode(f) .. ':' .. string.format('%.0f', total[f])
    end
    out[g] = '{' .. table.concat(parts, ',') .. '}'
  else
    for i, flat in ipairs(flats) do flats[i] = #flat > 0 and cjson.encode(flat) or '[]' end
    out[g] = '[' .. table.concat(flats, ',') .. ']'
  end
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

# Fold partitions' values into the rollups of one shard (docs/projections.md "Rollups").
# KEYS[1..3] are the shard's dirty marks, scopes and seen versions, then the keys the
# groups name. ARGV[1] is JSON: ``p``, per partition [partition, version, the version the
# shard must have seen for this fold to complete it, its index key, the version seen moves
# to then]; ``g``, per mark [totals key (0: none, the oldest-untouched share), shares key,
# TTL, mark, 1 if the publisher announces it, scope member or '', its partitions' values:
# per partition (each at most once) [index into p, index into ARGV of the bucket's values (a
# JSON object of strings), the version of the commit before that changed the bucket (-1: the
# bucket was empty before the commit; 0: not known), {field: change} of the commit (0:
# none), the indexes into ``dv`` of the totals derived from it]]; ``dv``, per derived total
# (a minute's hour and UTC day, an hour's UTC day, a local day's week, month, quarter, year
# and all time: windows.derived_buckets) [totals key, TTL, mark, 1 if the publisher
# announces it]; ``keep``, how far back (ms) the index keeps marks. A share folds only over
# an older version, so a fold sent twice, or late, changes nothing. Totals move by the
# commit's changes when the stored share holds the values before them: it is of the commit
# before, or the bucket was empty and there is no share; else by new share - stored share.
# A mark's partitions are folded together: one HMGET of their shares, the totals moved once
# by the sum of their moves (one HMGET, one HSET and one HDEL) while Lua's doubles hold
# every step exactly (below 2^53), else by each move in exact decimal arithmetic; one HSET
# of the shares. A derived total moves by the sum of its sources' moves, the same way. A mark
# the publisher announces counts each partition whose share moved its totals. A share is
# stored as '[version,{field: value}]'. Returns 1.
FOLD_LUA = (
    CHUNKED_LUA
    + """
local a = cjson.decode(ARGV[1])
local limit = 9007199254740992
local function neg(x)
  if string.sub(x, 1, 1) == '-' then return string.sub(x, 2) end
  return '-' .. x
end
-- Exact integers of any size in decimal text (a derived total sums many partitions' days,
-- and can pass Redis's 64 bits): digits only, most significant first.
local function digits_add(x, y)
  local out, carry, i, j = {}, 0, #x, #y
  while i > 0 or j > 0 or carry > 0 do
    local s = carry + (i > 0 and string.byte(x, i) - 48 or 0)
    s = s + (j > 0 and string.byte(y, j) - 48 or 0)
    out[#out + 1] = string.char(48 + s % 10)
    carry = s >= 10 and 1 or 0
    i, j = i - 1, j - 1
  end
  return string.reverse(table.concat(out))
end
local function digits_sub(x, y) -- x >= y
  local out, borrow, i, j = {}, 0, #x, #y
  while i > 0 do
    local s = string.byte(x, i) - 48 - borrow - (j > 0 and string.byte(y, j) - 48 or 0)
    if s < 0 then s, borrow = s + 10, 1 else borrow = 0 end
    out[#out + 1] = string.char(48 + s)
    i, j = i - 1, j - 1
  end
  local text = (string.gsub(string.reverse(table.concat(out)), '^0+', ''))
  return text == '' and '0' or text
end
local function exact_add(x, y)
  local nx, ny = string.sub(x, 1, 1) == '-', string.sub(y, 1, 1) == '-'
  if nx then x = string.sub(x, 2) end
  if ny then y = string.sub(y, 2) end
  local s, negative
  if nx == ny then
    s, negative = digits_add(x, y), nx
  elseif #x > #y or (#x == #y and x >= y) then
    s, negative = digits_sub(x, y), nx
  else
    s, negative = digits_sub(y, x), ny
  end
  if negative and s ~= '0' then return '-' .. s end
  return s
end
-- The moves of one mark's totals, field by field: ``names`` in order, ``ds`` their sum (a
-- double), ``exact`` false once a move or a partial sum left the exact range, ``each`` every
-- move for exact decimal arithmetic then: a number below 2^53 (exact), or exact text.
local function moves()
  return {names = {}, ds = {}, exact = {}, each = {}, adds = 0}
end
-- The sum of ``f``'s moves so far (0 for a field not moved yet, which is listed now).
local function so_far(m, f)
  local was = m.ds[f]
  if was == nil then
    m.names[#m.names + 1] = f
    m.exact[f], m.each[f] = true, {}
    was = 0
  end
  return was
end
local function add(m, f, d, exact)
  m.adds = m.adds + 1
  local sum = so_far(m, f) + d
  if math.abs(d) >= limit or math.abs(sum) >= limit then m.exact[f] = false end
  m.ds[f] = sum
  local each = m.each[f]
  each[#each + 1] = exact
end
-- Move the totals of ``tk``; returns whether it held one of the fields before (if not, it
-- may be new: no TTL yet).
local function move(tk, m)
  local names, totals, held = m.names, {}, false
  for i = 1, #names, 1000 do
    local got = redis.call('HMGET', tk, unpack(names, i, math.min(i + 999, #names)))
    for j = 1, #got do
      totals[i + j - 1] = got[j]
      if got[j] then held = true end
    end
  end
  local sets, zeros = {}, {}
  for i, f in ipairs(names) do
    local t, d = tonumber(totals[i] or '0'), m.ds[f]
    local s = t and t + d
    if m.exact[f] and s and math.abs(t) < limit and math.abs(s) < limit then
      if s == 0 then
        zeros[#zeros + 1] = f
      else
        sets[#sets + 1] = f
        sets[#sets + 1] = string.format('%.0f', s)
      end
    else
      local sum = totals[i] or '0'
      for _, x in ipairs(m.each[f]) do
        if type(x) == 'number' then x = string.format('%.0f', x) end
        sum = exact_add(sum, x)
      end
      if sum == '0' then
        zeros[#zeros + 1] = f
      else
        sets[#sets + 1] = f
        sets[#sets + 1] = sum
      end
    end
  end
  chunked('HSET', tk, sets)
  chunked('HDEL', tk, zeros)
  return held
end
-- Add the moves of ``m`` to those of ``into``.
local function merge(into, m)
  for _, f in ipairs(m.names) do
    local sum = so_far(into, f) + m.ds[f]
    if not m.exact[f] or math.abs(sum) >= limit then into.exact[f] = false end
    into.ds[f] = sum
    local each = into.each[f]
    for _, x in ipairs(m.each[f]) do each[#each + 1] = x end
  end
  into.adds = into.adds + m.adds
end
local scopes, indexed, derived = {}, {}, {}
for _, g in ipairs(a.g) do
  local sk, members = KEYS[g[2]], g[7]
  local names = {}
  for i, e in ipairs(members) do names[i] = a.p[e[1]][1] end
  local olds = redis.call('HMGET', sk, unpack(names))
  local m, shares, fresh, changed = moves(), {}, false, 0
  for i, e in ipairs(members) do
    local part = a.p[e[1]]
    local p, v, old = part[1], part[2], olds[i]
    local oldv = 0
    if old then oldv = tonumber(string.match(old, '^%[(%d+),') or cjson.decode(old)[1]) end
    if v > oldv then
      local text, adds = ARGV[e[2]], m.adds
      if g[1] > 0 then
        if (e[3] > 0 and e[3] == oldv) or (e[3] == -1 and not old) then
          for f, d in pairs(e[4]) do add(m, f, d, d) end
        else
          local newf, oldf = cjson.decode(text), old and cjson.decode(old)[2] or {}
          for f, x in pairs(newf) do
            local was = oldf[f]
            if was ~= x then
              add(m, f, tonumber(x) - tonumber(was or '0'), x)
              if was then add(m, f, 0, neg(was)) end
            end
          end
          for f, was in pairs(oldf) do
            if newf[f] == nil then add(m, f, -tonumber(was), neg(was)) end
          end
        end
      end
      if m.adds > adds then changed = changed + 1 end
      shares[#shares + 1] = p
      shares[#shares + 1] = '[' .. string.format('%.0f', v) .. ',' .. text .. ']'
      if not old then fresh = true end
      local marks = indexed[e[1]] or {}
      marks[#marks + 1] = v
      marks[#marks + 1] = g[4]
      indexed[e[1]] = marks
    end
  end
  if #shares > 0 then
    local total_new = false
    if #m.names > 0 then
      total_new = not move(KEYS[g[1]], m)
      if g[5] == 1 then redis.call('HINCRBY', KEYS[1], g[4], changed) end
      for _, t in ipairs(g[8] or {}) do
        local d = derived[t]
        if not d then
          d = {m = moves(), changed = 0}
          derived[t] = d
        end
        merge(d.m, m)
        d.changed = d.changed + changed
      end
    end
    chunked('HSET', sk, shares)
    -- Totals and shares expire together: a share gone before its total would be added
    -- again. Only keys that may be new need it: a shares key held one of these partitions'
    -- shares (its first one set the TTL), a totals key held one of the fields moved.
    if g[3] > 0 and (fresh or total_new) then
      redis.call('EXPIRE', sk, g[3], 'NX')
      if g[1] > 0 then redis.call('PEXPIREAT', KEYS[g[1]], redis.call('PEXPIRETIME', sk), 'NX') end
    end
    if g[6] ~= '' and not scopes[g[6]] then
      scopes[g[6]] = true
      redis.call('SADD', KEYS[2], g[6])
    end
  end
end
for t, d in pairs(derived) do
  local dv = a.dv[t]
  -- A derived total has no shares: its TTL is its own, given when it may be new (it held
  -- none of the fields moved).
  if not move(KEYS[dv[1]], d.m) and dv[2] > 0 then
    redis.call('EXPIRE', KEYS[dv[1]], dv[2], 'NX')
  end
  if dv[4] == 1 then redis.call('HINCRBY', KEYS[1], dv[3], d.changed) end
end
for i, part in ipairs(a.p) do
  if indexed[i] then chunked('ZADD', KEYS[part[4]], indexed[i]) end
  local lag = part[1] .. '!since'
  local got = redis.call('HMGET', KEYS[3], part[1], lag)
  local seen = tonumber(got[1] or '0')
  if seen >= part[3] and part[5] > seen then
    redis.call('HSET', KEYS[3], part[1], string.format('%.0f', part[5]))
    if got[2] then redis.call('HDEL', KEYS[3], lag) end
  elseif seen < part[5] and not got[2] then
    -- An earlier change is missing here: note since when (the version of the first fold
    -- that found it missing), so that readers see a busy partition behind too.
    redis.call('HSET', KEYS[3], lag, string.format('%.0f', part[2]))
  end
  local oldest = '(' .. string.format('%.0f', part[2] - a.keep)
  redis.call('ZREMRANGEBYSCORE', KEYS[part[4]], '-inf', oldest)
end
return 1
"""
)

# The values of some buckets of one partition for a fold outside a commit (KEYS[1] its
# checkpoint, KEYS[2] its expect hash, then the buckets), with the version they are at and
# the shards' expected versions: '[version, buckets, lows, {shard: version}]'. ARGV[1] is
# JSON: ``f`` and ``u`` (as in VALUES_LUA) and ``bump``: when larger, the partition's version
# first moves there (so the fold outranks shares a lost timeline left at later versions).
LOAD_VALUES_LUA = (
    VALUES_LUA
    + """
local a = cjson.decode(ARGV[1])
local v = tonumber(redis.call('HGET', KEYS[1], '!version') or '0')
if a.bump > v then
  v = a.bump
  redis.call('HSET', KEYS[1], '!version', string.format('%.0f', v))
end
local flat, expect = redis.call('HGETALL', KEYS[2]), {}
for i = 1, #flat, 2 do expect[#expect + 1] = cjson.encode(flat[i]) .. ':' .. flat[i + 1] end
return '[' .. string.format('%.0f', v) .. ',' .. values(a.f, a.u) .. ',{'
  .. table.concat(expect, ',') .. '}]'
"""
)

# A partition's marks changed after a version (KEYS[1] its checkpoint, KEYS[2] its recent
# marks; ARGV[1] the version), with its version now: every commit up to that version that
# changed a bucket after ARGV[1] is among them. Returns {version, mark, score, mark, ...}.
RECENT_LUA = """
local v = redis.call('HGET', KEYS[1], '!version') or '0'
local found = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES')
table.insert(found, 1, v)
return found
"""

# The oldest untouched lead of each scope (KEYS: the shares keys of their ``!u`` buckets):
# the lowest of the partitions' shares, as a JSON array (null where none).
OLDEST_SHARE_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local low = nil
  for _, raw in ipairs(redis.call('HVALS', key)) do
    local u = tonumber(cjson.decode(raw)[2].u)
    if u and (low == nil or u < low) then low = u end
  end
  out[i] = low and string.format('%.0f', low) or 'null'
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


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` is redis-py's asyncio client losing a connection under a call without
    saying so: an AttributeError or TypeError from a transport it closed meanwhile (its
    writer gone, or the transport's write callback; redis-py issue 4287), raised in its
    connection code or in asyncio's transport code beneath it. Seen once in a Redis Cluster
    failover: "'NoneType' object has no attribute 'writelines'"."""
    if not isinstance(exc, AttributeError | TypeError):
        return False
    files = []
    trace = exc.__traceback__
    while trace is not None:
        files.append(trace.tb_frame.f_code.co_filename.replace("\\", "/"))
        trace = trace.tb_next
    if not files:
        return False
    innermost = files[-1]
    in_redis = any(f.endswith("/redis/asyncio/connection.py") for f in files)
    return in_redis and (
        innermost.endswith("/redis/asyncio/connection.py")
        or innermost.endswith(("/asyncio/streams.py", "/asyncio/selector_events.py"))
    )


def redis_unavailable(exc: BaseException) -> bool:
    """Whether a writer should wait and retry: ``REDIS_UNAVAILABLE``, or a connection
    redis-py lost under a call without saying so (``lost_connection``)."""
    return isinstance(exc, REDIS_UNAVAILABLE) or lost_connection(exc)


# Every failure of a Redis call, cluster client included.
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException)
# ... or of the socket beneath it.
REDIS_OR_SOCKET_FAILURES: tuple[type[Exception], ...] = (*REDIS_FAILURES, OSError)


def redis_unreadable(exc: BaseException) -> bool:
    """Whether a reader should answer "unavailable" (and a loop try again later): a failure
    of a Redis call or of its socket, or a connection redis-py lost under a call without
    saying so (``lost_connection``)."""
    return isinstance(exc, REDIS_OR_SOCKET_FAILURES) or lost_connection(exc)


# Every script of this module (a Redis Cluster gets them loaded on each master).
SCRIPTS = (
    COMMIT_LUA,
    SUM_GROUPS_LUA,
    LOAD_LUA,
    CLEAR_DIRTY_LUA,
    MARK_LUA,
    FOLD_LUA,
    LOAD_VALUES_LUA,
    RECENT_LUA,
    OLDEST_SHARE_LUA,
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
    Cluster; the client follows its slots (MOVED, ASK, failover) by itself. Its commands
    are packed by hiredis (projections/command_packing.py)."""
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
        client: RedisClient = RedisCluster(
            startup_nodes=nodes,
            reinitialize_steps=0,
            **common,
            **{"ssl": tls, **credentials, **options},
        )
    else:
        client = aioredis.Redis.from_url(url, **options, **common, health_check_interval=30)
    use_fast_packing(client)
    return client


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

_UNKNOWN: tuple[int, dict[str, int]] = (0, {})  # a mark's fold without its commit's changes
# A commit's fold follows it within a round trip: health counts a shard behind only after this.
FOLD_GRACE_MS = 5_000


def mark_of(text: bytes | str) -> DirtyMark:
    """``scope<TAB>id<TAB>bucket`` as a tuple (an id may hold a tab; scopes and buckets do
    not)."""
    scope, rest = _str(text).split(DIRTY_SEP, 1)
    scope_id, bucket = rest.rsplit(DIRTY_SEP, 1)
    return scope, scope_id, bucket


@dataclass(frozen=True)
class Values:
    """A partition's values of some marks at one version: what a fold writes."""

    partition: int
    version: int
    fields: dict[DirtyMark, bytes]  # each mark's values: a JSON object of strings
    before: dict[int, int]  # per shard: the version the shard must have seen (see FOLD_LUA)
    upto: int  # ... for its seen version to move here: every change up to it is in ``fields``
    # Per mark a commit changed: the version of the commit before that changed it (0: not
    # known) and this commit's changes, which move the totals if the share is of that version.
    changes: dict[DirtyMark, tuple[int, dict[str, int]]] = field(default_factory=dict)


class RedisStore(DerivedReads):
    """``ProjectionStore`` (projections/stores.py) on Redis or Redis Cluster."""

    def __init__(self, client: RedisClient, namespace: str) -> None:
        self.client = client
        self.keys = Keys(namespace)
        self._commit = client.register_script(COMMIT_LUA)
        self._load = client.register_script(LOAD_LUA)
        self._sum_groups = client.register_script(SUM_GROUPS_LUA)
        self._clear_dirty = client.register_script(CLEAR_DIRTY_LUA)
        self._mark = client.register_script(MARK_LUA)
        self._fold = client.register_script(FOLD_LUA)
        self._load_values = client.register_script(LOAD_VALUES_LUA)
        self._recent = client.register_script(RECENT_LUA)
        self._unfolded: set[int] = set()  # partitions whose last fold failed
        self._held: list[Values] | None = None  # folds waiting for flush_folds
        self._folding: asyncio.Future[None] | None = None  # flush_folds(wait=False)'s fold
        self._oldest = client.register_script(OLDEST_SHARE_LUA)

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
        await self.settle_folds()
        if self._unfolded:  # raises while the rollups cannot be written: nothing new lands
            await self.fold_missing(sorted(self._unfolded))
            self._unfolded.clear()
        landed = Landed()
        for commit in commits:
            found = change_out_of_range(commit.plan)
            if found is not None:  # JSON cannot even carry it to the script exactly
                landed.out_of_range[commit.partition] = (
                    f"a change of {found[1]!r} in {found[0]!r} would leave the exact range"
                )
        sent = [c for c in commits if c.partition not in landed.out_of_range]
        now_ms = time.time_ns() // 1_000_000
        calls = [commit_call(self.keys, commit, now_ms) for commit in sent]

        results = await self._scripts(
            [(self._commit, keys, [payload]) for keys, payload, _, _ in calls]
        )
        frozen = False
        folds: list[Values] = []
        for commit, result, (_, _, marks, shards) in zip(sent, results, calls, strict=True):
            if result[0]:
                version, lows, before, expired, prior = orjson.loads(result[1])
                landed.expired += expired
                changed = marks[: len(prior)]
                fields = dict(zip(changed, result[2:], strict=True))
                fields.update(_lows(marks[len(prior) :], lows))
                deltas = commit.plan.deltas
                changes = {m: (v, deltas[m]) for m, v in zip(changed, prior, strict=True) if v}
                shards_before = dict(zip(shards, before, strict=True))
                folds.append(
                    Values(commit.partition, version, fields, shards_before, version, changes)
                )
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
        if self._held is not None:
            self._held += folds
        else:
            await self._fold_landed(folds)
        if frozen:
            raise NamespaceFrozen(f"{self.keys.namespace} is frozen for a rebuild")
        return landed

    def hold_folds(self) -> None:
        self._held = self._held or []

    async def flush_folds(self, *, wait: bool = True) -> None:
        folds, self._held = self._held or [], None
        await self.settle_folds()  # one fold at a time, in the order of their commits
        if wait:
            await self._fold_landed(folds)
        elif folds:
            self._folding = asyncio.ensure_future(self._fold_landed(folds))

    async def settle_folds(self) -> None:
        folding, self._folding = self._folding, None
        if folding is not None:
            await folding

    async def _fold_landed(self, folds: Sequence[Values]) -> None:
        """Fold what commits that landed changed."""
        if not folds:
            return
        try:
            await self.fold(folds)
        except Exception as exc:
            if not (isinstance(exc, REDIS_FAILURES) or lost_connection(exc)):
                raise
            # The commits landed: the fold is redone (``fold_missing``) before this store
            # commits again, so no commit gets ahead of a fold that failed.
            self._unfolded.update(values.partition for values in folds)
            log.warning("folding into the rollups failed (%s); folding again first", described(exc))

    async def fold(self, folds: Sequence[Values]) -> None:
        """Fold partitions' values into the rollups: one script call per shard, all at once;
        in it, each mark's partitions together (FOLD_LUA). A partition's values come once per
        call: more of one partition fold in the calls after, in their order."""
        rounds: list[list[Values]] = []
        for values in folds:
            for round_ in rounds:
                if all(other.partition != values.partition for other in round_):
                    round_.append(values)
                    break
            else:
                rounds.append([values])
        for round_ in rounds:
            await self._fold_round(round_)

    async def _fold_round(self, folds: Sequence[Values]) -> None:
        """``fold`` of values of distinct partitions."""
        now_ms = time.time_ns() // 1_000_000  # for the TTLs of keys it makes
        by_shard: dict[int, dict[DirtyMark, list[Values]]] = {}
        for values in folds:
            for mark in values.fields:
                by_shard.setdefault(shard_of(mark[0], mark[1]), {}).setdefault(mark, []).append(
                    values
                )
        calls: list[ScriptCall] = []
        for shard, marks in by_shard.items():
            keys = self.keys.shard_keys(shard)
            parts: dict[int, int] = {}  # partition -> its place in "p" (from 1)
            p: list[list[object]] = []
            g: list[list[object]] = []
            dv: list[list[object]] = []  # the totals derived from marks' (FOLD_LUA)
            derived: dict[DirtyMark, int] = {}  # mark -> its place in "dv" (from 1)
            texts: list[bytes] = []  # ARGV[2...]: the marks' values
            for mark, sharing in marks.items():
                targets: list[int] = []
                for bucket in derived_buckets(mark[2]):
                    target = (mark[0], mark[1], bucket)
                    if target not in derived:
                        keys.append(self.keys.total(target))
                        ttl = stored_ttl_seconds(bucket, now_ms)
                        announced = int(bucket[0] in DIRTY_TIERS)
                        dv.append([len(keys), ttl, DIRTY_SEP.join(target), announced])
                        derived[target] = len(dv)
                    targets.append(derived[target])
                total = 0
                if mark[2] != OLDEST:
                    keys.append(self.keys.total(mark))
                    total = len(keys)
                keys.append(self.keys.shares(mark))
                shares = len(keys)
                members: list[list[object]] = []
                for values in sharing:
                    if values.partition not in parts:
                        keys.append(self.keys.folded(shard, values.partition))
                        p.append(
                            [
                                str(values.partition),
                                values.version,
                                values.before.get(shard, 0),
                                len(keys),
                                values.upto,
                            ]
                        )
                        parts[values.partition] = len(p)
                    texts.append(values.fields[mark])
                    prior, changes = values.changes.get(mark, _UNKNOWN)
                    members.append([parts[values.partition], len(texts) + 1, prior, changes or 0])
                g.append(
                    [
                        total,
                        shares,
                        stored_ttl_seconds(mark[2], now_ms),
                        DIRTY_SEP.join(mark),
                        int(mark[2] != OLDEST and mark[2][0] in DIRTY_TIERS),
                        "" if mark[0] == "org" else f"{mark[0]}:{mark[1]}",
                        members,
                        targets,
                    ]
                )
            args = orjson.dumps({"p": p, "g": g, "dv": dv, "keep": REFOLD_WINDOW_MS})
            calls.append((self._fold, keys, [args, *texts]))
        await self._scripts(calls)

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

    async def oldest_untouched(self, scopes: Sequence[tuple[str, str]]) -> list[int | None]:
        """Creation time (ms) of each scope's oldest open, untouched lead, if any: the lowest
        of the partitions' shares in the rollups, one call per shard."""
        groups = _by_shard([(scope, scope_id) for scope, scope_id in scopes])
        calls: list[ScriptCall] = [
            (self._oldest, [self.keys.shares((*scopes[i], OLDEST)) for i in places], [])
            for places in groups.values()
        ]
        out: list[int | None] = [None] * len(scopes)
        for places, reply in zip(groups.values(), await self._scripts(calls), strict=True):
            for i, low in zip(places, orjson.loads(reply), strict=True):
                out[i] = low
        return out

    async def dirty(self) -> list[dict[DirtyMark, int]]:
        """Per rollup shard: (scope, id, bucket) changed since the publisher last cleared it."""
        found = await pipelined(
            self.client,
            lambda pipe: [pipe.hgetall(self.keys.shard_keys(k)[0]) for k in range(ROLLUP_SHARDS)],
        )
        return [{mark_of(mark): int(count) for mark, count in raw.items()} for raw in found]

    async def clear_dirty(self, group: int, seen: Mapping[DirtyMark, int]) -> None:
        """Forget the marks of shard ``group`` still at the count they were read with."""
        if not seen:
            return
        args = [part for mark, count in seen.items() for part in (DIRTY_SEP.join(mark), str(count))]
        await self._clear_dirty(keys=[self.keys.shard_keys(group)[0]], args=args)

    async def scopes(self) -> set[tuple[str, str]]:
        """Every (scope, id) with aggregates, beside the org."""
        found = await pipelined(
            self.client,
            lambda pipe: [pipe.smembers(self.keys.shard_keys(k)[1]) for k in range(ROLLUP_SHARDS)],
        )
        out = set()
        for members in found:
            for member in members:
                scope, _, ident = _str(member).partition(":")
                out.add((scope, ident))
        return out

    async def has_scope(self, scope: str, scope_id: str) -> bool:
        key = self.keys.shard_keys(shard_of(scope, scope_id))[1]
        return bool(await self.client.sismember(key, f"{scope}:{scope_id}"))

    async def sums_many(
        self, requests: Sequence[tuple[str, str, tuple[str, ...]]]
    ) -> list[dict[str, int]]:
        """``sums`` for many (scope, id, buckets) at once, from the rollups: one script call
        per shard, whatever the number of partitions."""
        groups = _by_shard([(scope, scope_id) for scope, scope_id, _ in requests])
        calls: list[ScriptCall] = []
        for places in groups.values():
            keys = [
                self.keys.total((requests[i][0], requests[i][1], bucket))
                for i in places
                for bucket in requests[i][2]
            ]
            sizes = orjson.dumps([len(requests[i][2]) for i in places])
            calls.append((self._sum_groups, keys, [sizes]))
        totals: list[dict[str, int]] = [{} for _ in requests]
        for places, reply in zip(groups.values(), await self._scripts(calls), strict=True):
            for i, total in zip(places, orjson.loads(reply), strict=True):
                totals[i] = total if isinstance(total, dict) else _exact_sum(total)
        return totals

    # Folding outside a commit ---------------------------------------------------------------

    async def behind(
        self, partitions: Sequence[int], grace_ms: int = 0
    ) -> dict[int, dict[int, int]]:
        """Per partition, the shards that have not folded its last commit that changed them,
        with the version each has folded it to (seen). With ``grace_ms``, a shard counts
        only when its missing change is that old: its last commit is, or a fold that old
        already found an earlier change missing (a busy partition commits all the time)."""
        shards = range(ROLLUP_SHARDS)

        def queue(pipe: Any) -> None:
            for p in partitions:
                pipe.hgetall(self.keys.expect(p))
            for k in shards:
                pipe.hgetall(self.keys.shard_keys(k)[2])

        found = await pipelined(self.client, queue)
        expects, seens = found[: len(partitions)], found[len(partitions) :]
        settled = time.time_ns() // 1_000_000 - grace_ms
        out: dict[int, dict[int, int]] = {}
        for p, expect in zip(partitions, expects, strict=True):
            for shard, version in expect.items():
                k = int(shard)
                seen = int(seens[k].get(str(p).encode(), 0))
                if seen >= int(version):
                    continue
                since = int(seens[k].get(f"{p}!since".encode(), version))
                if not grace_ms or min(int(version), since) <= settled:
                    out.setdefault(p, {})[k] = seen
        return out

    async def unfolded(self, partitions: Sequence[int], grace_ms: int = 0) -> int:
        """How many (partition, shard) pairs have commits not folded yet (0: the rollups hold
        every commit of these partitions; ``grace_ms`` as in ``behind``)."""
        return sum(len(shards) for shards in (await self.behind(partitions, grace_ms)).values())

    async def fold_missing(self, partitions: Sequence[int], grace_ms: int = 0) -> int:
        """Fold again what commits of these partitions changed and no fold brought into the
        rollups: a worker stopped between commit and fold, a fold failed, a shard's master
        lost its last writes. Returns the marks folded."""
        await self.settle_folds()  # this store's own fold on its way is not missing
        behind = await self.behind(partitions, grace_ms)
        folds = []
        for p, shards in behind.items():
            recent = self.keys.checkpoint(p), self.keys.recent(p)
            (found,) = await self._scripts([(self._recent, list(recent), [min(shards.values())])])
            upto, flat = int(found[0]), found[1:]
            marks = [
                mark
                for raw, score in zip(flat[::2], flat[1::2], strict=True)
                if (mark := mark_of(raw))
                and (k := shard_of(mark[0], mark[1])) in shards
                and float(score) > shards[k]
            ]
            for k in set(shards) - {shard_of(m[0], m[1]) for m in marks}:
                log.error(
                    "partition %d: rollup shard %d misses its commits after version %d and no "
                    "marks of them are left: its reads stay partial until a rebuild",
                    p,
                    k,
                    shards[k],
                )
            version, fields, _ = await self._values_of(p, marks, bump=0)
            # Every commit up to ``upto`` is among the marks read: seen may move there.
            folds.append(Values(p, version, fields, shards, upto))
        await self.fold(folds)
        return sum(len(f.fields) for f in folds)

    async def refold_after_loss(self, partition: int) -> int:
        """After the partition lost its last writes (its version went back): fold again every
        mark the rollups hold of it at a later version (they came from the lost writes), from
        what the partition holds now, at a version above theirs. A shard's seen version moves
        past the loss only if it had folded every commit the partition still holds (else
        ``fold_missing`` finishes). Returns the marks folded."""
        await self.settle_folds()
        (stored,) = await self.progress([partition])
        version = int(stored.get(VERSION, 0))
        found = await pipelined(
            self.client,
            lambda pipe: [
                pipe.zrangebyscore(
                    self.keys.folded(k, partition), f"({version}", "+inf", withscores=True
                )
                for k in range(ROLLUP_SHARDS)
            ],
        )
        entries = [(mark_of(raw), int(score)) for shard in found for raw, score in shard]
        if not entries:
            return 0
        top = max(score for _, score in entries)
        bumped, fields, expect = await self._values_of(
            partition, [m for m, _ in entries], bump=top + 1
        )
        await self.fold([Values(partition, bumped, fields, expect, bumped)])
        return len(fields)

    async def _values_of(
        self, partition: int, marks: Sequence[DirtyMark], bump: int
    ) -> tuple[int, dict[DirtyMark, bytes], dict[int, int]]:
        """The partition's values of some marks, the version they are at (moved to ``bump``
        first if that is larger) and its expected version per shard, read at once."""
        ordered = sorted(set(marks), key=lambda m: m[2] == OLDEST)
        keys = [
            self.keys.checkpoint(partition),
            self.keys.expect(partition),
            *(self.keys.bucket(partition, m) for m in ordered),
        ]
        buckets = [i + 3 for i, m in enumerate(ordered) if m[2] != OLDEST]
        lows = [i + 3 for i, m in enumerate(ordered) if m[2] == OLDEST]
        args = orjson.dumps({"f": buckets, "u": lows, "bump": bump})
        (reply,) = await self._scripts([(self._load_values, keys, [args])])
        version, values, oldest, expect = orjson.loads(reply)
        expected = {int(k): int(v) for k, v in expect.items()}
        return version, _fields(ordered, values, oldest), expected


def _exact_sum(flats: Sequence[Sequence[str]]) -> dict[str, int]:
    """Buckets' flat [field, value, ...] lists summed in Python integers."""
    total: dict[str, int] = {}
    for flat in flats:
        for name, value in zip(flat[::2], flat[1::2], strict=True):
            total[name] = total.get(name, 0) + int(value)
    return total


def _by_shard(scopes: Sequence[tuple[str, str]]) -> dict[int, list[int]]:
    """The places of ``scopes`` per rollup shard."""
    groups: dict[int, list[int]] = {}
    for i, (scope, scope_id) in enumerate(scopes):
        groups.setdefault(shard_of(scope, scope_id), []).append(i)
    return groups


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


def _fields(
    marks: Sequence[DirtyMark], buckets: Sequence[Sequence[str]], lows: Sequence[int | None]
) -> dict[DirtyMark, bytes]:
    """VALUES_LUA's answer of buckets and lows (buckets, then the untouched sets of
    ``marks``) as each mark's values, a JSON object of strings."""
    fields = {
        mark: orjson.dumps(dict(zip(flat[::2], flat[1::2], strict=True)))
        for mark, flat in zip(marks[: len(buckets)], buckets, strict=True)
    }
    fields.update(_lows(marks[len(buckets) :], lows))
    return fields


def _lows(marks: Sequence[DirtyMark], lows: Sequence[int | None]) -> dict[DirtyMark, bytes]:
    """The values of the oldest-untouched marks: ``{"u": ms}``, or none."""
    return {
        mark: b"{}" if low is None else orjson.dumps({"u": str(low)})
        for mark, low in zip(marks, lows, strict=True)
    }


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

    Rollup shards go with the partitions. Each partition's checkpoint hash is replaced,
    atomically, by a frozen tombstone that lives a day: a writer that still holds the old
    generation then meets the freeze and moves to the live one, instead of seeing no
    checkpoint and writing a fresh, orphaned copy.
    """
    deleted = 0
    batch: list[bytes] = []
    tombstone = client.register_script(TOMBSTONE_LUA)
    async for key in client.scan_iter(match=f"{{{namespace}:*", count=1_000):
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
