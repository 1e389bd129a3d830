"""Events/s and CPU per event, projection alone and end to end; ceiling, baseline, rebuild, RAM.

    python -m benchmarks.throughput [--count 1000000] [--workers 1,2] [--rebuild-processes 1,2]
        [--baseline-seconds 60] [--end-to-end | --no-end-to-end] [--timeout 3600]

Preloads ``--count`` valid simulated events (30 days of an org) onto the
events topic (12 partitions by default), then measures on the same log, in
one run:

* the ceiling: a raw aiokafka consumer that fetches every record and decodes
  it with orjson, nothing else;
* the naive baseline (benchmarks.naive_agent): a Faust agent doing one Redis
  round trip per event; it runs for ``--baseline-seconds`` after it counted its
  first events (or until it has read everything), timed from the last look
  that saw nothing counted;
* a Faust stream alone: an agent that takes batches of 10,000 and only counts
  them, measured the same way (what any Faust agent can get at most);
* salespulse with each worker count of ``--workers``, the projection alone:
  workers projecting the whole KPI catalogue, timed from the last look that saw
  nothing applied to the first that saw every partition's checkpoint at the end
  of the events and lead-facts topics (each run gets a fresh copy of the log, sent
  once its workers are ready, so that all of it is metered at any size);
* salespulse end to end from the raw topic (unless ``--no-end-to-end``), what a
  user runs: the same events sent as raw records onto the raw topic of a fresh
  copy once its worker is ready (so that all of them are metered, whatever the
  log's size), one worker doing ingest, validation, republish, lead facts and
  projection, timed from the first look at the progress (the worker ready, the
  records not sent yet) to the first that saw ingest's commits at the end of the
  raw topic and both derived topics projected;
* ``salespulse rebuild`` over the first run's log, with each replay process
  count of ``--rebuild-processes``: events of the log per second of the whole
  rebuild (directory pre-pass, replay, switch, dropping the old generation),
  and of the replay alone;
* Redis memory per lead and per 1,000,000 events, and each worker's peak RSS
  (the end-to-end worker's too).

Every salespulse row (projection alone and end to end) also has the worker's and
Redis's CPU µs per event, metered as benchmarks.scale meters them (``Meter``):
from the first look at the progress (every worker ready) to the look that saw
everything projected, over the events neither applied nor read by ingest before
that first look; the workers' CPU (user + system, with their descendants) from
/proc, Redis's from ``INFO cpu``, less what Redis used per second while idle and
watched (measured for ``benchmarks.scale.IDLE_SECONDS`` before the workers start).
A run whose workers had done nine tenths of the log before the first look says
"too few events left to meter" instead (a larger ``--count`` meters more).

Uses the local stack (started if needed) with topics and keys of its own,
deleted afterwards. The numbers are for the machine it runs on (the CPU per
event too: other work on the machine slows the workers and Redis down).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.request import Request

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks import numbers, org_month
from benchmarks.ingest import delete_topics
from config.connections import kafka_options, redis_client, redis_sync_client
from config.reader_access import reader_headers
from config.settings import Settings
from projections.namespaces import pointer
from projections.store import RedisStore, current_namespace, drop, used_memory
from stack.servers import servers
from streams.producer import publish
from streams.rebuild import rebuild
from streams.topics import ensure_topics
from streams.watch import scrape
from streams.worker_process import WorkerProcess
from tests.kafka_reader import caught_up

if TYPE_CHECKING:
    from benchmarks.scale import Result


async def caught_up_on_stack(settings: Settings) -> bool:
    """Every partition's checkpoint in the live generation is at the end of the events and
    lead-facts topics."""
    client = redis_client(settings)
    try:
        namespace = await current_namespace(client, settings.topic_prefix)
        return await caught_up(settings, RedisStore(client, namespace))
    finally:
        await client.aclose()


async def clean(settings: Settings) -> None:
    """Delete a benchmark's generation, pointer and topics."""
    client = redis_client(settings)
    try:
        await drop(client, await current_namespace(client, settings.topic_prefix))
        await client.delete(pointer(settings.topic_prefix))
    finally:
        await client.aclose()
    await delete_topics(settings)


