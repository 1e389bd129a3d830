"""The worker killed with SIGKILL at five random moments while 200,000 events flow.

After it has caught up, the projections equal the oracle: nothing lost, nothing
counted twice.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path

import pytest

from projections.namespaces import current_namespace
from projections.store import Store, connect
from projections.windows import WINDOWS
from simulator.log import SimConfig, simulate
from simulator.org import build_org
from streams.producer import publish
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.kafka_reader import caught_up
from tests.oracle import Oracle
from tests.support import assert_matches_oracle, directory_first, write_valid_log

pytestmark = pytest.mark.integration

COUNT = 200_000
KILLS = 5


async def test_five_sigkills_lose_nothing_and_count_nothing_twice(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**stack_env, "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}"}
    settings = Settings.from_env(env)
    end_ms = time.time_ns() // 1_000_000
    records, _ = simulate(
        SimConfig(
            seed=4242,
            count=COUNT,
            end_ms=end_ms,
            history_ms=20 * 86_400_000,
            invalid_share=0.01,
            duplicate_share=0.03,
            late_share=0.03,
            call_disorder_share=0.3,
        )
    )
    log = tmp_path / "valid.jsonl"
    write_valid_log(records, log)
    directory, rest = directory_first(records)

    client = connect(settings.redis)
    store = Store(client, await current_namespace(client, settings.topic_prefix))
    rng = random.Random(17)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    started = time.monotonic()
    try:
        worker.start()
        await publish(settings.bootstrap, settings.raw_topic, directory)
        while not await caught_up(settings, store):
            await asyncio.sleep(0.5)
        producing = asyncio.create_task(
            publish(settings.bootstrap, settings.raw_topic, rest, rate=20_000)
        )
        recoveries = []
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(2.0, 8.0))
            worker.kill()
            restarted = time.monotonic()
            worker.start(timeout=120)
            recoveries.append(time.monotonic() - restarted)
        await producing
        deadline = time.monotonic() + 600
        while not await caught_up(settings, store):
            assert time.monotonic() < deadline, "the worker did not catch up within 10 minutes"
            await asyncio.sleep(1.0)
        print(
            f"\n{COUNT:,} records, {KILLS} SIGKILLs, caught up after "
            f"{time.monotonic() - started:.0f}s; restarts ready in "
            f"{', '.join(f'{r:.1f}s' for r in recoveries)}"
        )

        oracle = Oracle(log)
        org = build_org(4, 8, 6)
        scopes = [("org", "")] + [("team", t.team_id) for t in org.teams]
        scopes += [
            ("rep", org.reps[3].rep_id),
            ("campaign", org.campaigns[1]),
            ("queue", org.teams[1].queue_id),
        ]
        await assert_matches_oracle(store, settings, oracle, scopes, WINDOWS, end_ms)
    finally:
        worker.stop()
        await client.aclose()
