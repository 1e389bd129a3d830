"""``salespulse publish-kpis``: announce KPI changes on the compacted ``<prefix>.kpi`` topic.

Every ``SALESPULSE_KPI_PUBLISH_INTERVAL_SECONDS`` (default 1 s, so at most one record per
key per interval) a pass:

1. holds the publisher lease (one active publisher; a second one waits as a standby);
2. reads the dirty marks the projection commits left (calendar, all-time, gauge buckets);
3. recomputes the KPIs of each marked (scope, window instance) from the live projections;
4. compares them with the last published state (Redis, per period, expiring with the
   buckets) and sends a record for each change, acks=all, keyed per KPI and window;
5. only then stores the new states and clears the marks it handled (a mark that moved
   meanwhile stays for the next pass).

A crash between 4 and 5 re-sends the same records (same revision and value) on restart;
nothing is lost. See docs/kpi-topic.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from config.connections import kafka_options, redis_client
from config.settings import Settings
from projections import exact_json
from projections.catalogue import Result, evaluate
from projections.engine import GAUGE_BUCKET
from projections.errors import described
from projections.kpi_changes import (
    Change,
    LastState,
    WindowInstance,
    changes,
    instance,
    key_part,
    labelled_bases,
    published_figures,
    record_key,
)
from projections.read import scope_zone
from projections.store import RedisClient, RedisPublisherState, redis_unreadable
from projections.stores import DirectoryCache, PublisherState
from projections.windows import calendar_range, ttl_seconds
from streams.topics import ensure_topics

log = logging.getLogger(__name__)

LEASE_MS = 15_000


# (scope, id, window instance, its KPIs)
Work = tuple[str, str, WindowInstance, dict[str, Result]]
# State-hash fields holding the labels a labelled KPI was last published with.
LABELS = "#labels/"


# Sends change records (key, value or None for a tombstone) and returns once all are acked.
Send = Callable[[list[tuple[bytes, bytes | None]]], Awaitable[None]]


class KpiPublisher:
    """One publisher. ``state`` and ``send`` default to Redis and the Kafka topic; tests give
    the in-memory twin and a list."""

    def __init__(
        self, settings: Settings, state: PublisherState | None = None, send: Send | None = None
    ) -> None:
        self.settings = settings
        self.client: RedisClient | None = None
        if state is None:
            self.client = redis_client(settings)
            state = RedisPublisherState(self.client)
        self.state = state
        self.send = send or self._to_kafka
        self.token = uuid.uuid4().hex
        self.producer: AIOKafkaProducer | None = None
        self.published = 0
        self.passes = 0
        self.skipped = 0  # (scope, window instance) pairs left out because they failed
        self.directories = DirectoryCache(settings.rules)  # read again only when it changed

    def _state_key(self, window: WindowInstance) -> str:
        return f"{self.settings.topic_prefix}:kpi:last:{window.token}"

    async def start(self) -> None:
        await ensure_topics(self.settings)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            **kafka_options(self.settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            max_batch_size=512 * 1024,
        )
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        if self.client is not None:
            await self.client.aclose()

    async def leader(self) -> bool:
        return await self.state.hold_lease(self.settings.topic_prefix, self.token, LEASE_MS)

    async def run_pass(self) -> int:
        """One pass; returns the records sent."""
        s = self.settings
        now_ms = time.time_ns() // 1_000_000
        store = await self.state.live_store(s.topic_prefix)
        partitions = range(s.partitions)
        marks = await store.dirty()
        touched: dict[tuple[str, str], set[str]] = defaultdict(set)
        for group in marks:
            for scope, scope_id, bucket in group:
                # A gauge change shows in the "all" instance, which carries the gauges.
                touched[(scope, scope_id)].add("A" if bucket == GAUGE_BUCKET else bucket)
        if not touched:
            return 0
        directory = await self.directories.view(store, partitions)
        scopes = sorted(touched)
        requests = [
            (scope, scope_id, (bucket,))
            for scope, scope_id in scopes
            for bucket in sorted(touched[(scope, scope_id)])
        ]
        sums = await store.sums_many(requests)
        gauges = dict(
            zip(
                scopes,
                await store.sums_many([(sc, i, (GAUGE_BUCKET,)) for sc, i in scopes]),
                strict=True,
            )
        )
        work: list[Work] = []
        for (scope, scope_id, (bucket,)), windowed in zip(requests, sums, strict=True):
            try:
                if bucket == "A":
                    window = instance(bucket, None, None)
                else:
                    zone = scope_zone(scope, scope_id, now_ms, directory)
                    window = instance(bucket, *calendar_range(bucket, zone))
                kpis = evaluate(scope, windowed, gauges[(scope, scope_id)])
            except Exception:
                self._skip(scope, scope_id, bucket)
                continue
            work.append((scope, scope_id, window, kpis))
        last, labels_before = await self._last_states(work)
        records: list[tuple[WindowInstance, Change]] = []
        label_sets: list[tuple[WindowInstance, dict[str, frozenset[str]]]] = []
        for scope, scope_id, window, kpis in work:
            try:
                found, labels = changes(scope, scope_id, window, kpis, last, labels_before, now_ms)
            except Exception:
                self._skip(scope, scope_id, window.bucket)
                continue
            records += [(window, change) for change in found]
            if labels:
                label_sets.append((window, labels))
        await self.send([(change.key.encode(), _value(change)) for _, change in records])
        self.published += len(records)
        await self._remember(records, label_sets, now_ms)
        for number, group in enumerate(marks):
            await store.clear_dirty(number, group)
        return len(records)

    def _skip(self, scope: str, scope_id: str, bucket: str) -> None:
        """One scope whose figures cannot be computed does not stop the others: it is logged,
        counted and left out of this pass (its marks are cleared with the rest)."""
        log.exception("KPI publisher: leaving out %s %r, bucket %s", scope, scope_id, bucket)
        self.skipped += 1

    async def _last_states(
        self, work: list[Work]
    ) -> tuple[dict[str, LastState], dict[str, frozenset[str]]]:
        """Last published states of every figure of ``work`` and of every label published
        before (so that a label that comes back continues its revisions), and label sets."""
        label_fields = [
            (self._state_key(window), base)
            for scope, scope_id, window, kpis in work
            for base in labelled_bases(scope, scope_id, kpis, window)
        ]
        labels: dict[str, frozenset[str]] = {}
        raws = await self.state.last_values([(name, LABELS + base) for name, base in label_fields])
        for (_, base), raw in zip(label_fields, raws, strict=True):
            if raw is not None:
                labels[base] = frozenset(orjson.loads(raw))
        wanted: set[tuple[str, str]] = set()
        for scope, scope_id, window, kpis in work:
            name = self._state_key(window)
            for kpi, label, _ in published_figures(kpis, window):
                wanted.add((name, record_key(kpi, scope, scope_id, window.token, label)))
        for name, base in label_fields:
            wanted |= {(name, f"{base}/{key_part(label)}") for label in labels.get(base, ())}
        states: dict[str, LastState] = {}
        pairs = sorted(wanted)
        for (_, field), raw in zip(pairs, await self.state.last_values(pairs), strict=True):
            if raw is not None:
                r, v, n, d = exact_json.loads(raw)
                states[field] = LastState(r, v, n, d)
        return states, labels

    async def _to_kafka(self, records: list[tuple[bytes, bytes | None]]) -> None:
        assert self.producer is not None
        topic = self.settings.kpi_topic
        pending = [await self.producer.send(topic, value, key=key) for key, value in records]
        for future in pending:
            await future

    async def _remember(
        self,
        records: list[tuple[WindowInstance, Change]],
        label_sets: list[tuple[WindowInstance, dict[str, frozenset[str]]]],
        now_ms: int,
    ) -> None:
        """Keep the published state of each window as long as its bucket is kept
        (``windows.ttl_seconds``, the store's rule): at least its tier's TTL from this pass,
        and until its period's start plus that TTL when the period has not started yet."""
        by_window: dict[str, dict[str, bytes]] = defaultdict(dict)
        ttl: dict[str, int] = {}
        for window, change in records:
            name = self._state_key(window)
            state = change.state
            by_window[name][change.key] = exact_json.dumps(
                [state.revision, state.value, state.numerator, state.denominator]
            )
            ttl[name] = ttl_seconds(window.bucket, now_ms)
        for window, labels in label_sets:
            name = self._state_key(window)
            for base, now in labels.items():
                by_window[name][LABELS + base] = orjson.dumps(sorted(now))
            ttl[name] = ttl_seconds(window.bucket, now_ms)
        await self.state.remember(by_window, ttl)


def _value(change: Change) -> bytes | None:
    """A change record's value; None (a tombstone) for a figure that is gone."""
    return exact_json.dumps(change.value) if change.value is not None else None


async def publish_forever(settings: Settings, stop: asyncio.Event) -> None:
    publisher = KpiPublisher(settings)
    await publisher.start()
    log.info(
        "KPI publisher started: topic %s, every %ss",
        settings.kpi_topic,
        settings.kpi_publish_interval_seconds,
    )
    was_leader = None
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                leader = await publisher.leader()
                if leader != was_leader:
                    log.info(
                        "KPI publisher %s",
                        "active" if leader else "standby: another holds the lease",
                    )
                    was_leader = leader
                if leader:
                    sent = await publisher.run_pass()
                    if sent:
                        log.info("published %d KPI changes", sent)
            except Exception as exc:
                if not (isinstance(exc, KafkaError) or redis_unreadable(exc)):
                    raise
                log.warning("KPI publish pass failed, retrying: %s", described(exc))
            wait = settings.kpi_publish_interval_seconds - (time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.05, wait))
    finally:
        await publisher.stop()


def run_publisher(settings: Settings) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await publish_forever(settings, stop)

    asyncio.run(main())
    return 0
