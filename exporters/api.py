"""The JSON query API, served by the exporter beside /metrics (OpenAPI: exporters/openapi.py).

    GET /api/v1/kpis?scope=&id=&window=&as_of=          every KPI of one scope and window
    GET /api/v1/kpis/{kpi}?scope=&id=&window=&as_of=    one KPI
    GET /api/v1/leaderboard?kpi=&team=&window=&limit=   a team's reps ranked by one KPI
    GET /api/v1/health                                  can the projections be read, how fresh
    GET /api/v1/teams                                   the teams with data, zones, queues

A bad parameter is a 400 whose JSON error names it; an unknown scope id or KPI a 404;
unreadable projections a 503. ``as_of`` picks the window that contains that instant.
Figures are exact: money in minor units, durations in seconds, ratios 0-1; answers name
each KPI's unit and the currency (code and minor-unit exponent) of the money.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from exporters.openapi import document
from projections import exact_json
from projections.catalogue import BY_ID, SCOPES, Figure, Result, Unit
from projections.display import Currency, unit_name
from projections.errors import described
from projections.read import Answer, read_many, span_fields
from projections.store import RedisStore, current_namespace, redis_unreadable
from projections.targets import LABELLED, TARGETABLE, Target, Targets, with_targets
from projections.validation import InvalidField, format_instant_ms, parse_instant_ms
from projections.windows import WINDOWS, answerable, too_old

if TYPE_CHECKING:
    from exporters.server import Exporter

log = logging.getLogger(__name__)

MIN_AS_OF_MS = 0  # 1970
MAX_AS_OF_MS = 7_258_118_400_000  # 2200-01-01
MAX_LIMIT = 1_000


class ApiError(Exception):
    def __init__(self, status: int, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.parameter = status, message, parameter


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=exact_json.dumps(body), status=status, content_type="application/json")


def _figure(figure: Figure, target: Target | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "value": figure.value,
        "numerator": figure.numerator,
        "denominator": figure.denominator,
    }
    if target is not None:
        out["target"] = {
            "target": target.target,
            "direction": target.direction,
            "warning": target.warning,
            "critical": target.critical,
            "status": target.status(figure.value),
        }
    return out


def result_json(kpi: str, result: Result, answer: Answer, targets: Targets) -> Any:
    def target(label: str | None) -> Target | None:
        return targets.find(kpi, answer.scope, answer.scope_id, answer.span.window, label)

    if isinstance(result, Figure):
        return _figure(result, target(None))
    return {label: _figure(figure, target(label)) for label, figure in result.items()}


@dataclass(frozen=True)
class Query:
    scope: str
    scope_id: str
    window: str
    as_of_ms: int


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ApiError(400, f"{name} is given {len(values)} times", name)
    return values[0] if values else None


def parse_query(request: web.Request, now_ms: int) -> Query:
    scope = _one(request, "scope") or "org"
    if scope not in SCOPES:
        raise ApiError(400, f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}", "scope")
    scope_id = _one(request, "id") or ""
    if scope == "org" and scope_id:
        raise ApiError(400, "the org scope has no id", "id")
    if scope != "org" and not scope_id:
        raise ApiError(400, f"a {scope} id is required", "id")
    window, as_of = _window(request, "today"), _as_of(request, now_ms)
    if not answerable(window, as_of, now_ms):
        raise ApiError(400, too_old(window), "as_of")
    return Query(scope, scope_id, window, as_of)


def _window(request: web.Request, default: str) -> str:
    window = _one(request, "window") or default
    if window not in WINDOWS:
        raise ApiError(400, f"unknown window {window!r}: use one of {', '.join(WINDOWS)}", "window")
    return window


def _as_of(request: web.Request, now_ms: int) -> int:
    text = _one(request, "as_of")
    if text is None:
        return now_ms
    try:
        ms = parse_instant_ms(text, "as_of")
    except InvalidField as exc:
        detail = f"{exc.detail}: use RFC 3339, e.g. 2026-11-22T09:00:00Z"
        raise ApiError(400, detail, "as_of") from None
    if not MIN_AS_OF_MS <= ms < MAX_AS_OF_MS:
        raise ApiError(400, "as_of must be between 1970 and 2200", "as_of")
    return ms


class Api:
    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self.settings = exporter.settings
        self.currency = Currency.of(self.settings.currency)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/kpis", self._guard(self.kpis)),
            web.get("/api/v1/kpis/{kpi}", self._guard(self.kpi)),
            web.get("/api/v1/leaderboard", self._guard(self.leaderboard)),
            web.get("/api/v1/health", self._guard(self.health)),
            web.get("/api/v1/teams", self._guard(self.teams)),
            web.get("/openapi.json", self.openapi),
        ]

    def _guard(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def guarded(request: web.Request) -> web.Response:
            try:
                return await handler(request)
            except ApiError as exc:
                error = {"message": exc.message}
                if exc.parameter:
                    error["parameter"] = exc.parameter
                return _json({"error": error}, exc.status)
            except Exception as exc:
                if redis_unreadable(exc):
                    log.warning("API %s: projections unreadable: %s", request.path, described(exc))
                    return _json({"error": {"message": "the projections cannot be read now"}}, 503)
                log.exception("API %r failed", request.path_qs)
                return _json({"error": {"message": "internal error (logged by the exporter)"}}, 500)

        return guarded

    async def openapi(self, _request: web.Request) -> web.Response:
        return _json(document(secured=self.exporter.auth is not None))

    async def _store(self) -> RedisStore:
        client = self.exporter.client
        return RedisStore(
            client, await current_namespace(client, self.settings.topic_prefix, create=False)
        )

    async def _answer(self, query: Query) -> tuple[Answer, Targets, RedisStore]:
        store = await self._store()
        partitions = range(self.settings.partitions)
        if query.scope != "org" and not await self.exporter.knows_scope(
            store, query.scope, query.scope_id
        ):
            raise ApiError(404, f"no {query.scope} {query.scope_id!r} has data", "id")
        directory = await self.exporter.directories.view(store, partitions)
        request = [(query.scope, query.scope_id, query.window)]
        (answer,) = await read_many(store, directory, request, query.as_of_ms)
        targets = self.exporter.targets.current()
        kpis = with_targets(answer.kpis, targets, answer.scope, answer.scope_id, query.window)
        return (
            Answer(answer.scope, answer.scope_id, answer.span, answer.zone, kpis, {}),
            targets,
            store,
        )

    async def kpis(self, request: web.Request) -> web.Response:
        query = parse_query(request, time.time_ns() // 1_000_000)
        answer, targets, store = await self._answer(query)
        body = span_fields(answer, query.as_of_ms)
        body["projections"] = await self.exporter.projections_state(store)
        # Money is in minor units of this currency; "units" says which KPIs are money.
        body["currency"] = self.currency.json()
        body["units"] = {kpi: unit_name(kpi) for kpi in answer.kpis}
        body["kpis"] = {
            kpi: result_json(kpi, result, answer, targets) for kpi, result in answer.kpis.items()
        }
        return _json(body)

    async def kpi(self, request: web.Request) -> web.Response:
        kpi = request.match_info["kpi"]
        if kpi not in TARGETABLE:
            raise ApiError(404, f"unknown KPI {kpi!r}", "kpi")
        query = parse_query(request, time.time_ns() // 1_000_000)
        answer, targets, store = await self._answer(query)
        if kpi not in answer.kpis:
            raise ApiError(404, f"{kpi} is not defined for this scope and window", "kpi")
        body = span_fields(answer, query.as_of_ms)
        body["projections"] = await self.exporter.projections_state(store)
        body["kpi"] = kpi
        body.update(self._unit(kpi))
        body["result"] = result_json(kpi, answer.kpis[kpi], answer, targets)
        return _json(body)

    def _unit(self, kpi: str) -> dict[str, Any]:
        """A KPI's unit and, for money (in minor units), the currency."""
        out: dict[str, Any] = {"unit": unit_name(kpi)}
        if BY_ID[kpi].unit is Unit.MONEY:
            out["currency"] = self.currency.json()
        return out

    async def leaderboard(self, request: web.Request) -> web.Response:
        now_ms = time.time_ns() // 1_000_000
        kpi = _one(request, "kpi")
        if not kpi:
            raise ApiError(400, "kpi is required", "kpi")
        if kpi not in TARGETABLE:
            raise ApiError(404, f"unknown KPI {kpi!r}", "kpi")
        label = _one(request, "label")
        if kpi in LABELLED and not label:
            if kpi != "activities":
                raise ApiError(400, f"{kpi} has labels: name one with label=", "label")
            label = "total"
        if kpi not in LABELLED and label:
            raise ApiError(400, f"{kpi} has no labels", "label")
        team = _one(request, "team")
        if not team:
            raise ApiError(400, "team is required", "team")
        window = _window(request, "today")
        limit_text = _one(request, "limit") or "10"
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise ApiError(400, f"limit must be a whole number from 1 to {MAX_LIMIT}", "limit")
        limit = int(limit_text)

        store = await self._store()
        partitions = range(self.settings.partitions)
        known = await store.scopes()
        if ("team", team) not in known:
            raise ApiError(404, f"no team {team!r} has data", "team")
        directory = await self.exporter.directories.view(store, partitions)
        reps = sorted(i for s, i in known if s == "rep" and directory.team_of(i, now_ms) == team)
        answers = await read_many(store, directory, [("rep", r, window) for r in reps], now_ms)
        targets = self.exporter.targets.current()
        rows = []
        for answer in answers:
            kpis = with_targets(answer.kpis, targets, "rep", answer.scope_id, window)
            result = kpis.get(kpi)
            figure = result.get(label or "") if isinstance(result, dict) else result
            if figure is None:
                figure = Figure(None, 0, None)
            rows.append((answer.scope_id, figure))
        names = {rep: directory.name_of(rep) for rep in reps}
        target = targets.find(kpi, "team", team, window, label)
        direction = (
            target.direction if target else ("lower" if BY_ID[kpi].lower_is_better else "higher")
        )
        sign = 1 if direction == "lower" else -1
        rows.sort(key=lambda row: (row[1].value is None, sign * (row[1].value or 0), row[0]))
        return _json(
            {
                "kpi": kpi,
                "label": label,
                "team": team,
                "window": window,
                "direction": direction,
                "as_of": format_instant_ms(now_ms),
                **self._unit(kpi),
                "reps": len(rows),
                "rows": [
                    {"rank": rank, "rep": rep, "name": names[rep], **_figure(figure, None)}
                    for rank, (rep, figure) in enumerate(rows[:limit], start=1)
                ],
            }
        )

    async def health(self, _request: web.Request) -> web.Response:
        try:
            health = await self.exporter.health_summary()
        except Exception as exc:
            if not redis_unreadable(exc):
                raise
            log.warning("API health: projections unreadable: %s", described(exc))
            return _json({"status": "down", "redis": False}, 503)
        lag = health.lag or {}
        return _json(
            {
                "status": health.status,
                "live": health.live,
                "refilling": [{"topic": t, "partition": p} for t, p in health.refilling],
                "rebuild": health.rebuild,
                "redis": True,
                "kafka": health.lag is not None,
                "consumer_lag": health.total_lag,
                "newest_event_age_seconds": health.newest_event_age_seconds,
                "last_commit_age_seconds": health.last_commit_age_seconds,
                "partitions": [
                    {
                        "topic": topic,
                        "partition": partition,
                        "offset": health.offsets.get((topic, partition)),
                        "lag": lag[(topic, partition)],
                    }
                    for topic, partition in sorted(lag)
                ],
                "targets": len(self.exporter.targets.current().items),
                "dead_letters": await self.exporter.dead_letters(),
                "too_late": health.too_late,
            }
        )

    async def teams(self, _request: web.Request) -> web.Response:
        store = await self._store()
        partitions = range(self.settings.partitions)
        known = await store.scopes()
        directory = await self.exporter.directories.view(store, partitions)
        teams = sorted(i for s, i in known if s == "team")
        queues: dict[str, list[str]] = {}
        for queue, team in self.settings.queue_team_pairs:
            queues.setdefault(team, []).append(queue)
        return _json(
            {
                "teams": [
                    {
                        "id": team,
                        "zone": directory.zone_of(team),
                        # SALESPULSE_QUEUE_TEAMS: without a queue, abandoned calls reach no team.
                        "queues": sorted(queues.get(team, [])),
                    }
                    for team in teams
                ]
            }
        )
