"""Redis footprint after 60, 90 and 120 simulated days at a constant daily volume: does
state plateau?

    python -m benchmarks.footprint [--per-day 4000] [--at 60,90,120] [--settle 125]

For each day count of ``--at``, a run of its own: that many days of an org (``--per-day``
events a day on average, with the simulator's usual duplicates and late events) ending
now, sent through the engine end to end (one ``salespulse worker`` on the raw topic), then
Redis's ``used_memory`` (its growth since the run began), the leads created and the events
applied, with bytes per lead and per event and the growth from run to run. At the end it
breaks the last run's state down by kind (MEMORY USAGE of every key of its generation).

A replay packs days into seconds, so what a live run's Redis drops by wall clock would
stay, and it writes what a live run never does. Three things are therefore done before
measuring:

* the repair marks (``recent`` and the rollups' fold index) keep the last 2 minutes of
  commits (``REFOLD_WINDOW_MS``): the run waits that long, then sends the log's last few
  hundred records, whose commits trim them to what a live run holds;
* buckets and their rollups have a TTL from their first write (docs/windows.md): those a
  live run would have lost by now, as their period began more than their tier's TTL ago
  (judged in UTC: off by at most a zone's offset), are deleted, as Redis would have;
* the projector judges which buckets are still kept by the wall clock (``live_buckets``):
  the replay writes an event more than 3 hours older than now to its hour's or UTC day's
  bucket instead of its minute's, and one more than 40 days older to its week's, month's,
  quarter's, year's and all-time buckets instead of its day's, each with its rollup share,
  where a live run, judging each event as it arrives, writes those only for an event that
  came that late. Every bucket a live run would write is worked out from the log (each
  event at the time its source sent it, in each zone of the org), and the partitions'
  buckets and shares of any other are deleted; their rollup totals, which a live run has
  as well (the rollups derive them from the minutes and days), stay. A bucket any event
  names is kept for every scope and zone, so "live" is at least what a live run holds: the
  hour buckets of the last three days are all kept (3.2 MiB with their shares in a 120-day
  run), where a live run has only those of the scopes of events over 3 hours late.

The run prints Redis's used memory at each step: as the replay left it (raw), once the
TTLs are applied (TTLd: the only step before stop 39), and once what only the replay wrote
is gone too (live, what the goals are on).

Uses the local stack (started if needed) with topics and keys of its own, deleted
afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from redis.exceptions import RedisError

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
from projections.store import REFOLD_WINDOW_MS, RedisStore, current_namespace
from projections.validation import parse_instant_ms
from projections.windows import (
    ALL_TIME,
    TIER_TTL_SECONDS,
    TIERS,
    UTC_TIER_MS,
    calendar_range,
    live_buckets,
    stored_ttl_seconds,
)
from simulator.log import DUPLICATE, VALID, Record, SimConfig, simulate
from simulator.org import build_org
from stack.servers import servers
from streams.producer import publish
from streams.topics import ensure_topics
from streams.worker_process import WorkerProcess

MIB = 2**20
TAIL = 400  # records of the log's end sent once the replay's repair marks aged out


@dataclass
class Checkpoint:
    day: int
    events: int  # distinct events applied
    leads: int  # leads created
    raw: int  # Redis used_memory growth since the run began (bytes), as the replay left it
    expired: int  # ... once the keys past their TTL are gone
    used: int  # ... and the history a live run never writes: as a live run holds it
    by_kind: dict[str, tuple[int, int]]


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


def bucket_start(bucket: str) -> int | None:
    """When a bucket's period begins (UTC; None for one kept for ever, or not a bucket)."""
    tier = bucket[:1]
    if not TIER_TTL_SECONDS.get(tier):
        return None
    if tier in UTC_TIER_MS:
        return int(bucket[1:]) * UTC_TIER_MS[tier]
    return calendar_range(bucket, "UTC")[0]


