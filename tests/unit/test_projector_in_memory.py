"""The projector's logic without a server: the property test of
tests/integration/test_projections.py (any order, partitioning and a full redelivery give the
oracle) on the in-memory store, plus what a rebuild's freeze and a second writer do."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from projections.engine import DirectoryView
from projections.memory_store import MemoryBackend, MemoryStore
from projections.stores import NamespaceFrozen
from streams.projector import Positioned, Projector
from tests.integration.test_projections import (
    END_MS,
    ORDERINGS,
    RULES,
    DeadLetters,
    _compare,
    _log,
    late_ids,
    shuffled_log,
)
from tests.projection_feed import project

pytestmark = pytest.mark.unit


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(**ORDERINGS)
async def test_any_order_partitioning_and_replay_give_the_oracle(
    tmp_path: Path, seed: int, partitions: int, order_seed: int, replay: bool, horizon_days: int
) -> None:
    log = shuffled_log(seed, order_seed, partitions, horizon_days, tmp_path)
    store = MemoryStore(MemoryBackend(), "t")
    order = random.Random(order_seed)
    dead = DeadLetters()
    for _ in range(2 if replay else 1):  # a redelivery: the checkpoints skip it all
        await project(
            store, log.events, partitions, order, rules=log.rules, end_ms=END_MS, dead_letter=dead
        )
    await _compare(store, partitions, log.oracle, [END_MS, END_MS - 2 * 86_400_000])
    assert dead.too_late() == late_ids(log.oracle)


async def _no_facts(_: object) -> None:
    return None


async def test_a_frozen_generation_stops_the_projector_and_writes_nothing() -> None:
    _, events = _log(seed=3, count=200)
    store = MemoryStore(MemoryBackend(), "t")
    projector = Projector(store, DirectoryView({}, RULES), RULES, _no_facts, clock=lambda: END_MS)
    batch = [Positioned("events", 0, n, e) for n, e in enumerate(events[:50])]
    await projector.apply(batch)
    before = await store.progress([0])
    await store.freeze([0])
    more = [Positioned("events", 0, 50 + n, e) for n, e in enumerate(events[50:100])]
    with pytest.raises(NamespaceFrozen):
        await projector.apply(more)
    after = await store.progress([0])
    assert {k: v for k, v in after[0].items() if k != "!frozen"} == before[0]


async def test_a_second_writer_on_the_same_partition_counts_nothing_twice() -> None:
    """Two projectors (a worker and the one that replaced it after a rebalance) get the same
    records: the checkpoint each commit moves makes the later one skip what the first wrote."""
    _, events = _log(seed=5, count=400)
    backend = MemoryBackend()
    first = MemoryStore(backend, "t")
    second = MemoryStore(backend, "t")
    records = [Positioned("events", 0, n, e) for n, e in enumerate(events)]
    one = Projector(first, DirectoryView({}, RULES), RULES, _no_facts, clock=lambda: END_MS)
    two = Projector(second, DirectoryView({}, RULES), RULES, _no_facts, clock=lambda: END_MS)
    await one.apply(records[:300])
    await two.apply(records[:200])  # already applied: skipped by the stored checkpoint
    await two.apply(records[200:])
    await one.apply(records[250:])  # its cached checkpoint is stale: it must re-read, not add
    (progress,) = await first.progress([0])
    assert progress["events"] == str(len(records) - 1)
    assert int(progress["!applied"]) == len({e.event_id for e in events})
