"""Projections in a real Redis, and in a Redis Cluster, equal the oracle, whatever the order,
duplicates and partitioning."""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.connections import redis_client as connect_redis
from config.settings import Settings
from projections.contributions import Rules
from projections.engine import DirectoryView
from projections.events import Event, RepUpserted, TeamUpserted
from projections.facts import LeadFact
from projections.read import read_kpis
from projections.store import RedisClient, RedisStore
from projections.validation import Reason, Rejection, parse_event
from projections.windows import WINDOWS, answerable
from simulator.log import DUPLICATE, VALID, SimConfig, simulate
from simulator.org import build_org
from streams.projector import LANDING_CHUNKS, Positioned, Projector
from tests.oracle import Oracle
from tests.projection_feed import drop as _drop
from tests.projection_feed import project as _project
from tests.support import figures

pytestmark = pytest.mark.integration

END_MS = 1_795_420_800_000  # 2026-11-23T08:00:00Z, a Monday morning in Europe
TOPIC = "events"
# Two of the four queues belong to a team by configuration; the others credit the answerer's.
QUEUE_TEAMS = {"q-emea": "emea", "q-apac": "apac"}
RULES = Rules(queue_teams=tuple(QUEUE_TEAMS.items()))
DAY_MS = 86_400_000
# A simulated log, how it is split over partitions, the order its events come in, whether
# everything is delivered a second time, and the lateness horizon: the default (35 days,
# which nothing in the 9-day log is behind) or 4 days, behind which a shuffled log puts
# about half its events: events on both sides of the horizon.
ORDERINGS = {
    "seed": st.integers(0, 10_000),
    "partitions": st.sampled_from([1, 3, 4, 12]),
    "order_seed": st.integers(0, 2**32),
    "replay": st.booleans(),
    "horizon_days": st.sampled_from([35, 4]),
}


@pytest.fixture
async def redis_client(any_stack_env: dict[str, str]) -> AsyncIterator[RedisClient]:
    """A client of the single-node Redis, then of the Redis Cluster."""
    client = connect_redis(Settings.from_env(any_stack_env))
    yield client
    await client.aclose()


def _log(seed: int, count: int) -> tuple[list[bytes], list[Event]]:
    records, _ = simulate(
        SimConfig(
            seed=seed,
            count=count,
            end_ms=END_MS,
            history_ms=9 * 86_400_000,
            duplicate_share=0.05,
            late_share=0.05,
            call_disorder_share=0.3,
        )
    )
    values = [r.value for r in records if r.label in (VALID, DUPLICATE)]
    events = []
    for value in values:
        event = parse_event(value, now_ms=END_MS)
        assert not isinstance(event, Rejection)
        events.append(event)
    return values, events


class Judged(NamedTuple):
    """A log in the order a test feeds it, the oracle over it, and the rules it ran with."""

    events: list[Event]
    oracle: Oracle
    rules: Rules


def shuffled_log(
    seed: int, order_seed: int, partitions: int, horizon_days: int, folder: Path
) -> Judged:
    """A simulated log, shuffled by ``order_seed``, in the order the feed delivers it
    (directory first): the lateness rule judges each partition's events in that order."""
    values, events = _log(seed=seed, count=1_500)
    paired = list(zip(values, events, strict=True))
    random.Random(order_seed).shuffle(paired)
    paired.sort(key=lambda pair: not isinstance(pair[1], RepUpserted | TeamUpserted))
    log = folder / f"log-{seed}-{uuid.uuid4().hex}.jsonl"
    log.write_bytes(b"".join(value + b"\n" for value, _ in paired))
    rules = dataclasses.replace(RULES, lateness_horizon_ms=horizon_days * DAY_MS)
    oracle = Oracle(
        log,
        queue_teams=QUEUE_TEAMS,
        horizon_ms=rules.lateness_horizon_ms,
        partitions=partitions,
    )
    return Judged([event for _, event in paired], oracle, rules)


class DeadLetters(list[tuple[Positioned, Rejection]]):
    """A dead-letter "topic" in memory."""

    async def __call__(self, record: Positioned, rejection: Rejection) -> None:
        self.append((record, rejection))

    def too_late(self) -> list[str]:
        return sorted(r.item.event_id for r, why in self if why.reason == Reason.TOO_LATE)


def late_ids(oracle: Oracle) -> list[str]:
    return sorted(orjson.loads(line)["event_id"] for line in oracle.late)


async def _compare(store: RedisStore, partitions: int, oracle: Oracle, as_ofs: list[int]) -> int:
    org = build_org(4, 8, 6)
    scopes = [("org", "")] + [("team", t.team_id) for t in org.teams] + [("team", "unassigned")]
    scopes += [("rep", r.rep_id) for r in org.reps[::7]]
    scopes += [("campaign", c) for c in org.campaigns] + [("queue", t.queue_id) for t in org.teams]
    directory = await store.directory(range(partitions), RULES)
    compared = 0
    for as_of in as_ofs:
        for scope, scope_id in scopes:
            # Rolling windows as of an instant whose buckets are no longer kept (1h as of 5
            # hours ago: minute buckets live 3 hours) cannot be answered, and are refused by
            # the API; every other window must equal the oracle.
            for window in [w for w in WINDOWS if answerable(w, as_of, END_MS)]:
                answer = await read_kpis(store, directory, scope, scope_id, window, as_of)
                engine = {k: figures(v) for k, v in answer.kpis.items()}
                expected = oracle.kpis(scope, scope_id, window, as_of)
                assert engine == expected, (scope, scope_id, window, as_of)
                compared += len(expected)
    return compared