def expired(bucket: str, now_ms: int) -> bool:
    """Whether a live run's Redis has expired a bucket's keys by ``now_ms``: written at its
    period's start, a key lives the store's TTL of its tier from there
    (``windows.stored_ttl_seconds``)."""
    start = bucket_start(bucket)
    return start is not None and start + stored_ttl_seconds(bucket, start) * 1000 <= now_ms


def live_written(records: Iterable[Record], zones: Iterable[str]) -> set[str]:
    """The buckets a live run's partitions write for ``records``: each event's
    ``live_buckets`` as of when its source sent it, in every zone of ``zones`` (more than a
    live run writes: an event counts in one or two zones)."""
    zones = list(zones)
    out: set[str] = set()
    for record in records:
        at = parse_instant_ms(orjson.loads(record.value)["occurred_at"], "occurred_at")
        for zone in zones:
            out.update(live_buckets(at, zone, record.emit_ms))
    return out


def replay_only(kind: str, bucket: str, written: set[str]) -> bool:
    """Whether a key is one a live run never has: a partition's bucket (``a``), or a rollup's
    share of one (``s``), that no event's ``live_buckets`` names (``written``)."""
    return kind in ("a", "s") and bucket[:1] in TIERS and bucket not in written


async def _drop(settings: Settings, gone_if: Callable[[str, str], bool]) -> int:
    """Delete the buckets, rollup totals and shares for which ``gone_if(kind, bucket)``
    (kind ``a``, ``t`` or ``s``). Returns how many."""
    client = redis_client(settings)
    try:
        namespace = await current_namespace(client, settings.topic_prefix)
        gone: list[bytes] = []
        async for key in client.scan_iter(match=f"{{{namespace}:*", count=1_000):
            _, rest = key.decode().split("}:", 1)
            parts = rest.split(":")
            if parts[0] in ("a", "t", "s") and gone_if(parts[0], parts[-1]):
                gone.append(key)
        for first in range(0, len(gone), 1_000):
            await client.delete(*gone[first : first + 1_000])
        return len(gone)
    finally:
        await client.aclose()


async def _listpack_value(settings: Settings) -> str:
    """Redis's ``hash-max-listpack-value``, which decides how compactly records are kept
    (docs/managed.md); "unknown" where CONFIG is not allowed."""
    client = redis_client(settings)
    try:
        found = await client.config_get("hash-max-listpack-value")
        return str(next(iter(found.values()), "unknown"))
    except RedisError:
        return "unknown"
    finally:
        await client.aclose()


