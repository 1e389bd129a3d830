"""End to end on the real stack: simulator -> Kafka -> worker (ingest + projection) -> Redis -> CLI.

The KPIs read back equal the oracle's over the valid events the simulator made.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import orjson
import pytest

from config.connections import redis_client
from config.settings import Settings
from projections.store import RedisStore, current_namespace
from projections.windows import WINDOWS
from simulator.log import SimConfig, format_instant, simulate
from simulator.org import build_org
from streams.worker_process import WorkerProcess
from tests.oracle import Oracle
from tests.support import (
    assert_matches_oracle,
    cli,
    feed_directory_first,
    write_valid_log,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def test_simulated_traffic_ends_with_the_oracle_kpis(
    any_stack_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**any_stack_env, "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}"}
    settings = Settings.from_env(env)
    end_ms = time.time_ns() // 1_000_000
    records, tally = simulate(
        SimConfig(
            seed=99,
            count=20_000,
            end_ms=end_ms,
            history_ms=10 * 86_400_000,
            invalid_share=0.02,
            duplicate_share=0.03,
            late_share=0.03,
            call_disorder_share=0.3,
        )
    )
    log = tmp_path / "valid.jsonl"
    valid = write_valid_log(records, log)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start()
        # The directory is loaded first, as in a real deployment (see docs/projections.md).
        elapsed = await feed_directory_first(worker, settings, records, len(valid))
        print(f"\nend to end: {len(records):,} records; all but the directory in {elapsed:.1f}s")
        snap = worker.metrics()
        distinct = len({orjson.loads(v)["event_id"] for v in valid})
        assert snap.projected["applied"] == distinct
        assert snap.projected["duplicate"] == len(valid) - distinct
        assert snap.agent_starts == 1 and worker.alive()

        oracle = Oracle(log)
        org = build_org(4, 8, 6)
        scopes = [("org", "")] + [("team", t.team_id) for t in org.teams]
        scopes += [
            ("rep", org.reps[0].rep_id),
            ("campaign", org.campaigns[0]),
            ("queue", org.teams[0].queue_id),
        ]
        client = redis_client(settings)
        store = RedisStore(client, await current_namespace(client, settings.topic_prefix))
        await assert_matches_oracle(store, settings, oracle, scopes, WINDOWS, end_ms)
        await client.aclose()

        # The CLI prints the same numbers.
        as_of = format_instant(end_ms)
        done = cli(
            "kpis",
            "--scope",
            "team",
            "--id",
            "emea",
            "--window",
            "all",
            "--as-of",
            as_of,
            "--json",
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["kpis"] == oracle.kpis("team", "emea", "all", end_ms)
        assert sum(tally.invalid.values()) == 400
    finally:
        assert worker.stop() == 0
