"""``salespulse kpis``: one scope's KPIs for one window, as a table for people or as JSON."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson

from config.connections import redis_client
from config.settings import Settings
from projections import exact_json
from projections.catalogue import BY_ID, Figure, Kind, Result
from projections.display import Currency, count, kpi_text, unit_name
from projections.read import Answer, read_kpis, span_fields
from projections.store import RedisStore, current_namespace
from projections.windows import OPEN_END_MS
from streams.preflight import require_redis


def figures_json(result: Result) -> Any:
    if isinstance(result, Figure):
        return asdict(result)
    return {label: asdict(figure) for label, figure in result.items()}


def answer_json(answer: Answer, as_of_ms: int, currency: Currency) -> dict[str, Any]:
    """The ``--json`` document: the figures as stored (money in minor units, durations in
    seconds, ratios 0-1), each KPI's unit, and the currency of the money."""
    return {
        **span_fields(answer, as_of_ms),
        "currency": currency.json(),
        "units": {kpi: unit_name(kpi) for kpi in answer.kpis},
        "kpis": {kpi: figures_json(result) for kpi, result in answer.kpis.items()},
    }


async def _read(settings: Settings, scope: str, scope_id: str, window: str, as_of: int) -> Answer:
    await require_redis(settings)
    client = redis_client(settings)
    try:
        store = RedisStore(
            client, await current_namespace(client, settings.topic_prefix, create=False)
        )
        partitions = range(settings.partitions)
        directory = await store.directory(partitions, settings.rules)
        return await read_kpis(store, directory, scope, scope_id, window, as_of)
    finally:
        await client.aclose()


def _instant(ms: int) -> str:
    if ms >= OPEN_END_MS:
        return "..."
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _basis(kpi: str, figure: Figure) -> str:
    """What a division is taken over: ``6 of 9`` for a share, ``over 45`` for an average (its
    numerator is in units of its own, milliseconds or minor units, not worth reading)."""
    if figure.denominator is None:
        return ""
    if BY_ID[kpi].kind is Kind.RATIO:
        return f"{count(figure.numerator)} of {count(figure.denominator)}"
    return f"over {count(figure.denominator)}"


def table(answer: Answer, currency: Currency) -> list[str]:
    """The KPIs as lines for people: values by their unit, money in major units."""
    span = answer.span
    scope = f"{answer.scope} {answer.scope_id}" if answer.scope_id else answer.scope
    lines = [
        f"{scope}  window {span.window}: [{_instant(span.start_ms)}, "
        f"{_instant(span.end_ms)}) in {answer.zone}",
        f"{'kpi':<34}{'label':<14}{'value':>20}  {'basis'}",
    ]
    for kpi, result in answer.kpis.items():
        rows = [("", result)] if isinstance(result, Figure) else list(result.items())
        for label, figure in rows:
            value = kpi_text(kpi, figure.value, currency)
            lines.append(f"{kpi:<34}{label:<14}{value:>20}  {_basis(kpi, figure)}".rstrip())
    return lines


def show_kpis(
    settings: Settings, scope: str, scope_id: str, window: str, as_of: int, *, as_json: bool
) -> int:
    answer = asyncio.run(_read(settings, scope, scope_id, window, as_of))
    currency = Currency.of(settings.currency)
    if as_json:
        document = answer_json(answer, as_of, currency)
        print(exact_json.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return 0
    print("\n".join(table(answer, currency)))
    return 0
