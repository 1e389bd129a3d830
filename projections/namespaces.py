"""Namespace generations of the projections, and the switch from one to the next.

Readers and writers find the live generation in ``<prefix>:current``
(``<prefix>:g1`` when nothing was ever switched). A rebuild fills
``<prefix>:g<N+1>`` from the log, *freezes* the live generation (a flag in each
partition's checkpoint hash, which the commit script refuses to write past),
catches up with the frozen checkpoints, points ``current`` at the new
generation and deletes the old one. Writers that meet the freeze wait for the
switch and continue in the new generation from its checkpoints.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from projections.store import RedisStore
from projections.stores import FROZEN


def pointer(prefix: str) -> str:
    return f"{prefix}:current"


def rebuild_marker(prefix: str) -> str:
    return f"{prefix}:rebuilding"


# A rebuild renews its marker this often; one that died leaves it for at most MARKER_SECONDS.
MARKER_SECONDS = 30


async def mark_rebuilding(client: aioredis.Redis, prefix: str, old: str, new: str) -> None:
    """Tell readers a rebuild runs (``old`` stays live until the switch to ``new``)."""
    started = await client.hget(rebuild_marker(prefix), "started_ms")
    value: dict[FieldT, EncodableT] = {
        "from": old,
        "to": new,
        "started_ms": int(started or time.time_ns() // 1_000_000),
    }
    async with client.pipeline(transaction=True) as tx:
        tx.hset(rebuild_marker(prefix), mapping=value)
        tx.expire(rebuild_marker(prefix), MARKER_SECONDS)
        await tx.execute()


async def rebuilding(client: aioredis.Redis, prefix: str) -> dict[str, Any] | None:
    """The running rebuild: ``from``, ``to`` and ``started_ms``; None when none runs."""
    found = await client.hgetall(rebuild_marker(prefix))
    if not found:
        return None
    text = {_text(k): _text(v) for k, v in found.items()}
    return {"from": text["from"], "to": text["to"], "started_ms": int(text["started_ms"])}


async def rebuilt(client: aioredis.Redis, prefix: str) -> None:
    await client.delete(rebuild_marker(prefix))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def current_namespace(client: aioredis.Redis, prefix: str, *, create: bool = True) -> str:
    """The live generation. Writers (``create``) record the first one on first use; readers
    do not, so that after Redis was emptied the worker re-records the generation it writes."""
    if create:
        await client.set(pointer(prefix), f"{prefix}:g1", nx=True)
    value = await client.get(pointer(prefix))
    if value is None:
        return f"{prefix}:g1"
    return value.decode() if isinstance(value, bytes) else str(value)


def next_generation(namespace: str) -> str:
    match = re.fullmatch(r"(.*):g(\d+)", namespace)
    if match is None:
        raise ValueError(f"not a generation name: {namespace!r}")
    return f"{match.group(1)}:g{int(match.group(2)) + 1}"


async def freeze(client: aioredis.Redis, namespace: str, partitions: Iterable[int]) -> None:
    await RedisStore(client, namespace).freeze(partitions)


async def switch(client: aioredis.Redis, prefix: str, namespace: str) -> None:
    await client.set(pointer(prefix), namespace)


TOMBSTONE_SECONDS = 86_400


async def drop(client: aioredis.Redis, namespace: str) -> int:
    """Delete every key of a generation; returns how many.

    Each partition's checkpoint hash is replaced, in one transaction, by a frozen
    tombstone that lives a day: a writer that still holds the old generation then
    meets the freeze and moves to the live one, instead of seeing no checkpoint and
    writing a fresh, orphaned copy.
    """
    deleted = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{{{namespace}:p*", count=1_000):
        if key.endswith(b":ckpt"):
            async with client.pipeline(transaction=True) as tx:
                tx.delete(key)
                tx.hset(key, FROZEN, "1")
                tx.expire(key, TOMBSTONE_SECONDS)
                await tx.execute()
            deleted += 1
            continue
        batch.append(key)
        if len(batch) >= 1_000:
            deleted += await client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += await client.unlink(*batch)
    return deleted
