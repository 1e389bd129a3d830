"""A rebuild during live traffic: readers switch atomically, and the result equals the oracle."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from config.connections import redis_client
from config.settings import Settings
from projections.catalogue import Figure
from projections.read import read_kpis
from projections.store import RedisStore, current_namespace, drop
from projections.windows import WINDOWS
from simulator.log import SimConfig, simulate
from simulator.org import build_org
from streams.producer import publish
from streams.rebuild import rebuild
from streams.worker_process import WorkerProcess
from tests.kafka_reader import wait_caught_up
from tests.oracle import Oracle
from tests.support import (
    RecordedProgress,
    assert_matches_oracle,
    directory_first,
    write_valid_log,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("any_stack_env", "processes"),
    [("single", 1), ("single", 3), pytest.param("cluster", 3, marks=pytest.mark.cluster)],
    indirect=["any_stack_env"],
)
async def test_rebuild_during_live_traffic(
    any_stack_env: dict[str, str], tmp_path: Path, processes: int
) -> None:
    """With 3 replay processes, each replays 4 of the 12 partitions, and the lead facts one
    derives for another's partitions after that one finished are replayed at the end. On the
    clustered stack too: the generation's freeze, switch and drop go through the cluster
    client (the drop scans every master)."""
    env = {**any_stack_env, "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}"}
    settings = Settings.from_env(env)
    end_ms = time.time_ns() // 1_000_000
    records, _ = simulate(
        SimConfig(
            seed=77,
            count=40_000,
            end_ms=end_ms,
            history_ms=10 * 86_400_000,
            invalid_share=0.01,
            duplicate_share=0.03,
            late_share=0.03,
            call_disorder_share=0.3,
        )
    )
    log = tmp_path / "valid.jsonl"
    write_valid_log(records, log)
    directory, rest = directory_first(records)
    old_half, new_half = rest[:20_000], rest[20_000:]

    client = redis_client(settings)
    partitions = range(settings.partitions)
    seen: list[tuple[str, int]] = []  # (generation, leads created so far), as readers saw them
    reading = True

    async def reader() -> None:
        while reading:
            namespace = await current_namespace(client, settings.topic_prefix)
            store = RedisStore(client, namespace)
            view = await store.directory(partitions, settings.rules)
            answer = await read_kpis(store, view, "org", "", "all", end_ms)
            leads = answer.kpis["leads_created"]
            assert isinstance(leads, Figure)
            seen.append((namespace, int(leads.numerator)))
            await asyncio.sleep(0.05)

    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start()
        await publish(settings, settings.raw_topic, directory)
        await publish(settings, settings.raw_topic, old_half)
        await wait_caught_up(settings, RedisStore(client, f"{settings.topic_prefix}:g1"))
        reading_task = asyncio.create_task(reader())
        producing = asyncio.create_task(publish(settings, settings.raw_topic, new_half, rate=2_000))
        await asyncio.sleep(2)
        report = await rebuild(settings, processes)
        await producing
        live = await current_namespace(client, settings.topic_prefix)
        assert report.old == f"{settings.topic_prefix}:g1"
        assert report.new == live == f"{settings.topic_prefix}:g2"
        await wait_caught_up(settings, RedisStore(client, live), what="the rebuilt generation")
        await asyncio.sleep(1)
        reading = False
        await reading_task
        print(
            f"\nrebuild: {report.records:,} records replayed in {report.seconds:.1f}s "
            f"({report.rate:,.0f}/s); readers sampled {len(seen)} times"
        )

        # Readers went from g1 to g2 once, and never saw a count go down (a half-built g2).
        generations = [g for g, _ in seen]
        assert generations == sorted(generations) and set(generations) == {report.old, live}
        counts = [n for _, n in seen]
        assert counts == sorted(counts), "a reader saw fewer leads than a moment before"
        assert report.dropped_keys > 0
        # Only the frozen tombstones of the checkpoints are left (they expire in a day).
        left = [k async for k in client.scan_iter(match=f"{{{report.old}:p*")]
        assert left and all(k.endswith(b":ckpt") for k in left), left
        # and nothing of its rollups (a fold that came after the drop would leave some).
        assert not [k async for k in client.scan_iter(match=f"{{{report.old}:r*")]
        for key in left:
            assert await client.hgetall(key) == {b"!frozen": b"1"}
            assert 0 < await client.ttl(key) <= 86_400
        assert worker.alive()

        oracle = Oracle(log)
        org = build_org(4, 8, 6)
        scopes = [
            ("org", ""),
            ("team", org.teams[2].team_id),
            ("rep", org.reps[5].rep_id),
            ("queue", org.teams[0].queue_id),
        ]
        await assert_matches_oracle(
            RedisStore(client, live), settings, oracle, scopes, WINDOWS, end_ms
        )
    finally:
        reading = False
        worker.stop()
        await client.aclose()


async def test_a_writer_left_on_a_dropped_generation_is_turned_away(
    stack_env: dict[str, str],
) -> None:
    """A worker that still holds g1 after the switch must not write an orphaned copy."""
    from projections.contributions import Rules
    from projections.engine import DirectoryView
    from projections.store import NamespaceFrozen, drop, freeze, switch
    from projections.validation import Rejection, parse_event
    from streams.projector import Positioned, Projector

    settings = Settings.from_env(stack_env)
    client = redis_client(settings)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    old, new = f"{prefix}:g1", f"{prefix}:g2"

    async def no_facts(_facts: object) -> None:
        return None

    def spend(n: int) -> Positioned:
        raw = (
            b'{"event_id":"s%d","type":"campaign.spend","occurred_at":"2026-11-20T10:00:00Z",'
            b'"schema_version":1,"campaign_id":"c","amount_minor":100}' % n
        )
        event = parse_event(raw, now_ms=time.time_ns() // 1_000_000)
        assert not isinstance(event, Rejection)
        return Positioned("events", 0, n, event)

    try:
        projector = Projector(
            RedisStore(client, old), DirectoryView({}, Rules()), Rules(), no_facts
        )
        await projector.apply([spend(0)])
        await freeze(client, old, [0])
        await switch(client, prefix, new)
        await drop(client, old)
        with pytest.raises(NamespaceFrozen):
            await projector.apply([spend(1)])
        left = [k async for k in client.scan_iter(match=f"{{{old}:p*")]
        assert left == [f"{{{old}:p0}}:ckpt".encode()]
    finally:
        await drop(client, old)
        await client.delete(f"{{{old}:p0}}:ckpt", f"{prefix}:current")
        await client.aclose()


async def test_a_replay_process_that_fails_fails_the_rebuild(stack_env: dict[str, str]) -> None:
    """Children that cannot reach Redis exit non-zero, and the rebuild says which
    partitions' replay failed instead of switching readers to a half-built generation."""
    from streams.rebuild import RebuildFailed, _replay_in_processes

    settings = Settings.from_env(
        {
            **stack_env,
            "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
            "SALESPULSE_REDIS_PORT": "1",
        }
    )
    evens, odds = (list(range(settings.partitions))[i::2] for i in (0, 1))
    with pytest.raises(RebuildFailed) as failed:
        await _replay_in_processes(settings, f"{settings.topic_prefix}:g2", 2, [])
    assert str(failed.value) == (
        f"the replay of partitions {evens} exited with 1; {odds} exited with 1"
    )