async def raw_ceiling(settings: Settings, count: int) -> float:
    """Events/s of a consumer that fetches and decodes every record and does nothing else."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        **kafka_options(settings),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        for tp, start in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, start)
        decoded = 0
        started = time.perf_counter()
        while decoded < count:
            for messages in (await consumer.getmany(timeout_ms=1_000, max_records=10_000)).values():
                for m in messages:
                    orjson.loads(m.value or b"{}")
                decoded += len(messages)
        return decoded / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def faust_agent(settings: Settings, mode: str, count: int, seconds: float) -> float:
    """Events/s of benchmarks.naive_agent in ``mode`` over at most ``seconds`` of its run."""
    key = f"{settings.topic_prefix}:{mode}"
    client = redis_sync_client(settings, timeout=30)
    log_path = Path(settings.stack_dir) / f"{settings.topic_prefix}-{mode}.log"
    (settings.stack_path / "faust").mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "NAIVE_TOPIC": settings.events_topic,
        "NAIVE_BOOTSTRAP": settings.bootstrap,
        "NAIVE_REDIS": settings.redis,
        "NAIVE_KEY": key,
        "NAIVE_MODE": mode,
        "NAIVE_DATADIR": str(settings.stack_path / "faust" / f"{settings.topic_prefix}-{mode}"),
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.naive_agent", "worker", "-l", "warn"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Timed like the salespulse rows: from the last look that saw nothing counted yet to
        # the last look, which is the first to see everything or ``seconds`` after counting began.
        idle = time.monotonic()
        last: tuple[float, int] | None = None
        deadline = idle + 120 + seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the {mode} agent exited; see {log_path}")
            done = sum(int(v) for v in client.hvals(key))
            now = time.monotonic()
            if not done:
                idle = now
            else:
                if last is None:
                    deadline = now + seconds
                last = (now, done)
                if done >= count:
                    break
            time.sleep(0.2)
        if last is None:
            raise SystemExit(f"the {mode} agent counted nothing; see {log_path}")
        return last[1] / (last[0] - idle)
    finally:
        process.terminate()
        process.wait(timeout=30)
        client.delete(key)


async def applied(settings: Settings) -> int:
    """Events the live generation has applied, over every partition."""
    client = redis_client(settings)
    try:
        namespace = await current_namespace(client, settings.topic_prefix)
        progress = await RedisStore(client, namespace).progress(range(settings.partitions))
        return sum(int(p.get("!applied", 0)) for p in progress)
    finally:
        await client.aclose()


async def memory_by_kind(settings: Settings) -> dict[str, tuple[int, int]]:
    """Keys and bytes (MEMORY USAGE) of the live generation by kind: entity records by
    entity kind, aggregate buckets by tier, rollup totals and shares by tier, and the rest
    by role."""
    client = redis_client(settings)
    try:
        namespace = await current_namespace(client, settings.topic_prefix)
        out: dict[str, tuple[int, int]] = {}
        batch: list[bytes] = []

        async def measure() -> None:
            async with client.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.memory_usage(key, samples=0)
                sizes = await pipe.execute()
            for key, size in zip(batch, sizes, strict=True):
                tag, rest = key.decode().split("}:", 1)
                parts = rest.split(":")
                if tag.rsplit(":", 1)[-1].startswith("r"):  # {ns:rK}: a rollup shard's
                    if parts[0] in ("t", "s"):  # by tier, as the buckets
                        what = "totals" if parts[0] == "t" else "shares"
                        kind = f"rollup {what} {parts[-1][0]}"
                    else:
                        kind = "rollup fold index" if parts[0] == "v" else f"rollup {parts[0]}"
                elif parts[0] == "e":
                    kind = f"record {parts[1]}"
                elif parts[0] == "a":
                    kind = f"bucket {parts[-1][0]}"
                else:
                    kind = {"u": "untouched leads"}.get(parts[0], parts[0])
                keys, size_sum = out.get(kind, (0, 0))
                out[kind] = (keys + 1, size_sum + int(size or 0))
            batch.clear()

        async for key in client.scan_iter(match=f"{{{namespace}:*", count=1_000):
            batch.append(key)
            if len(batch) >= 1_000:
                await measure()
        if batch:
            await measure()
        return out
    finally:
        await client.aclose()


def redis_used_memory(settings: Settings) -> int:
    """Redis ``used_memory``; on a Redis Cluster summed over the masters (one copy of the
    state: the replicas hold the same)."""

    async def read() -> int | None:
        client = redis_client(settings)
        try:
            return await used_memory(client)
        finally:
            await client.aclose()

    used = asyncio.run(read())
    if used is None:
        raise SystemExit("the Redis user may not run INFO: no memory figures (docs/security.md)")
    return used


def worker_environment(settings: Settings) -> dict[str, str]:
    """The ``SALESPULSE_*`` variables of every setting: a worker given them has ``settings``
    (stack, ports, topic prefix, partition count, ...), whatever this process's own
    environment says."""

    def text(value: object) -> str:
        return ("1" if value else "0") if isinstance(value, bool) else str(value)

    env = {
        f"SALESPULSE_{field.name.upper()}": text(getattr(settings, field.name))
        for field in dataclasses.fields(settings)
    }
    if Settings.from_env(env) != settings:  # a setting whose text does not read back
        raise ValueError("the settings do not survive the environment: see worker_environment")
    return env


@dataclass
class Run:
    workers: int
    rate: float
    rss: list[int]
    redis_bytes: int  # used_memory growth (on a Redis Cluster: over the masters)


Edge = Literal["start", "end"]
Window = Callable[[Edge, Sequence[int]], None]


def project(
    settings: Settings,
    count: int,
    workers: int,
    timeout: float,
    window: Window | None = None,
    code: Path | None = None,
) -> Run:
    """Start ``workers`` workers on a preloaded log and time them until they caught up.

    The workers get ``settings`` whole (``worker_environment``), each with its own metrics
    port (``settings.worker_metrics_port`` + 10 per worker). ``window``, if given, is called
    with ``"start"`` and the workers' pids at the first look at the progress (every worker
    is ready), and with ``"end"`` at the look that saw everything projected: a caller reads
    its own counters there. (The rate is timed from the last look that saw nothing applied,
    at or after the first.) ``code``: the checkout the workers run (this one if None)."""
    before = redis_used_memory(settings)
    stack = Path(settings.stack_dir)
    processes = [
        WorkerProcess(
            worker_environment(
                dataclasses.replace(
                    settings, worker_metrics_port=settings.worker_metrics_port + 10 * n
                )
            ),
            stack / f"{settings.topic_prefix}-worker{n}.log",
            code,
        )
        for n in range(workers)
    ]
    try:
        with ThreadPoolExecutor(workers) as pool:  # join the group together: one rebalance
            list(pool.map(lambda w: w.start(timeout=120), processes))
        pids = [w.pid for w in processes]
        idle = time.monotonic()
        deadline = idle + timeout
        if window:
            window("start", pids)
        while not asyncio.run(caught_up_on_stack(settings)):
            if time.monotonic() > deadline:
                raise SystemExit(f"the projections did not catch up in {timeout}s")
            if asyncio.run(applied(settings)) == 0:
                idle = time.monotonic()
            time.sleep(0.1)
        seconds = time.monotonic() - idle
        if window:
            window("end", pids)
        rss = [w.peak_rss_bytes() for w in processes]
    finally:
        for w in processes:
            w.stop()
    used = redis_used_memory(settings) - before
    return Run(workers, count / seconds, rss, used)


def preload(settings: Settings, values: list[bytes], topic: str | None = None) -> float:
    """Create the topics and publish ``values`` onto ``topic`` (the events topic unless
    given); events/s produced."""
    asyncio.run(ensure_topics(settings))
    started = time.monotonic()
    asyncio.run(publish(settings, topic or settings.events_topic, values))
    return len(values) / (time.monotonic() - started)


def ingested_by_workers(settings: Settings, workers: int) -> int:
    """Raw records the ingest of ``project``'s workers has read so far (their metrics)."""
    headers = reader_headers(settings)
    return sum(
        int(scrape(Request(f"http://127.0.0.1:{port}/metrics", headers=headers)).records)
        for port in (settings.worker_metrics_port + 10 * n for n in range(workers))
    )