def run(base: Settings, days: int, per_day: int, timeout: float, settle: float) -> Checkpoint:
    """``days`` days ending now through a worker of their own; the state they leave."""
    end_ms = time.time_ns() // 1_000_000
    config = SimConfig(
        seed=120,
        count=days * per_day,
        end_ms=end_ms,
        history_ms=days * DAY_MS,
        duplicate_share=0.03,
        late_share=0.03,
        call_disorder_share=0.3,
    )
    records, _ = simulate(config)
    org = build_org(config.teams, config.reps_per_team, config.campaigns)
    sent = [r.value for r in records if r.label in (VALID, DUPLICATE)]  # in emit order
    body, tail = sent[:-TAIL], sent[-TAIL:]
    settings = dataclasses.replace(base, topic_prefix=f"benchfoot{uuid.uuid4().hex[:8]}")
    asyncio.run(ensure_topics(settings))
    before = redis_used_memory(settings)
    worker = WorkerProcess(
        worker_environment(settings), Path(settings.stack_dir) / f"{settings.topic_prefix}.log"
    )
    try:
        worker.start(timeout=120)
        started = time.monotonic()
        asyncio.run(publish(settings, settings.raw_topic, body))
        _wait_projected(settings, worker, timeout)
        print(
            f"run of {days} days: {len(body):,} records projected in "
            f"{time.monotonic() - started:,.0f} s"
        )
        raw = redis_used_memory(settings) - before
        # The repair marks keep REFOLD_WINDOW_MS of commits: let those of the replay age out,
        # then the tail's commits trim them as a live run's would.
        time.sleep(settle)
        asyncio.run(publish(settings, settings.raw_topic, tail))
        _wait_projected(settings, worker, timeout)
        now_ms = time.time_ns() // 1_000_000
        dropped = asyncio.run(_drop(settings, lambda _, bucket: expired(bucket, now_ms)))
        after_ttl = redis_used_memory(settings) - before
        written = live_written(
            (r for r in records if r.label == VALID),
            {base.org_timezone, *(team.timezone for team in org.teams)},
        )
        replayed = asyncio.run(_drop(settings, lambda kind, b: replay_only(kind, b, written)))
        print(
            f"run of {days} days: {dropped:,} bucket and rollup keys past their TTL deleted, "
            f"then {replayed:,} buckets and shares only the replay wrote"
        )
        return Checkpoint(
            days,
            asyncio.run(applied(settings)),
            asyncio.run(_leads(settings)),
            raw,
            after_ttl,
            redis_used_memory(settings) - before,
            asyncio.run(memory_by_kind(settings)),
        )
    finally:
        worker.stop()
        asyncio.run(clean(settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=int, default=4_000)
    parser.add_argument("--at", type=numbers, default=[60, 90, 120], help="days of each run")
    parser.add_argument("--timeout", type=float, default=3600, help="per run (seconds)")
    parser.add_argument(
        "--settle",
        type=float,
        default=REFOLD_WINDOW_MS / 1000 + 5,
        help="seconds to wait before the tail, for the repair marks to age out (0: none)",
    )
    args = parser.parse_args()
    if args.per_day < 1 or args.settle < 0:
        parser.error("--per-day must be at least 1 and --settle at least 0")
    if not args.at or sorted(args.at) != args.at or args.at[0] < 1:
        parser.error("--at must be increasing day counts of at least 1")

    base = Settings.from_env()
    for server in servers(base):
        server.up()
    checkpoints = [run(base, day, args.per_day, args.timeout, args.settle) for day in args.at]

    print(
        f"\n{args.per_day:,} events a day; {base.partitions} partitions, lateness horizon "
        f"{base.lateness_horizon}; Redis hash-max-listpack-value "
        f"{asyncio.run(_listpack_value(base))}; Redis MiB as the replay left it (raw), "
        "once the keys past their TTL are gone (TTLd) and as a live run holds it (live)"
    )
    print(
        f"{'day':>5}{'events':>12}{'leads':>10}{'raw MiB':>10}{'TTLd MiB':>11}{'live MiB':>10}"
        f"{'B/lead':>9}{'B/event':>9}{'TTLd growth':>13}{'growth':>9}"
    )

    def growth(now: int, before: int | None) -> str:
        return f"{(now / before - 1) * 100:+.1f}%" if before else ""

    previous: Checkpoint | None = None
    for c in checkpoints:
        print(
            f"{c.day:>5}{c.events:>12,}{c.leads:>10,}{c.raw / MIB:>10,.1f}"
            f"{c.expired / MIB:>11,.1f}{c.used / MIB:>10,.1f}"
            f"{c.used / max(c.leads, 1):>9,.0f}{c.used / max(c.events, 1):>9,.0f}"
            f"{growth(c.expired, previous.expired if previous else None):>13}"
            f"{growth(c.used, previous.used if previous else None):>9}"
        )
        previous = c
    last = checkpoints[-1]
    print(f"state by kind after {last.day} days, live (MEMORY USAGE; keys, MiB, B/lead):")
    for kind, (keys, size) in sorted(last.by_kind.items(), key=lambda kv: -kv[1][1]):
        print(f"  {kind:<26}{keys:>12,}{size / MIB:>10,.1f}{size / max(last.leads, 1):>10,.0f}")


if __name__ == "__main__":
    main()