class Recorder:
    """A ProgressFactory that keeps what each report was told."""

    def __init__(self) -> None:
        self.reports: dict[str, RecordedProgress] = {}

    def __call__(self, label: str, unit: str) -> RecordedProgress:
        self.reports[label] = RecordedProgress()
        return self.reports[label]


@pytest.mark.parametrize("processes", [1, 2])
async def test_a_rebuild_reports_its_progress(stack_env: dict[str, str], processes: int) -> None:
    """The directory pre-pass and the replay report offsets done against the end offsets,
    whichever process replays; `salespulse rebuild` logs them when stderr is not a terminal."""
    from streams.topics import ensure_topics
    from tests.support import cli

    env = {**stack_env, "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}"}
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    spends = [
        b'{"event_id":"s%d","type":"campaign.spend","occurred_at":"2026-11-20T10:00:00Z",'
        b'"schema_version":1,"campaign_id":"c%d","amount_minor":100}' % (n, n % 7)
        for n in range(3_000)
    ]
    await publish(settings, settings.events_topic, spends)
    recorder = Recorder()
    client = redis_client(settings)
    try:
        report = await rebuild(settings, processes, recorder)
        prefix = settings.topic_prefix
        assert set(recorder.reports) == {
            f"rebuild {prefix}:g2: directory pre-pass",
            f"rebuild {prefix}:g1 -> {prefix}:g2",
        }
        for label, recorded in recorder.reports.items():
            assert recorded.finished == [False], label
            done = [d for d, _, _ in recorded.updates]
            assert done == sorted(done), label
            # The log's 3,000 events; the replay derives no lead facts from spend.
            assert recorded.updates[-1] == (3_000, 3_000, 3_000), (label, recorded.updates)
        assert report.records == 3_000

        done = cli("rebuild", "--processes", str(processes), env=env)
        assert done.returncode == 0, done.stderr
        assert "\r" not in done.stderr
        logged = [line for line in done.stderr.splitlines() if "streams.progress_display" in line]
        assert len(logged) >= 2, done.stderr  # the summaries, and lines every 5 s if slow
        assert (
            logged[-1]
            .split(": ", 1)[1]
            .startswith(f"rebuild {prefix}:g2 -> {prefix}:g3: 3,000 records in ")
        ), logged
    finally:
        for generation in ("g1", "g2", "g3"):
            await drop(client, f"{settings.topic_prefix}:{generation}")
        await client.aclose()