def metered_project(
    settings: Settings,
    values: list[bytes],
    leads: int,
    workers: int,
    timeout: float,
    feed: Callable[[], object] | None = None,
    code: Path | None = None,
) -> tuple[Run, Result | None]:
    """``project`` on a log (events topic, or raw topic: end to end) with the CPU
    meter of benchmarks.scale around it: Redis's idle cost first, then the workers' and
    Redis's CPU from the first look at the progress to the look that saw everything
    projected. Events counted: those neither applied nor forwarded by ingest before the
    first look (ingest counts a batch once its transaction commits, so a batch in hand at
    that look is counted whole though part of its CPU came before: at most one batch's
    worth, against the tens of batches metered). ``feed``, if given, is called right after
    the first look: it publishes the log, so that all of it is metered. The figures are None
    when fewer than a tenth of the log's events are left to count."""
    from benchmarks import scale  # here, not at the top: benchmarks.scale imports this module

    kafka = [s for s in scale.stack_servers(settings) if s.name.startswith("kafka")]
    nodes = scale.redis_nodes(settings)
    meter = scale.Meter(settings, [pid for s in kafka if (pid := s.pid())], nodes)
    ingested_before = 0

    def window(edge: Edge, pids: Sequence[int]) -> None:
        nonlocal ingested_before
        meter.window(edge, pids)
        if edge == "start":
            ingested_before = ingested_by_workers(settings, workers)
            if feed is not None:
                feed()

    try:
        idle = meter.idle(scale.IDLE_SECONDS)
        run = project(settings, len(values), workers, timeout, window=window, code=code)
    finally:
        for node in nodes:
            node.close()
    assert meter.start is not None and meter.end is not None  # project() returned
    metered = len(values) - max(meter.applied_before, ingested_before)
    if metered < max(len(values) // 10, 1):
        return run, None
    homes = [s.home for s in kafka]
    return run, scale.Result(
        stack="cluster" if settings.stack_cluster else "single",
        partitions=settings.partitions,
        workers=workers,
        events=len(values),
        leads=leads,
        metered=metered,
        seconds=max(meter.end.at - meter.start.at, 1e-3),
        project_rate=run.rate,
        cpu=meter.end.since(meter.start),
        idle=idle,
        redis_bytes=run.redis_bytes,
        events_topic_bytes=scale.topic_bytes(homes, settings.events_topic),
        facts_topic_bytes=scale.topic_bytes(homes, settings.facts_topic),
        replication=settings.replication_factor,
        cores=os.cpu_count() or 1,
    )


def fed_project(
    settings: Settings,
    topic: str,
    values: list[bytes],
    leads: int,
    workers: int,
    timeout: float,
    code: Path | None = None,
) -> tuple[Run, Result | None]:
    """``metered_project`` on a copy of the log sent to ``topic`` (the events topic, or the
    raw topic: end to end) once the workers are ready, so that all of it is metered."""
    asyncio.run(ensure_topics(settings))
    return metered_project(
        settings,
        values,
        leads,
        workers,
        timeout,
        feed=lambda: asyncio.run(publish(settings, topic, values)),
        code=code,
    )


def fresh(base: Settings) -> Settings:
    """``base`` with a topic prefix of its own: topics and keys no other run shares."""
    return dataclasses.replace(base, topic_prefix=f"bench{uuid.uuid4().hex[:8]}")


def cpu_per_event(cost: Result) -> tuple[float, float]:
    """Worker and Redis CPU µs per event (Redis net of its idle cost)."""
    worker, redis_net = (cost.per_thousand(cost.net(name)) * 1_000 for name in ("worker", "redis"))
    return worker, redis_net


def cpu_columns(cost: Result | None) -> str:
    """Worker and Redis CPU µs per event (Redis net of its idle cost), or why there are none."""
    if cost is None:
        return f"{'too few events left to meter':>27}"
    worker, redis_net = cpu_per_event(cost)
    return f"{worker:>14,.1f}{redis_net:>13,.1f}"


def main() -> None:
    from benchmarks.scale import OneLineParser  # here: benchmarks.scale imports this module

    parser = OneLineParser(prog="benchmarks.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--workers", type=numbers, default=[1, 2], help="e.g. 1,2")
    parser.add_argument(
        "--rebuild-processes", type=numbers, default=[1, 2], help="replay processes, e.g. 1,2"
    )
    parser.add_argument("--baseline-seconds", type=float, default=60.0)
    parser.add_argument(
        "--end-to-end",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also one worker from the raw topic (ingest to projection)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="give up after (seconds)")
    args = parser.parse_args()
    if args.count < 1:
        parser.error(f"--count must be at least 1, not {args.count}")
    if args.baseline_seconds <= 0:
        parser.error(f"--baseline-seconds must be positive, not {args.baseline_seconds}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, not {args.timeout}")

    base = Settings.from_env()
    for server in servers(base):
        server.up()
    values, leads = org_month(args.count)
    first = fresh(base)
    produced = preload(first, values)
    used = [first]
    whole: tuple[Run, Result | None] | None = None
    try:
        ceiling = asyncio.run(raw_ceiling(first, len(values)))
        baseline = faust_agent(first, "naive", len(values), args.baseline_seconds)
        stream = faust_agent(first, "stream", len(values), args.baseline_seconds)
        runs = []
        projected = first
        for n, workers in enumerate(args.workers):
            settings = fresh(base)
            used.append(settings)
            runs.append(
                fed_project(settings, settings.events_topic, values, leads, workers, args.timeout)
            )
            if not n:
                by_kind = asyncio.run(memory_by_kind(settings))
                projected = settings
        rebuilds = [(n, asyncio.run(rebuild(projected, n))) for n in args.rebuild_processes]
        if args.end_to_end:  # one worker from the raw topic: ingest to projection
            settings = fresh(base)
            used.append(settings)
            whole = fed_project(settings, settings.raw_topic, values, leads, 1, args.timeout)
    finally:
        for settings in used:
            asyncio.run(clean(settings))

    def row(name: str, rate: float, cpu: str = "") -> None:
        print(f"{name:<44}{rate:>12,.0f}{rate / ceiling:>12.2f}{rate / baseline:>12.1f}{cpu}")

    print(f"{'events':<44}{len(values):>12,} in {base.partitions} partitions")
    print(f"{'producer (acks=all, idempotent)':<44}{produced:>12,.0f} events/s")
    print(
        f"{'':<44}{'events/s':>12}{'x ceiling':>12}{'x baseline':>12}"
        f"{'worker µs/ev':>14}{'Redis µs/ev':>13}"
    )
    row("ceiling: raw aiokafka consumer + orjson", ceiling)
    row("baseline: naive Faust agent, 1 Redis RTT/ev", baseline)
    row("Faust stream alone: take_events(10000)", stream)
    for run, cost in runs:
        name = f"salespulse, {run.workers} worker{'s' * (run.workers > 1)}, whole catalogue"
        row(name, run.rate, cpu_columns(cost))
    if whole:
        run, cost = whole
        rate = cost.rate if cost else run.rate  # from the first look; else as project times it
        row("salespulse end to end from raw, 1 worker", rate, cpu_columns(cost))
    for processes, report in rebuilds:
        row(
            f"salespulse rebuild, {processes} process{'es' * (processes > 1)}, whole",
            len(values) / report.seconds,
        )
        row("  of which the replay alone", len(values) / report.replay_seconds)
        print(f"{'  records replayed (events + lead facts)':<44}{report.records:>12,}")
    one = runs[0][0]
    print(f"{'Redis memory used':<44}{one.redis_bytes / 2**20:>12,.1f} MiB")
    print(
        f"{'  per 100,000 leads':<44}{one.redis_bytes / leads * 100_000 / 2**20:>12,.1f} MiB "
        f"({one.redis_bytes / leads:,.0f} B per lead, {leads:,} leads)"
    )
    print(
        f"{'  per 1,000,000 events':<44}{one.redis_bytes / len(values) * 1e6 / 2**20:>12,.1f} MiB"
    )
    print(f"{'  by kind (MEMORY USAGE; keys, MiB, B/lead)':<44}")
    for kind, (keys, size) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        print(f"{'    ' + kind:<30}{keys:>14,}{size / 2**20:>12,.1f}{size / leads:>12,.0f}")
    for run, _ in runs:
        peaks = ", ".join(f"{r / 2**20:,.0f}" for r in run.rss)
        print(f"{f'worker peak RSS ({run.workers} workers)':<44}{peaks:>12} MiB")
    if whole:
        print(f"{'worker peak RSS (end to end)':<44}{whole[0].rss[0] / 2**20:>12,.0f} MiB")


if __name__ == "__main__":
    main()
