"""The KPI publisher's passes without a server: the projections and its state in the in-memory
twin, the records in a list. What the integration test (tests/integration/test_kpi_topic.py)
checks on Kafka and Redis, here for the logic: a record per changed figure, none when nothing
changed, the latest record of each key equal to the read side, one active publisher."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson
import pytest

from config.settings import Settings
from projections.kpi_changes import Change, LastState, instance
from projections.memory_store import MemoryBackend, MemoryPublisherState, MemoryStore
from projections.read import read_kpis
from projections.windows import DAY_MS, TIER_TTL_SECONDS, calendar_range
from streams.kpi_publisher import LEASE_MS, KpiPublisher
from tests.integration.test_projections import END_MS, RULES, _log
from tests.projection_feed import project

pytestmark = pytest.mark.unit

SETTINGS = Settings.from_env({"SALESPULSE_TOPIC_PREFIX": "t", "SALESPULSE_PARTITIONS": "3"})


class Topic:
    """The compacted topic as a consumer sees it: the latest value of each key."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    async def send(self, records: list[tuple[bytes, bytes | None]]) -> None:
        self.records += records

    def latest(self) -> dict[str, dict[str, object] | None]:
        return {k.decode(): orjson.loads(v) if v else None for k, v in self.records}


async def test_each_pass_publishes_what_changed_and_the_latest_equals_the_read_side() -> None:
    _, events = _log(seed=8, count=1_200)
    half = len(events) // 2
    backend = MemoryBackend()
    store = MemoryStore(backend, "t:g1")  # the live generation of prefix "t"
    topic = Topic()
    publisher = KpiPublisher(SETTINGS, MemoryPublisherState(backend), topic.send)

    await project(store, events[:half], 3, random.Random(1), rules=RULES, end_ms=END_MS)
    first = await publisher.run_pass()
    assert first == len(topic.records) > 100
    assert len({key for key, _ in topic.records}) == first  # one record per key per pass
    assert await store.dirty() == [{}]  # every mark handled
    assert await publisher.run_pass() == 0  # nothing changed, nothing sent

    await project(store, events, 3, random.Random(2), rules=RULES, end_ms=END_MS)
    before, count = topic.latest(), len(topic.records)
    sent = await publisher.run_pass()
    assert sent > 0
    for key, raw in topic.records[count:]:  # only figures that changed are sent again
        was, now = before.get(key.decode()), orjson.loads(raw) if raw else None
        if was is not None and now is not None:
            parts = ("value", "numerator", "denominator")
            assert [was[p] for p in parts] != [now[p] for p in parts], key
            assert now["revision"] == was["revision"] + 1, key  # type: ignore[operator]

    directory = await store.directory(range(3), RULES)
    answer = await read_kpis(store, directory, "org", "", "all", END_MS)
    latest = topic.latest()
    for kpi in ("leads_created", "revenue_won", "calls_offered", "opportunities_created"):
        record = latest[f"{kpi}/org//all"]
        assert record is not None
        assert record["value"] == answer.kpis[kpi].value  # type: ignore[union-attr]


async def test_one_publisher_holds_the_lease_until_it_lapses() -> None:
    now = [0.0]
    backend = MemoryBackend(clock=lambda: now[0])
    one = KpiPublisher(SETTINGS, MemoryPublisherState(backend), Topic().send)
    two = KpiPublisher(SETTINGS, MemoryPublisherState(backend), Topic().send)
    assert await one.leader() and not await two.leader()
    now[0] += LEASE_MS / 1000 / 2
    assert await one.leader() and not await two.leader()  # renewed
    now[0] += LEASE_MS / 1000 + 1  # the first one died: its lease lapses
    assert await two.leader() and not await one.leader()


class TtlRecordingState(MemoryPublisherState):
    """The in-memory state, which keeps what TTL each state hash was given."""

    def __init__(self, backend: MemoryBackend) -> None:
        super().__init__(backend)
        self.ttls: dict[str, int] = {}

    async def remember(
        self, values: Mapping[str, Mapping[str, bytes]], ttl_seconds: Mapping[str, int]
    ) -> None:
        self.ttls.update(ttl_seconds)
        await super().remember(values, ttl_seconds)


async def test_a_windows_state_lives_as_long_as_its_bucket_even_before_its_period() -> None:
    """A day of Kiritimati (UTC+14) starts 14 hours before its UTC date, so an event up to a
    day ahead can fall in a day whose UTC start is up to 38 hours away. Its bucket is kept
    until that start, less a day, plus 40 days (``windows.kept_until``); the day's published
    state (revisions, last values) must live as long, not 40 days from the pass."""
    now = int(datetime(2026, 12, 1, 12, tzinfo=UTC).timestamp() * 1000)
    bucket = "D2026-12-03"  # in Kiritimati from 2026-12-02T10:00Z, 22 h after now
    utc_start = int(datetime(2026, 12, 3, tzinfo=UTC).timestamp() * 1000)  # now + 36 h
    state = TtlRecordingState(MemoryBackend())
    publisher = KpiPublisher(SETTINGS, state, Topic().send)
    window = instance(bucket, *calendar_range(bucket, "Pacific/Kiritimati"))
    change = Change("calls_offered/team/pacific/day@2026-12-03", {}, LastState(1, 1, 1, None))
    await publisher._remember([(window, change)], [], now)
    (ttl,) = state.ttls.values()
    kept_until = utc_start - DAY_MS + TIER_TTL_SECONDS["D"] * 1000
    assert now + ttl * 1000 >= kept_until
    assert ttl == TIER_TTL_SECONDS["D"] + 12 * 3600  # and not longer
