"""``salespulse exporter``: an HTTP server; its /metrics reads the projections per scrape.

No KPI is cached between scrapes: every scrape resolves the live generation,
lists the scopes, reads every (scope, window) in a few pipelines and builds
fresh metric families. Only the directory (reps, teams) is kept between reads, and
read again whenever a partition's directory version moved (``DirectoryCache``). If
Redis cannot be read, the scrape still answers, with ``salespulse_exporter_up 0`` and no
KPI series (never stale values). With a reader token configured (``exporters/auth.py``)
every route answers only requests that carry it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from config.connections import kafka_options, redis_client
from config.reader_access import reader_token
from config.settings import Settings
from exporters.api import Api
from exporters.auth import ReaderAuth
from exporters.exposition import TextFamily, render
from exporters.families import families, target_families
from exporters.health import Health, health_families, summarise
from exporters.targets_file import TargetsFile
from exporters.wallboard_routes import wallboard_routes
from projections.errors import SalespulseError, described
from projections.read import Answer, read_many
from projections.store import (
    FOLD_GRACE_MS,
    RedisStore,
    current_namespace,
    rebuilding,
    redis_unreadable,
    used_memory,
)
from projections.stores import DirectoryCache, SharedRead
from projections.targets import QUOTA_ATTAINMENT, QUOTA_KPI, TargetsError, with_targets
from projections.windows import ALL_TIME, WINDOWS

log = logging.getLogger(__name__)

# How old the projections' state and the directory versions an answer uses may be: every
# read of them costs a call per partition, so answers in the same half second share one.
STATUS_MAX_AGE = 0.5


class Exporter:
    def __init__(self, settings: Settings, auth: ReaderAuth | None = None) -> None:
        self.settings = settings
        self.auth = auth  # None: readers need no token
        # One retry: with Redis away a scrape answers at once with salespulse_exporter_up 0
        # instead of waiting out the worker's backoff (seconds) per scrape.
        self.client = redis_client(settings, retries=1)
        self.targets = TargetsFile(settings.targets_file)
        # Read again only when it changed; versions and the projections' state are shared by
        # the answers of STATUS_MAX_AGE seconds.
        self.directories = DirectoryCache(settings.rules, STATUS_MAX_AGE)
        self._scopes: tuple[str, set[tuple[str, str]]] = ("", set())  # namespace, seen
        self._states: dict[str, SharedRead[dict[str, Any]]] = {}  # per namespace
        self._kafka: AIOKafkaConsumer | None = None
        self.skipped_scopes = 0  # in the last scrape

    async def _end_offsets(self) -> dict[tuple[str, int], int] | None:
        """End offsets of the events and lead-facts topics, or None if Kafka is unreachable."""
        s = self.settings
        try:
            if self._kafka is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=s.bootstrap,
                    **kafka_options(s),
                    request_timeout_ms=5_000,
                    isolation_level="read_committed",
                )
                await consumer.start()
                self._kafka = consumer
            topics = (s.events_topic, s.facts_topic)
            if not set(topics) <= await asyncio.wait_for(self._kafka.topics(), 2):
                return None  # no worker has created the topics yet: nothing to lag behind
            tps = [TopicPartition(topic, p) for topic in topics for p in range(s.partitions)]
            ends = await asyncio.wait_for(self._kafka.end_offsets(tps), 2)
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("consumer lag unavailable: %s", described(exc))
            return None
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def health_summary(self) -> Health:
        s = self.settings
        namespace = await current_namespace(self.client, s.topic_prefix, create=False)
        store = RedisStore(self.client, namespace)
        progress = await store.progress(range(s.partitions))
        running = await rebuilding(self.client, s.topic_prefix)
        ends = await self._end_offsets()
        now_ms = time.time_ns() // 1_000_000
        health = summarise(progress, ends, now_ms, s.stale_after_seconds, running)
        (org,) = await store.sums_many([("org", "", (ALL_TIME,))])
        used = await used_memory(self.client)
        unfolded = await store.unfolded(range(s.partitions), FOLD_GRACE_MS)
        return replace(health, leads=org.get("leads", 0), redis_used_bytes=used, unfolded=unfolded)

    async def projections_state(self, store: RedisStore) -> dict[str, Any]:
        """What a KPI answer read from ``store`` says of the numbers it holds, from Redis
        alone, read after the answer: ``refilling`` (records the projections lost are applied
        again: partial), ``folding`` (commits a failed fold or a failover left out of the
        rollups are being folded again: partial), ``rebuilding`` (a rebuild runs; these are
        the live generation's numbers) or ``live``. Answers share one read: it started at
        most STATUS_MAX_AGE before the answer's."""
        if store.namespace not in self._states:  # the first, or a rebuild switched
            self._states = {store.namespace: SharedRead(STATUS_MAX_AGE)}
        shared = self._states[store.namespace]
        return await shared.get(lambda: self._projections_state(store))

    async def _projections_state(self, store: RedisStore) -> dict[str, Any]:
        s = self.settings
        partitions = range(s.partitions)
        progress = await store.progress(partitions)
        health = summarise(progress, None, 0, rebuild=await rebuilding(self.client, s.topic_prefix))
        status = (
            "refilling"
            if health.refilling
            else "folding"
            if await store.unfolded(partitions, FOLD_GRACE_MS)
            else "rebuilding"
            if health.rebuild
            else "live"
        )
        return {"status": status, "live": status not in ("refilling", "folding")}

    async def knows_scope(self, store: RedisStore, scope: str, scope_id: str) -> bool:
        """Whether (scope, id) has data. A scope, once it has, keeps it for the life of its
        generation (nothing removes one), so one seen is remembered until the namespace
        changes, and only an unknown one costs a call per partition."""
        namespace, seen = self._scopes
        if namespace != store.namespace:
            seen = set()
            self._scopes = (store.namespace, seen)
        if (scope, scope_id) in seen:
            return True
        if await store.has_scope(scope, scope_id):
            seen.add((scope, scope_id))
            return True
        return False

    async def dead_letters(self) -> int | None:
        """Records ever written to the dead-letter topic (its end offsets), None if unknown."""
        s = self.settings
        if self._kafka is None:
            return None  # the health read opens the consumer; it runs first
        try:
            if s.dlq_topic not in await asyncio.wait_for(self._kafka.topics(), 2):
                return 0  # no worker has created it: nothing was dead-lettered yet
            tps = [TopicPartition(s.dlq_topic, p) for p in range(s.partitions)]
            ends = await asyncio.wait_for(self._kafka.end_offsets(tps), 2)
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("dead-letter count unavailable: %s", described(exc))
            return None
        return sum(ends.values())

    async def health(self) -> list[Metric]:
        return health_families(await self.health_summary())

    async def kpi_families(self) -> list[Metric | TextFamily]:
        s = self.settings
        namespace = await current_namespace(self.client, s.topic_prefix, create=False)
        store = RedisStore(self.client, namespace)
        partitions = range(s.partitions)
        directory = await self.directories.view(store, partitions)
        scopes = sorted(await store.scopes())
        reps_per_team: dict[str, int] = {}
        as_of = time.time_ns() // 1_000_000
        queries: list[tuple[str, str, str]] = [("org", "", w) for w in WINDOWS]
        rep_team: dict[str, str] = {}
        for scope, scope_id in scopes:
            if scope == "rep":
                team = directory.team_of(scope_id, as_of)
                if reps_per_team.get(team, 0) >= s.export_max_reps_per_team:
                    continue  # cardinality bound: the rest of this team's reps are not exported
                reps_per_team[team] = reps_per_team.get(team, 0) + 1
                rep_team[scope_id] = team
                queries += [(scope, scope_id, w) for w in s.rep_windows]
            else:
                queries += [(scope, scope_id, w) for w in WINDOWS]
        # Cardinality bound: reps export only the configured KPIs (quota needs revenue).
        rep_kpis = s.rep_kpis  # a property that parses the setting: once per scrape
        wanted = rep_kpis | ({QUOTA_KPI} if QUOTA_ATTAINMENT in rep_kpis else set())

        async def build(chosen: list[tuple[str, str, str]]) -> list[Metric | TextFamily]:
            answers = await read_many(store, directory, chosen, as_of, {"rep": wanted})
            targets = self.targets.current()
            with_teams = []
            for a in answers:
                kpis = with_targets(a.kpis, targets, a.scope, a.scope_id, a.span.window)
                if a.scope == "rep":
                    kpis = {k: v for k, v in kpis.items() if k in rep_kpis}
                # Not dataclasses.replace, which costs four times as much (3,000 answers).
                answer = Answer(a.scope, a.scope_id, a.span, a.zone, kpis, a.sums)
                with_teams.append((answer, rep_team.get(a.scope_id, "")))
            return [
                *families(with_teams, rep_histogram_buckets=s.export_rep_histogram_buckets),
                *target_families(with_teams, targets),
            ]

        self.skipped_scopes = 0  # read by this scrape's own metrics (one scrape at a time)
        try:
            return await build(queries)
        except Exception as exc:
            if redis_unreadable(exc):
                raise
            log.exception("a scrape failed: reading scope by scope, to leave out the one failing")
        by_scope: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        for query in queries:
            by_scope.setdefault(query[:2], []).append(query)
        parts: list[Metric | TextFamily] = []
        for (scope, scope_id), chosen in by_scope.items():
            try:
                parts += await build(chosen)
            except Exception as exc:
                if redis_unreadable(exc):
                    raise
                log.exception("scrape: leaving out %s %r, which cannot be read", scope, scope_id)
                self.skipped_scopes += 1
        return merge_families(parts)

    async def metrics(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            built = [*await self.kpi_families(), *await self.health()]
            up = 1.0
        except Exception as exc:
            if not redis_unreadable(exc):
                raise
            log.warning("scrape without KPIs: Redis is not readable: %s", described(exc))
            built, up = [], 0.0
        exporter_up = GaugeMetricFamily(
            "salespulse_exporter_up", "1 if the last scrape could read the projections"
        )
        exporter_up.add_metric([], up)
        skipped = GaugeMetricFamily(
            "salespulse_exporter_skipped_scopes",
            "Scopes this scrape left out because reading them failed (the log names them)",
        )
        skipped.add_metric([], float(self.skipped_scopes))
        duration = GaugeMetricFamily(
            "salespulse_exporter_scrape_duration_seconds",
            "Time this scrape took to read the projections and build its metrics",
        )
        duration.add_metric([], time.perf_counter() - started)
        refused = self.auth.families() if self.auth is not None else []
        body = render([*built, exporter_up, skipped, duration, *refused])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def close(self, _app: web.Application) -> None:
        await self.client.aclose()
        if self._kafka is not None:
            await self._kafka.stop()


def merge_families(parts: list[Metric | TextFamily]) -> list[Metric | TextFamily]:
    """Families of the same name (built scope by scope) as one family each."""
    merged: dict[str, Metric | TextFamily] = {}
    for family in parts:
        into = merged.get(family.name)
        if into is None:
            merged[family.name] = family
        elif isinstance(into, TextFamily):
            assert isinstance(family, TextFamily), family.name  # one builder per name
            into.lines.extend(family.lines)
        else:
            assert isinstance(family, Metric), family.name
            into.samples.extend(family.samples)
    return list(merged.values())


def build_app(settings: Settings) -> web.Application:
    """The exporter's routes; SecretError (before anything is served) for an unusable
    reader token file, TargetsError for a wrong targets file."""
    token = reader_token(settings)
    auth = ReaderAuth(token) if token is not None else None
    exporter = Exporter(settings, auth)
    # Every route, the wallboard's files and unknown paths included: with a token configured
    # nothing (not even which paths exist) is answered without it.
    app = web.Application(middlewares=[auth.middleware()] if auth is not None else [])
    app.router.add_get("/metrics", exporter.metrics)
    app.router.add_routes(Api(exporter).routes())
    app.router.add_routes(wallboard_routes())
    app.on_cleanup.append(exporter.close)
    return app


def run_exporter(settings: Settings) -> int:
    try:
        app = build_app(settings)
    except TargetsError as exc:
        raise exc.about(settings.targets_file) from None
    try:
        web.run_app(
            app,
            host=settings.metrics_host,
            port=settings.exporter_port,
            print=None,
            access_log=None,
        )
    except OSError as exc:
        where = f"{settings.metrics_host}:{settings.exporter_port}"
        raise SalespulseError(f"cannot serve on {where}: {exc.strerror}") from None
    return 0
