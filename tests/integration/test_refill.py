"""Redis loses a worker's projections while nothing new arrives: the worker notices by itself
(no record has to come to show the gap), refills every partition from the log, and the
numbers are the oracle's again; meanwhile readers are told they are partial."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from config.connections import redis_client
from config.settings import Settings
from exporters.health import summarise
from projections.store import RedisStore, current_namespace
from simulator.log import SimConfig, simulate
from simulator.org import build_org
from streams.producer import publish
from streams.worker_process import WorkerProcess
from tests.kafka_reader import caught_up, end_offsets
from tests.oracle import Oracle
from tests.support import assert_matches_oracle, directory_first, write_valid_log

pytestmark = pytest.mark.integration


async def test_a_quiet_worker_refills_what_redis_lost(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**stack_env, "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}"}
    settings = Settings.from_env(env)
    end_ms = time.time_ns() // 1_000_000
    records, _ = simulate(SimConfig(seed=17, count=4_000, end_ms=end_ms, history_ms=86_400_000))
    log = tmp_path / "valid.jsonl"
    write_valid_log(records, log)
    directory, rest = directory_first(records)
    client = redis_client(settings)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start()
        await publish(settings, settings.raw_topic, directory)
        await publish(settings, settings.raw_topic, rest)
        deadline = time.monotonic() + 120
        while not await caught_up(settings, RedisStore(client, f"{settings.topic_prefix}:g1")):
            assert time.monotonic() < deadline, "never caught up"
            await asyncio.sleep(0.5)

        # Redis loses everything of this prefix at once (as FLUSHALL or a restart without its
        # files would: one DEL, so the worker's recheck never sees half of it), and no record
        # comes after.
        await client.delete(
            *[k async for k in client.scan_iter(match=f"*{settings.topic_prefix}:*", count=1_000)]
        )
        store = RedisStore(client, f"{settings.topic_prefix}:g1")
        ends = {
            (topic, p): end
            for topic in (settings.events_topic, settings.facts_topic)
            for p, end in (await end_offsets(settings, topic)).items()
        }
        partitions = range(settings.partitions)
        health = summarise(await store.progress(partitions), ends, end_ms)
        assert health.status == "refilling" and not health.live

        deadline = time.monotonic() + 120
        while not await caught_up(settings, store):
            assert time.monotonic() < deadline, "the quiet worker never refilled"
            await asyncio.sleep(0.5)
        assert worker.metrics().rewinds["projections_missing"] >= 1
        assert await current_namespace(client, settings.topic_prefix) == store.keys.namespace
        health = summarise(await store.progress(partitions), ends, end_ms)
        assert health.status == "ok" and not health.refilling

        org = build_org(4, 8, 6)
        scopes = [("org", ""), ("team", org.teams[1].team_id), ("rep", org.reps[3].rep_id)]
        windows = ["today", "7d", "all"]
        await assert_matches_oracle(store, settings, Oracle(log), scopes, windows, end_ms)
        assert worker.alive()
    finally:
        worker.stop()
        await client.aclose()
