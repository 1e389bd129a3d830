"""Freshness: from produce to visible in the read side, at fixed rates, through the whole path.

    python -m benchmarks.freshness [--rates 1000,5000,20000] [--seconds 20]

For each rate: fresh topics, one worker (ingest and projection), and a
producer that sends valid simulated events to the raw topic at that rate
(acks=all, in 10 ms ticks), keeping every record's send time. A poller reads,
every 10 ms, the Redis checkpoints of the events topic, then whether every
shard of the rollups has folded each partition's commits (``RedisStore.behind``):
a checkpoint moves in the same atomic step that writes the record's KPI deltas
to its partition, but readers (exporter, API, KPI topic) read the rollups, so a
record is visible from the first poll that finds its offset committed and
nothing of its partition left to fold (a commit landing between the two reads
only makes that later). When the projections have applied every event, the
events topic is read back: each record's freshness is the time of the first
poll that saw it visible minus its send time (the poll interval adds up to 10
ms); "commit" columns give the time to its commit alone. Ingest writes the events topic in
transactions, whose markers take offsets too, so a record's offset there is
read, not assumed to be its raw offset.

Prints per rate: the rate achieved, p50 / p99 / max freshness, p50 / p99 to the
commit, how long the worker needed after the last send to make everything
committed, and p50 / p99 of
the first hop alone (send to ingest producing the event: the events topic
record's timestamp, so the two clocks are one machine's), and the worker's,
Redis's and the Kafka brokers' CPU per event at that rate (from the first send
until all were visible, less their idle cost per second over as long, metered for
a few seconds with the worker ready and no events).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import statistics
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer

from benchmarks import numbers, scale
from benchmarks.scale import Reading
from benchmarks.throughput import clean
from config.connections import kafka_options, redis_client
from config.settings import Settings
from projections.store import RedisStore, current_namespace
from simulator.log import VALID, SimConfig, simulate
from stack.servers import servers
from streams.producer import subject_key
from streams.topics import ensure_topics
from streams.worker_process import WorkerProcess
from tests.kafka_reader import read_topic

TICK = 0.01  # seconds between the producer's sends and between the poller's reads
IDLE_SECONDS = 5.0  # the worker ready and no events: its and Redis's cost of time passing


@dataclasses.dataclass
class Result:
    rate: int
    achieved: float
    latencies: list[float]  # from the send to visible: committed and folded
    committed: list[float]  # from the send to its commit
    forwarded: list[float]  # from the send to ingest's producing the event (its timestamp)
    drain: float
    cpu: dict[str, float]  # CPU seconds from the first send to all visible, less idle cost


async def _measure(
    settings: Settings,
    values: list[bytes],
    rate: int,
    timeout: float,
    meter: Callable[[], Reading],
    idle: dict[str, float],
) -> Result:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        **kafka_options(settings),
    )
    client = redis_client(settings)
    await producer.start()
    sent: dict[bytes, float] = {}  # every value is a distinct valid event
    # Per partition of the events topic: (poll time, checkpoint) each time it moved.
    moves: dict[int, list[tuple[float, int]]] = {p: [] for p in range(settings.partitions)}
    # ... and when what it covers was folded too: readable.
    folds: dict[int, list[tuple[float, int]]] = {p: [] for p in range(settings.partitions)}
    finished = asyncio.Event()
    at_first_send: Reading | None = None
    all_visible: Reading | None = None

    async def send() -> float:
        nonlocal at_first_send
        pending = []
        at_first_send = meter()
        started = time.monotonic()
        per_tick = rate * TICK
        due = 0.0
        for n, value in enumerate(values):
            if n >= due:
                due += per_tick
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            sent[value] = time.monotonic()
            pending.append(await producer.send(settings.raw_topic, value, key=subject_key(value)))
        await asyncio.gather(*pending)
        elapsed = time.monotonic() - started
        finished.set()
        return elapsed

    async def poll() -> float:
        namespace = await current_namespace(client, settings.topic_prefix)
        store = RedisStore(client, namespace)
        topic = settings.events_topic
        partitions = range(settings.partitions)
        last_send = 0.0
        while True:
            now = time.monotonic()
            progress = await store.progress(partitions)
            behind = await store.behind(partitions)
            for partition, done in enumerate(progress):
                upto = int(done.get(topic, -1))
                if upto > (moves[partition][-1][1] if moves[partition] else -1):
                    moves[partition].append((now, upto))
                folded = folds[partition]
                if partition not in behind and upto > (folded[-1][1] if folded else -1):
                    folded.append((now, upto))
            if finished.is_set():
                last_send = last_send or now
                if sum(int(done.get("!applied", 0)) for done in progress) >= len(values):
                    nonlocal all_visible
                    all_visible = meter()
                    return now - last_send
                if now - last_send > timeout:
                    raise SystemExit(f"{rate}/s: not everything was visible {timeout}s after")
            await asyncio.sleep(TICK)

    try:
        elapsed, drain = await asyncio.gather(send(), poll())
    finally:
        await producer.stop()
        await client.aclose()
    events = await read_topic(
        settings, settings.events_topic, settings.partitions, expect=len(values)
    )
    if any(_unfolded(p, folds, moves) for p in folds):
        # The last commits' folds came after the last poll: wait for the rollups.
        await _wait_folded(settings, folds, moves)
    committed_at = {p: [upto for _, upto in found] for p, found in moves.items()}
    folded_at = {p: [upto for _, upto in found] for p, found in folds.items()}
    wall_minus_monotonic = time.time() - time.monotonic()
    latencies, committed, forwarded = [], [], []
    for record in events:
        at = sent[record.value or b""]
        first = bisect_left(committed_at[record.partition], record.offset)
        committed.append(moves[record.partition][first][0] - at)
        first = bisect_left(folded_at[record.partition], record.offset)
        latencies.append(folds[record.partition][first][0] - at)
        forwarded.append(record.timestamp / 1000 - wall_minus_monotonic - at)
    if len(latencies) != len(values):
        raise SystemExit(f"{len(latencies)} events on the events topic, {len(values)} sent")
    assert at_first_send is not None and all_visible is not None
    window = all_visible.at - at_first_send.at
    cpu = {
        name: max(0.0, used - idle.get(name, 0.0) * window)
        for name, used in all_visible.since(at_first_send).items()
    }
    return Result(rate, len(values) / elapsed, latencies, committed, forwarded, drain, cpu)


def _unfolded(
    partition: int,
    folds: dict[int, list[tuple[float, int]]],
    moves: dict[int, list[tuple[float, int]]],
) -> bool:
    """Whether the partition's last commit seen has not been seen folded."""
    if not moves[partition]:
        return False
    found = folds[partition]
    return not found or found[-1][1] < moves[partition][-1][1]