async def test_projections_equal_the_oracle_on_a_shuffled_duplicated_log(
    redis_client: RedisClient, tmp_path: Path
) -> None:
    values, events = _log(seed=31, count=12_000)
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(values) + b"\n")
    oracle = Oracle(log, queue_teams=QUEUE_TEAMS)
    namespace = f"t{uuid.uuid4().hex[:8]}"
    rng = random.Random(7)
    shuffled = events[:]
    rng.shuffle(shuffled)
    try:
        started = time.monotonic()
        store, _ = await _project(
            RedisStore(redis_client, namespace), shuffled, 4, rng, rules=RULES, end_ms=END_MS
        )
        print(f"\nprojected {len(events)} events in {time.monotonic() - started:.2f}s")
        compared = await _compare(
            store, 4, oracle, [END_MS, END_MS - 5 * 3_600_000, END_MS - 3 * 86_400_000]
        )
        assert compared > 10_000
    finally:
        await _drop(redis_client, namespace)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(**ORDERINGS)
async def test_any_order_partitioning_and_replay_give_the_oracle(
    redis_client: RedisClient,
    tmp_path: Path,
    seed: int,
    partitions: int,
    order_seed: int,
    replay: bool,
    horizon_days: int,
) -> None:
    log = shuffled_log(seed, order_seed, partitions, horizon_days, tmp_path)
    namespace = f"t{uuid.uuid4().hex[:8]}"
    order = random.Random(order_seed)
    dead = DeadLetters()
    try:
        store = RedisStore(redis_client, namespace)
        # With replay, a redelivery of everything (a crash before the consumer committed):
        # the stored checkpoints skip what is at or below them; nothing may count twice.
        for _ in range(2 if replay else 1):
            await _project(
                store,
                log.events,
                partitions,
                order,
                rules=log.rules,
                end_ms=END_MS,
                dead_letter=dead,
            )
        await _compare(store, partitions, log.oracle, [END_MS, END_MS - 2 * 86_400_000])
        assert dead.too_late() == late_ids(log.oracle)  # each late event once, nothing else
    finally:
        await _drop(redis_client, namespace)


async def test_a_chunk_that_fails_to_land_commits_nothing_and_the_retry_gives_the_oracle(
    redis_client: RedisClient, tmp_path: Path
) -> None:
    """A batch lands in chunks of partitions (streams.projector.LANDING_CHUNKS). When the
    facts of one chunk cannot be published, that chunk commits nothing (facts go first),
    the other chunks land, the error surfaces only once they have, and applying the batch
    again completes it without counting anything twice."""
    values, events = _log(seed=11, count=3_000)
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(values) + b"\n")
    oracle = Oracle(log, queue_teams=QUEUE_TEAMS)
    namespace = f"t{uuid.uuid4().hex[:8]}"
    partitions = 12
    chunk = -(-partitions // LANDING_CHUNKS)
    store = RedisStore(redis_client, namespace)
    facts: list[list[Positioned]] = [[] for _ in range(partitions)]
    fact_offsets = [0] * partitions
    calls, fail_on = 0, 0

    async def publish(new: Sequence[LeadFact]) -> None:
        nonlocal calls
        calls += 1
        if calls == fail_on:
            raise RuntimeError("the broker is away")
        for fact in new:
            p = zlib.crc32(fact.lead_id.encode()) % partitions
            facts[p].append(Positioned("facts", p, fact_offsets[p], fact))
            fact_offsets[p] += 1

    projector = Projector(store, DirectoryView({}, RULES), RULES, publish, clock=lambda: END_MS)
    queues: list[list[Positioned]] = [[] for _ in range(partitions)]
    directory = [e for e in events if isinstance(e, RepUpserted | TeamUpserted)]
    for event in directory + [e for e in events if e not in directory]:
        p = zlib.crc32(event.subject_id.encode()) % partitions
        queues[p].append(Positioned(TOPIC, p, len(queues[p]), event))
    head = [i for queue in queues for i in queue if i.item in directory]
    rest = [i for queue in queues for i in queue if i.item not in directory]
    try:
        await projector.apply(head)
        fail_on = calls + 2  # the second chunk of the next batch
        with pytest.raises(RuntimeError, match="the broker is away"):
            await projector.apply(rest)
        stored = await store.checkpoints_of(range(partitions))
        landed = {p for p in range(partitions) if stored[p] == {TOPIC: len(queues[p]) - 1}}
        failed = set(range(partitions)) - landed
        assert failed == set(range(chunk, 2 * chunk)), stored
        for p in failed:  # nothing of the batch: still where the directory batch left it
            offsets = [i.offset for i in head if i.partition == p]
            assert stored[p] == ({TOPIC: max(offsets)} if offsets else {})
        published = sum(map(len, facts))
        outcome = await projector.apply(rest)
        redone = sum(1 for i in rest if i.partition in failed)
        assert outcome.applied + outcome.duplicates == redone  # the log has duplicates
        assert outcome.redelivered == len(rest) - redone
        assert sum(map(len, facts)) > published
        while any(facts):
            batch = [i for pending in facts for i in pending]
            for pending in facts:
                pending.clear()
            await projector.apply(batch)
        assert await _compare(store, partitions, oracle, [END_MS]) > 1_000
    finally:
        await _drop(redis_client, namespace)
