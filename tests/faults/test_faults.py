"""Fault injection on the real local stack: crashes, restarts, stalls and poison input.

Each scenario streams a known simulated log through real processes, injects its
fault while records flow, and ends with the harness's verdict: projections equal
the oracle exactly, every distinct valid event is projected once, the DLQ holds
exactly the invalid records. ``pytest -m faults`` runs the suite alone; the
table is printed at the end of the run.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from projections.lateness import DAY_MS
from projections.validation import parse_instant_ms
from stack.servers import Kafka, Redis
from streams.producer import publish
from streams.topics import ensure_topics
from tests.faults.harness import Scenario
from tests.faults.hostile_scenario import ENTITY_EVENTS, HostileScenario
from tests.faults.poison import poison_records
from tests.oracle import Oracle
from tests.support import salespulse, wait_for_exporter

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SECOND_WORKER_METRICS_PORT = 29476


async def test_worker_sigkilled_five_times(stack_env: dict[str, str], tmp_path: Path) -> None:
    s = Scenario("worker SIGKILL x5", stack_env, tmp_path, count=80_000, seed=101)
    rng = random.Random(7)
    worker = s.worker()
    try:
        worker.start()
        await s.load_directory()
        producing = s.produce()
        for _ in range(5):
            await asyncio.sleep(rng.uniform(0.5, 4.0))
            assert not producing.done(), "the log ran out before the fault"
            worker.kill()
            ended = await s.fault_ends()
            worker.start(timeout=120)
            await s.recovered(ended)
        await producing
        await s.verify()
    finally:
        await s.close()


async def test_one_of_two_workers_killed_and_back(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    s = Scenario("2 workers: 1 killed, back", stack_env, tmp_path, count=50_000, seed=202)
    first, second = s.worker(), s.worker(SECOND_WORKER_METRICS_PORT)
    try:
        first.start()
        second.start()
        await s.load_directory()
        producing = s.produce()
        await asyncio.sleep(5)
        first.kill()  # its partitions move to the second worker after the session timeout
        await s.recovered(await s.fault_ends())
        assert second.alive()
        assert not producing.done(), "the log ran out before the worker came back"
        ended = await s.fault_ends()
        first.start(timeout=120)  # a second rebalance gives it partitions again
        await s.recovered(ended)
        await producing
        await s.verify()
    finally:
        await s.close()


async def test_broker_stopped_and_killed(stack_env: dict[str, str], tmp_path: Path) -> None:
    s = Scenario("broker SIGTERM, SIGKILL", stack_env, tmp_path, count=70_000, seed=303)
    kafka = Kafka(s.settings)
    worker = s.worker()
    try:
        worker.start()
        await s.load_directory()
        producing = s.produce()
        for stop in (kafka.down, kafka.kill):
            await asyncio.sleep(4)
            assert not producing.done(), "the log ran out before the fault"
            await asyncio.to_thread(stop)
            await asyncio.sleep(3)
            restarted = time.monotonic()
            await asyncio.to_thread(kafka.up)
            await s.recovered(await s.fault_ends(at=restarted))
            assert worker.alive(), "the worker gave up while the broker was away"
        await producing
        await s.verify()
    finally:
        await asyncio.to_thread(kafka.up)  # answering() runs its own event loop
        await s.close()


async def test_redis_restarted_then_emptied(stack_env: dict[str, str], tmp_path: Path) -> None:
    s = Scenario("Redis restart, FLUSHALL", stack_env, tmp_path, count=60_000, seed=404)
    redis_server = Redis(s.settings)
    worker = s.worker()
    try:
        worker.start()
        await s.load_directory()
        producing = s.produce()
        await asyncio.sleep(4)
        await asyncio.to_thread(redis_server.down)  # SIGTERM: Redis writes its AOF and stops
        await asyncio.sleep(3)
        ended = await s.fault_ends()
        await asyncio.to_thread(redis_server.up)
        await s.recovered(ended)
        assert worker.alive(), "the worker gave up while Redis was away"

        await asyncio.sleep(4)
        assert not producing.done(), "the log ran out before the fault"
        await s.client.flushall()
        await s.recovered(await s.fault_ends())
        assert b"hold nothing of it" in worker.log(), "no log line says the projections were lost"
        assert worker.metrics().rewinds.get("projections_missing", 0) >= 1
        await producing
        await s.verify()
    finally:
        await asyncio.to_thread(redis_server.up)
        await s.close()


async def test_redis_loses_its_last_seconds_of_writes(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """What a machine crash under Redis does with ``appendfsync everysec``: Redis comes back
    with an older, consistent state. The projections' checkpoints are then behind what the
    worker consumed; the next records are past a gap and the partitions are read again."""
    s = Scenario("Redis loses last 3 s of writes", stack_env, tmp_path, count=40_000, seed=808)
    worker = s.worker()
    try:
        worker.start()
        await s.load_directory()
        producing = s.produce()
        await asyncio.sleep(5)
        # A consistent state to go back to, as an AOF's prefix is: taken between commits.
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(0.5)  # commands already sent land first
            snapshot = await _dump(s.client, s.settings.topic_prefix)
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        await asyncio.sleep(3)
        assert not producing.done(), "the log ran out before the fault"
        os.kill(worker.pid, signal.SIGSTOP)  # nothing may commit while the state is swapped
        try:
            await asyncio.sleep(0.5)  # commands already sent land first
            await _restore(s.client, s.settings.topic_prefix, snapshot)
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        await s.recovered(await s.fault_ends())
        assert worker.metrics().rewinds.get("projections_behind", 0) >= 1
        await producing
        await s.verify()
    finally:
        await s.close()


async def _dump(client: aioredis.Redis, prefix: str) -> dict[bytes, tuple[bytes, int]]:
    """Every key of a topic prefix, serialised with its time to live."""
    found = {}
    async for key in client.scan_iter(match=f"{{{prefix}:*", count=1_000):
        value, ttl = await client.dump(key), await client.pttl(key)
        if value is not None:
            found[key] = (value, max(ttl, 0))
    found[f"{prefix}:current".encode()] = (await client.dump(f"{prefix}:current"), 0)
    return found


async def _restore(
    client: aioredis.Redis, prefix: str, snapshot: dict[bytes, tuple[bytes, int]]
) -> None:
    """Put a topic prefix's keys back as they were in ``snapshot`` (and only those)."""
    async for key in client.scan_iter(match=f"{{{prefix}:*", count=1_000):
        if key not in snapshot:
            await client.delete(key)
    async with client.pipeline(transaction=False) as pipe:
        for key, (value, ttl) in snapshot.items():
            pipe.restore(key, ttl, value, replace=True)
        await pipe.execute()