async def _wait_folded(
    settings: Settings,
    folds: dict[int, list[tuple[float, int]]],
    moves: dict[int, list[tuple[float, int]]],
) -> None:
    """Poll until every partition's last commit is folded, noting when."""
    client = redis_client(settings)
    try:
        store = RedisStore(client, await current_namespace(client, settings.topic_prefix))
        left = {p for p in folds if _unfolded(p, folds, moves)}
        started = time.monotonic()
        while left:
            if time.monotonic() - started > 60:
                raise SystemExit(f"partitions {sorted(left)}: commits not folded after 60 s")
            now = time.monotonic()
            behind = await store.behind(sorted(left))
            for p in [p for p in left if p not in behind]:
                folds[p].append((now, moves[p][-1][1]))
                left.discard(p)
            await asyncio.sleep(TICK)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=numbers, default=[1_000, 5_000, 20_000])
    parser.add_argument("--seconds", type=float, default=20.0, help="of sending, per rate")
    parser.add_argument("--timeout", type=float, default=300.0, help="to drain, per rate")
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, not {args.seconds}")

    base = Settings.from_env()
    for server in servers(base):
        server.up()
    results = []
    for rate in args.rates:
        count = max(1, int(rate * args.seconds))
        records, _ = simulate(
            SimConfig(
                seed=rate, count=count, end_ms=time.time_ns() // 1_000_000, history_ms=3_600_000
            )
        )
        values = [r.value for r in records if r.label == VALID]
        settings = dataclasses.replace(base, topic_prefix=f"bench{uuid.uuid4().hex[:8]}")
        asyncio.run(ensure_topics(settings))
        worker = WorkerProcess(
            {"SALESPULSE_TOPIC_PREFIX": settings.topic_prefix},
            Path(settings.stack_dir) / f"{settings.topic_prefix}-worker.log",
        )
        nodes = scale.redis_nodes(settings)
        try:
            worker.start(timeout=120)
            kafka = [
                pid
                for s in scale.stack_servers(settings)
                if s.name.startswith("kafka") and (pid := s.pid())
            ]
            meter = functools.partial(scale.Meter(settings, kafka, nodes).read, [worker.pid])
            results.append(
                asyncio.run(_measure(settings, values, rate, args.timeout, meter, _idle(meter)))
            )
        finally:
            worker.stop()
            for node in nodes:
                node.close()
            asyncio.run(clean(settings))

    print(
        f"{'target/s':>10}{'achieved/s':>12}{'events':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'commit p50':>11}{'commit p99':>11}{'drain s':>9}{'fwd p50':>9}"
        f"{'fwd p99':>9}{'worker µs':>11}{'Redis µs':>10}{'Kafka µs':>10}"
    )
    for r in results:
        q = _percentiles(r.latencies)
        c = _percentiles(r.committed)
        f = _percentiles(r.forwarded)
        per_event = {k: v / len(r.latencies) * 1e6 for k, v in r.cpu.items()}
        print(
            f"{r.rate:>10,}{r.achieved:>12,.0f}{len(r.latencies):>10,}{q[49] * 1000:>9,.0f}"
            f"{q[98] * 1000:>9,.0f}{max(r.latencies) * 1000:>9,.0f}"
            f"{c[49] * 1000:>11,.0f}{c[98] * 1000:>11,.0f}{r.drain:>9.1f}"
            f"{f[49] * 1000:>9,.0f}{f[98] * 1000:>9,.0f}"
            f"{per_event['worker']:>11,.1f}{per_event['redis']:>10,.1f}"
            f"{per_event['kafka']:>10,.1f}"
        )
    print(
        "p50, p99, max: from the send to visible (committed and folded into the rollups);"
        " commit: to its partition's commit alone; drain: from the last send until every event"
        " was committed."
        " fwd: from the send to ingest producing the event on the events topic (its record's"
        " timestamp; before its transaction commits). worker, Redis, Kafka (the brokers): CPU µs"
        " per event from the first send until all were visible, less what each used per second"
        " idle before (Redis's includes this poller's reads, Kafka's this sender's writes)"
    )


def _idle(meter: Callable[[], Reading]) -> dict[str, float]:
    """CPU seconds per second of each counter with the worker ready and no events: the cost
    of time passing (the worker's idle polls and rechecks, Redis's own cron), which is not a
    cost of the events."""
    before = meter()
    time.sleep(IDLE_SECONDS)
    after = meter()
    return {name: used / (after.at - before.at) for name, used in after.since(before).items()}


def _percentiles(values: list[float]) -> list[float]:
    return statistics.quantiles(values, n=100) if len(values) > 1 else values * 99


if __name__ == "__main__":
    main()
