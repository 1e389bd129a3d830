"""Redis CPU per event of each of the store's scripts, with the projector in this process
against the local stack's Redis (started if needed): where Redis's share of an event goes.

    python -m benchmarks.redis_scripts [--count 100000] [--partitions 12] [--batch 20000]

The throughput benchmark's log (``benchmarks.org_month``) is decoded, split over
``--partitions`` partitions as ``benchmarks.stages`` splits it, and applied in batches of
``--batch`` events by a ``Projector`` over a ``RedisStore`` of a namespace of its own (its keys
are deleted at the end), the lead facts of a batch fed back in the next one. No Kafka: the
offsets are counted here. Redis runs one script call at a time (a lock in the store), and
Redis's CPU (``INFO cpu``, user + system) is read before and after each call, so each
script's share is exact whatever else the event loop does. Also prints how many buckets the
folds got per event, and how many of them came with their commit's changes (the commit knew
the bucket was empty, or the commit before that changed it: docs/projections.md,
"Rollups"), and the commands the scripts ran per event (``INFO commandstats``: this resets
Redis's command statistics, so run it on a stack of one's own).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from benchmarks import org_month, require_at_least_one
from benchmarks.scrape import redis_up
from benchmarks.stages import decode_all, partition_of
from config.connections import redis_client
from config.settings import Settings
from projections.engine import DirectoryView
from projections.facts import LeadFact
from projections.store import RedisClient, RedisStore, ScriptCall, Values
from streams.garbage import tune_gc
from streams.projector import Positioned, Projector

# Commands the scripts do not run (the benchmark's own reads).
OWN_COMMANDS = frozenset({"info", "config|resetstat", "evalsha", "eval", "script|load"})


class MeteredStore(RedisStore):
    """A store that runs one script call at a time and adds Redis's CPU during each to the
    script's name."""

    def __init__(self, client: RedisClient, namespace: str) -> None:
        super().__init__(client, namespace)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.folded = self.with_changes = 0  # marks folded; of them, sent with their changes
        self._one_at_a_time = asyncio.Lock()
        self._names = {id(self._load): "load", id(self._commit): "commit", id(self._fold): "fold"}

    async def fold(self, folds: Sequence[Values]) -> None:
        self.folded += sum(len(values.fields) for values in folds)
        self.with_changes += sum(len(values.changes) for values in folds)
        await super().fold(folds)

    async def _scripts(self, calls: Sequence[ScriptCall]) -> list[Any]:
        async with self._one_at_a_time:
            before = await redis_cpu(self.client)
            answers = await super()._scripts(calls)
            spent = await redis_cpu(self.client) - before
        name = self._names.get(id(calls[0][0]), "other") if calls else "other"
        self.cpu[name] += spent
        self.calls[name] += len(calls)
        return answers


async def redis_cpu(client: RedisClient) -> float:
    found = await client.info("cpu")
    return float(found["used_cpu_user"]) + float(found["used_cpu_sys"])


async def run(count: int, partitions: int, batch: int) -> None:
    settings = Settings.from_env()
    client = redis_client(settings)
    store = MeteredStore(client, f"redisbench{uuid.uuid4().hex[:8]}")
    now_ms = time.time_ns() // 1_000_000
    events = decode_all(org_month(count, call_disorder_share=0.3)[0], now_ms)
    facts: list[LeadFact] = []

    async def publish(found: Sequence[LeadFact]) -> None:
        facts.extend(found)

    projector = Projector(store, DirectoryView({}, settings.rules), settings.rules, publish)
    offsets: dict[tuple[str, int], int] = defaultdict(int)

    def positioned(topic: str, item: Any) -> Positioned:
        partition = partition_of(item, partitions)
        offset = offsets[(topic, partition)]
        offsets[(topic, partition)] += 1
        return Positioned(topic, partition, offset, item)

    await client.config_resetstat()
    try:
        for first in range(0, len(events), batch):
            items = [positioned(settings.events_topic, e) for e in events[first : first + batch]]
            items += [positioned(settings.facts_topic, f) for f in facts]
            facts = []
            await projector.apply(items)
        stats = await client.info("commandstats")
    finally:
        async for key in client.scan_iter(match=f"{{{store.namespace}:*", count=1000):
            await client.delete(key)
        await client.aclose()
    n = len(events)
    print(f"events                {n:>9,} in {partitions} partitions, batches of {batch:,}")
    print("script                    calls   Redis CPU µs/event")
    for name in sorted(store.cpu, key=lambda k: -store.cpu[k]):
        print(f"{name:<22}{store.calls[name]:>9,}   {store.cpu[name] / n * 1e6:>10.1f}")
    print(f"{'all':<22}{'':>9}   {sum(store.cpu.values()) / n * 1e6:>10.1f}")
    print(
        f"buckets folded {store.folded / n:.2f} per event; "
        f"{store.with_changes / max(store.folded, 1):.0%} with their commit's changes"
    )
    print("commands in the scripts   calls/event   Redis's µs/event")
    rows = [
        (name.removeprefix("cmdstat_"), row)
        for name, row in stats.items()
        if name.removeprefix("cmdstat_") not in OWN_COMMANDS
    ]
    for name, row in sorted(rows, key=lambda r: -r[1]["usec"]):
        print(f"{name:<22}{row['calls'] / n:>13.2f}   {row['usec'] / n:>16.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks.redis_scripts", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    require_at_least_one(parser, args, "count", "partitions", "batch")
    redis_up(Settings.from_env())  # the local stack's Redis, started if it is not running
    tune_gc()
    asyncio.run(run(args.count, args.partitions, args.batch))


if __name__ == "__main__":
    main()