async def test_broker_paused_for_thirty_seconds(stack_env: dict[str, str], tmp_path: Path) -> None:
    s = Scenario("broker SIGSTOP 30 s", stack_env, tmp_path, count=60_000, seed=505)
    kafka = Kafka(s.settings)
    worker = s.worker()
    pid = None
    try:
        worker.start()
        await s.load_directory()
        producing = s.produce()
        await asyncio.sleep(4)
        pid = kafka.pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(30)
        os.kill(pid, signal.SIGCONT)
        pid = None
        await s.recovered(await s.fault_ends())
        assert not producing.done(), "the log ran out during the stall"
        assert worker.alive(), "the worker gave up during the stall"
        await producing
        await s.verify()
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        await s.close()


async def test_poison_beside_valid_traffic(stack_env: dict[str, str], tmp_path: Path) -> None:
    s = Scenario("poison 1,000/s", stack_env, tmp_path, count=30_000, seed=606)
    poison = poison_records(30_000, max_event_bytes=s.settings.max_event_bytes)
    worker = s.worker()
    try:
        worker.start()
        await s.load_directory()
        ended = None
        producing = s.produce(poison, extra_rate=1_000)
        await producing
        ended = await s.fault_ends()
        await s.recovered(ended)
        assert worker.alive()
        await s.verify(poison)
    finally:
        await s.close()


