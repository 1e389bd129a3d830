"""On a Redis Cluster, the slots of the projections move between masters while the worker
commits and the API reads: no CROSSSLOT, MOVED, ASK or TRYAGAIN error reaches a user (the
worker neither stops nor dead-letters, every API answer is a 200), and the KPIs still equal
the oracle.

Every key of a partition carries the partition's hash tag, and every script declares the keys
it touches (projections/store.py), so Redis can route and guard each call while its slot is
half moved: a script whose keys are split between the two masters is refused (TRYAGAIN) and
retried, never run on half the data.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
import redis
from redis.crc import key_slot

from config.connections import redis_client
from config.settings import Settings
from projections.store import RedisStore, current_namespace
from simulator.log import SimConfig, simulate
from simulator.org import build_org
from stack.cluster import redis_roles
from streams.producer import publish
from streams.worker_process import WorkerProcess
from tests.kafka_reader import wait_caught_up
from tests.oracle import Oracle
from tests.support import (
    assert_matches_oracle,
    directory_first,
    fails_in_one_line,
    salespulse,
    wait_for,
    wait_for_exporter,
    write_valid_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

REDIRECTIONS = (b"CROSSSLOT", b"MOVED", b"ASK ", b"TRYAGAIN", b"CLUSTERDOWN")
WINDOWS = ("today", "week", "month", "all", "1h", "24h")


async def test_slots_moving_under_traffic_reach_no_user(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cluster_env, "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}"}
    settings = Settings.from_env(env)
    end_ms = time.time_ns() // 1_000_000
    records, _ = simulate(
        SimConfig(
            seed=71,
            count=24_000,
            end_ms=end_ms,
            history_ms=5 * 86_400_000,
            invalid_share=0.01,
            duplicate_share=0.03,
            late_share=0.03,
        )
    )
    log = tmp_path / "valid.jsonl"
    valid = write_valid_log(records, log)
    directory, rest = directory_first(records)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    exporter_log = tmp_path / "exporter.log"
    client = redis_client(settings)
    try:
        worker.start()
        with salespulse(["exporter"], env, exporter_log) as exporter:
            url = wait_for_exporter(exporter, settings.exporter_port, exporter_log)
            await publish(settings, settings.raw_topic, directory)
            wait_for(
                lambda: worker.metrics().projected["applied"] >= len(directory),
                60,
                "the directory to be projected",
            )
            namespace = await current_namespace(client, settings.topic_prefix, create=False)
            producing = asyncio.create_task(
                publish(settings, settings.raw_topic, rest, rate=1_500.0)
            )
            query = f"{url}/api/v1/kpis?scope=team&id=emea&window=all"
            deadline = time.monotonic() + 60
            while (await asyncio.to_thread(_get, query))[0] != 200:  # the producer runs meanwhile
                assert time.monotonic() < deadline, "the team had no data after 60 s"
                await asyncio.sleep(0.25)
            stop = asyncio.Event()
            reading = asyncio.create_task(_read_api(query, stop))
            moved, moves = 0, 0
            while not producing.done():  # partition after partition, while events flow
                await asyncio.sleep(0.5)
                slot = key_slot(f"{namespace}:p{moves % settings.partitions}".encode())
                moved += await asyncio.to_thread(_move_slot, settings, slot)
                moves += 1
            await producing
            store = RedisStore(client, namespace)
            await wait_caught_up(settings, store)
            stop.set()
            answers = await reading
        print(f"\n{moved:,} keys moved in {moves} slot moves; {len(answers):,} API answers")
        assert moves >= settings.partitions, "not every partition's slot moved under traffic"
        refused = [a for a in answers if a[0] != 200][:3]
        # The exporter logs why it could not read (the error's class and message).
        why = [line for line in exporter_log.read_text().splitlines() if "unreadable" in line]
        assert answers and not refused, (refused, why[:5])
        assert not [body for _, body in answers if any(r in body for r in REDIRECTIONS)]
        # A read that summed part of a partition's buckets would show a count going down.
        leads = [orjson.loads(body)["kpis"]["leads_created"]["numerator"] for _, body in answers]
        assert leads == sorted(leads), "an all-time count went down while slots moved"
        worker_log = worker.log()
        assert not [r for r in REDIRECTIONS if r in worker_log], "a redirection reached the log"
        assert not [r for r in REDIRECTIONS if r in exporter_log.read_bytes()]
        snap = worker.metrics()
        assert snap.agent_starts == 1 and worker.alive()
        distinct = len({orjson.loads(v)["event_id"] for v in valid})
        assert snap.projected["applied"] == distinct

        org = build_org(4, 8, 6)
        scopes = [("org", "")] + [("team", t.team_id) for t in org.teams]
        scopes += [("rep", org.reps[0].rep_id), ("queue", org.teams[0].queue_id)]
        await assert_matches_oracle(store, settings, Oracle(log), scopes, WINDOWS, end_ms)
    finally:
        await client.aclose()
        assert worker.stop() == 0


async def _read_api(query: str, stop: asyncio.Event) -> list[tuple[int, bytes]]:
    """Ask the API for a team's KPIs until told to stop: each answer's status and body."""
    answers = []
    while not stop.is_set():
        answers.append(await asyncio.to_thread(_get, query))
        await asyncio.sleep(0.05)
    return answers


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _move_slot(settings: Settings, slot: int) -> int:
    """Move one slot, with its keys, to the next master, as `redis-cli --cluster reshard`
    does: mark it importing and migrating, MIGRATE its keys, give it to the target. Returns
    how many keys moved."""
    masters = sorted(
        (node for node in redis_roles(settings) if node.role == "master"), key=lambda n: n.port
    )
    source = next(node for node in masters if node.holds(slot))
    target = masters[(masters.index(source) + 1) % len(masters)]
    src = redis.Redis(host="127.0.0.1", port=source.port, socket_timeout=30)
    dst = redis.Redis(host="127.0.0.1", port=target.port, socket_timeout=30)
    moved = 0
    try:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 50):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10_000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(0.02)  # writers and readers meet the slot half moved
        # The target first, then the source, as redis-cli does: a source that gave the slot away
        # before the target owned it would send clients back and forth between the two.
        others = [node for node in masters if node not in (target, source)]
        for node in (target, source, *others):
            with redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=30) as each:
                each.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
    finally:
        src.close()
        dst.close()
    return moved


def test_a_cluster_node_named_as_one_redis_is_refused_in_one_line(
    cluster_env: dict[str, str],
) -> None:
    """Without SALESPULSE_REDIS_CLUSTER a node of a cluster answers PING like one Redis, and
    the first command for a slot it does not hold would fail: the check says so first."""
    env = {
        **cluster_env,
        "SALESPULSE_STACK_CLUSTER": "0",
        "SALESPULSE_REDIS_URL": f"redis://127.0.0.1:{cluster_env['SALESPULSE_REDIS_PORT']}/0",
    }
    line = fails_in_one_line("kpis", "--scope", "org", "--window", "all", env=env)
    assert "is a node of a Redis Cluster: set SALESPULSE_REDIS_CLUSTER=1" in line
