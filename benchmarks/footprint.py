"""Redis footprint over 120 simulated days at a constant daily volume: does state plateau?

    python -m benchmarks.footprint [--days 120] [--per-day 4000] [--at 60,90,120]

Simulates ``--days`` days of an org (``--per-day`` events a day on average, with the
simulator's usual duplicates and late events) ending now, and sends them through
the engine, end to end: one ``salespulse worker`` on the raw topic. The log goes out
in slices ending at each day of ``--at``; after each slice has been projected the
benchmark reads Redis's ``used_memory`` (its growth since the start of the run),
the leads created so far and the events applied, and prints them with bytes per
lead and per event and the growth between checkpoints. At the end it breaks the
state down by kind (MEMORY USAGE of every key of the run's generation).

Calendar buckets expire by a wall-clock TTL (docs/windows.md) and the log ends
now, so the buckets written are those a live run holds on the last day: the
figures of earlier checkpoints hold those of a day-120 run's buckets, and the
growth between checkpoints is that of the rest of the state (entity records,
dedupe ids, untouched-lead sets). Uses the local stack (started if needed) with
topics and keys of its own, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
import uuid
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

from benchmarks import numbers
from benchmarks.throughput import (
    applied,
    caught_up_on_stack,
    clean,
    memory_by_kind,
    redis_used_memory,
    worker_environment,
)
from config.connections import redis_client
from config.settings import Settings
from projections.lateness import DAY_MS
from projections.store import RedisStore, current_namespace
from projections.windows import ALL_TIME
from simulator.log import DUPLICATE, VALID, SimConfig, simulate
from stack.servers import servers
from streams.producer import publish
from streams.topics import ensure_topics
from streams.worker_process import WorkerProcess

MIB = 2**20


@dataclass
class Checkpoint:
    day: int
    events: int  # distinct events applied so far
    leads: int  # leads created so far
    used: int  # Redis used_memory growth since the start (bytes)


async def _leads(settings: Settings) -> int:
    """Leads created, ever: the org's all-time count."""
    client = redis_client(settings)
    try:
        store = RedisStore(client, await current_namespace(client, settings.topic_prefix))
        (org,) = await store.sums_many([("org", "", (ALL_TIME,))])
        return org.get("leads", 0)
    finally:
        await client.aclose()


def _wait_projected(settings: Settings, worker: WorkerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    time.sleep(2)  # ingest's first transaction of the slice
    while not asyncio.run(caught_up_on_stack(settings)):
        if not worker.alive():
            raise SystemExit(f"the worker exited; see {worker.log_path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the projections did not catch up in {timeout:.0f}s")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--per-day", type=int, default=4_000)
    parser.add_argument("--at", type=numbers, default=[60, 90, 120], help="checkpoint days")
    parser.add_argument("--timeout", type=float, default=3600, help="per slice (seconds)")
    args = parser.parse_args()
    if args.days < 1 or args.per_day < 1:
        parser.error("--days and --per-day must be at least 1")
    if not args.at or sorted(args.at) != args.at or args.at[-1] != args.days:
        parser.error(f"--at must be increasing days ending at --days ({args.days})")

    base = Settings.from_env()
    for server in servers(base):
        server.up()
    end_ms = time.time_ns() // 1_000_000
    start_ms = end_ms - args.days * DAY_MS
    records, tally = simulate(
        SimConfig(
            seed=120,
            count=args.days * args.per_day,
            end_ms=end_ms,
            history_ms=args.days * DAY_MS,
            duplicate_share=0.03,
            late_share=0.03,
            call_disorder_share=0.3,
        )
    )
    sent = [r for r in records if r.label in (VALID, DUPLICATE)]  # the log is in emit order
    emits = [r.emit_ms for r in sent]
    cuts = [bisect_left(emits, start_ms + day * DAY_MS + 1) for day in args.at]
    cuts[-1] = len(sent)
    settings = dataclasses.replace(base, topic_prefix=f"benchfoot{uuid.uuid4().hex[:8]}")
    asyncio.run(ensure_topics(settings))
    before = redis_used_memory(settings)
    worker = WorkerProcess(
        worker_environment(settings), Path(settings.stack_dir) / f"{settings.topic_prefix}.log"
    )
    checkpoints: list[Checkpoint] = []
    try:
        worker.start(timeout=120)
        done = 0
        for day, cut in zip(args.at, cuts, strict=True):
            started = time.monotonic()
            asyncio.run(publish(settings, settings.raw_topic, [r.value for r in sent[done:cut]]))
            _wait_projected(settings, worker, args.timeout)
            checkpoints.append(
                Checkpoint(
                    day,
                    asyncio.run(applied(settings)),
                    asyncio.run(_leads(settings)),
                    redis_used_memory(settings) - before,
                )
            )
            print(f"day {day}: {cut - done:,} records in {time.monotonic() - started:,.0f} s")
            done = cut
        by_kind = asyncio.run(memory_by_kind(settings))
    finally:
        worker.stop()
        asyncio.run(clean(settings))

    print(
        f"\nlog: {args.days} days, {len(sent):,} records ({tally.valid.total():,} distinct events, "
        f"{tally.valid['lead.created']:,} leads), {settings.partitions} partitions, "
        f"lateness horizon {settings.lateness_horizon}"
    )
    print(
        f"{'day':>5}{'events':>12}{'leads':>10}{'Redis MiB':>12}{'B/lead':>9}{'B/event':>9}"
        f"{'growth':>9}"
    )
    previous: Checkpoint | None = None
    for c in checkpoints:
        growth = f"{(c.used / previous.used - 1) * 100:+.1f}%" if previous else ""
        print(
            f"{c.day:>5}{c.events:>12,}{c.leads:>10,}{c.used / MIB:>12,.1f}"
            f"{c.used / max(c.leads, 1):>9,.0f}{c.used / max(c.events, 1):>9,.0f}{growth:>9}"
        )
        previous = c
    last = checkpoints[-1]
    print(f"state by kind on day {last.day} (MEMORY USAGE; keys, MiB, B/lead):")
    for kind, (keys, size) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        print(f"  {kind:<26}{keys:>12,}{size / MIB:>10,.1f}{size / max(last.leads, 1):>10,.0f}")


if __name__ == "__main__":
    main()