async def test_a_replay_beyond_the_lateness_horizon_is_dead_lettered_and_changes_nothing(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """A source replays old data once the stream has moved on: copies, under new ids, of
    events more than the horizon (4 days here) older than the newest of their partition.
    Each is dead-lettered as too late, counted once with the checkpoints, and no KPI moves:
    the projections still equal the oracle over the log without them, and the oracle,
    judging the whole log itself, finds exactly those late."""
    s = Scenario(
        "replay beyond the lateness horizon (4d)",
        stack_env,
        tmp_path,
        count=30_000,
        seed=707,
        extra_env={"SALESPULSE_LATENESS_HORIZON": "4d"},
    )
    replay = _replayed(s.log, before_ms=s.end_ms - 7 * DAY_MS, count=2_000)
    worker = s.worker()
    try:
        worker.start()
        await s.load_directory()
        await s.produce()
        ended = await s.fault_ends()
        await publish(s.settings, s.settings.raw_topic, replay, rate=2_000)
        await s.recovered(ended)
        await s.verify(replay)
        assert worker.alive()
        progress = await (await s.store()).progress(range(s.settings.partitions))
        assert sum(int(p.get("!too_late", 0)) for p in progress) == len(replay)
        whole = tmp_path / "with-replay.jsonl"
        whole.write_bytes(s.log.read_bytes() + b"".join(r + b"\n" for r in replay))
        judged = Oracle(whole, horizon_ms=4 * DAY_MS, partitions=s.settings.partitions)
        assert sorted(judged.late) == sorted(r.decode() for r in replay)
    finally:
        await s.close()


def _replayed(log: Path, before_ms: int, count: int) -> list[bytes]:
    """Copies, under new ids, of ``count`` events of ``log`` older than ``before_ms``."""
    old = [
        event
        for event in map(orjson.loads, log.read_bytes().splitlines())
        if not event["type"].endswith(".upserted")
        and parse_instant_ms(event["occurred_at"], "occurred_at") < before_ms
    ]
    assert len(old) >= count, f"only {len(old)} events before the cut"
    return [
        orjson.dumps({**event, "event_id": f"replayed-{event['event_id']}"})
        for event in random.Random(707).sample(old, count)
    ]


async def test_hostile_valid_input_never_stops_the_worker(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """Hypothesis worlds of events with ids from all of Unicode, and one lead with 10,000
    events waiting for the worker in one batch: one worker process throughout, and every
    KPI of every scope named equals the oracle over what was not dead-lettered."""
    s = HostileScenario(
        "hostile input, 10,000-event entity", stack_env, tmp_path, worlds=400, seed=909
    )
    worker = s.worker()
    try:
        await ensure_topics(s.settings)
        await publish(s.settings, s.settings.raw_topic, s.directory + s.entity)
        worker.start()
        pid = worker.pid
        await s.wait_caught_up()
        assert worker.metrics().largest_batch >= ENTITY_EVENTS, "the entity came in pieces"
        await s.produce()
        await s.verify()
        assert worker.alive() and worker.pid == pid, "the worker stopped"
        assert worker.metrics().agent_starts == 1
        assert b"CRITICAL" not in worker.log()
    finally:
        await s.close()


async def test_exporter_scraped_by_fifty_clients_while_redis_restarts(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    s = Scenario("exporter x50 clients, Redis restart", stack_env, tmp_path, count=20_000, seed=707)
    redis_server = Redis(s.settings)
    worker = s.worker()
    # Each scrape: started, finished, HTTP status, salespulse_exporter_up, samples from Redis.
    scrapes: list[tuple[float, float, int, float | None, int]] = []
    redis_back: list[float] = []
    try:
        worker.start()
        await s.load_directory()
        producing = s.produce()
        log = tmp_path / "exporter.log"
        with salespulse(["exporter"], s.env, log) as exporter:
            url = wait_for_exporter(exporter, s.settings.exporter_port, log)
            stop = asyncio.Event()

            async def client(session: aiohttp.ClientSession) -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    async with session.get(f"{url}/metrics") as response:
                        body = await response.text()
                    scrapes.append(
                        (started, time.monotonic(), response.status, *_up_and_kpis(body))
                    )

            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                clients = [asyncio.create_task(client(session)) for _ in range(50)]
                await asyncio.sleep(5)
                await asyncio.to_thread(redis_server.down)
                down_at = time.monotonic()
                await asyncio.sleep(8)
                ended = await s.fault_ends()
                up_at = time.monotonic()
                await asyncio.to_thread(redis_server.up)
                redis_back.append(time.monotonic())
                await s.recovered(ended)
                deadline = time.monotonic() + 60
                while sum(1 for r in scrapes if r[0] > redis_back[0] and r[3] == 1) < 100:
                    assert time.monotonic() < deadline, "the exporter did not come back"
                    await asyncio.sleep(0.5)
                stop.set()
                await asyncio.gather(*clients)
            assert exporter.poll() is None, "the exporter died"

        assert {status for _, _, status, _, _ in scrapes} == {200}
        # Scrapes wholly inside the outage say so and show nothing read before it.
        during = [(up, n) for a, b, _, up, n in scrapes if down_at < a and b < up_at]
        assert during and all(up == 0 and n == 0 for up, n in during), during[:5]
        # Once a scrape read Redis again, every later one does.
        first_up = min(b for a, b, _, up, _ in scrapes if a > redis_back[0] and up == 1)
        after = [up for a, _, _, up, _ in scrapes if a > first_up]
        assert len(after) >= 50 and all(up == 1 for up in after)
        # This scenario's recovery: Redis back -> the exporter's first scrape with up 1.
        s.recoveries.append(first_up - redis_back[0])
        print(f"{len(scrapes):,} scrapes; up again {s.recoveries[-1]:.1f}s after Redis")
        await producing
        await s.verify()
    finally:
        await asyncio.to_thread(redis_server.up)
        await s.close()


def _up_and_kpis(body: str) -> tuple[float | None, int]:
    """``salespulse_exporter_up`` and how many samples read from Redis a scrape holds (all
    but the exporter's own)."""
    up, read = None, 0
    for line in body.splitlines():
        if line.startswith("salespulse_exporter_up "):
            up = float(line.split()[1])
        elif line and not line.startswith(("#", "salespulse_exporter_")):
            read += 1
    return up, read
