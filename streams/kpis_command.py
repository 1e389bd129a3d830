"""``salespulse kpis``: one scope's KPIs for one window, as a table or as JSON."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson

from projections.catalogue import Figure, Result
from projections.namespaces import current_namespace
from projections.read import Answer, read_kpis
from projections.store import Store
from streams.connections import redis_client
from streams.preflight import require_redis
from streams.settings import Settings


def figures_json(result: Result) -> Any:
    if isinstance(result, Figure):
        return asdict(result)
    return {label: asdict(figure) for label, figure in result.items()}


async def _read(settings: Settings, scope: str, scope_id: str, window: str, as_of: int) -> Answer:
    await require_redis(settings)
    client = redis_client(settings)
    try:
        store = Store(client, await current_namespace(client, settings.topic_prefix, create=False))
        partitions = range(settings.partitions)
        directory = await store.directory(partitions, settings.rules)
        return await read_kpis(store, partitions, directory, scope, scope_id, window, as_of)
    finally:
        await client.aclose()


def _instant(ms: int) -> str:
    if ms >= 2**62:
        return "..."
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _format(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.4f}"


def show_kpis(
    settings: Settings, scope: str, scope_id: str, window: str, as_of: int, *, as_json: bool
) -> int:
    answer = asyncio.run(_read(settings, scope, scope_id, window, as_of))
    if as_json:
        document = {kpi: figures_json(result) for kpi, result in answer.kpis.items()}
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return 0
    span = answer.span
    print(
        f"{scope} {scope_id}  window {window}: [{_instant(span.start_ms)}, "
        f"{_instant(span.end_ms)}) in {answer.zone}"
    )
    print(f"{'kpi':<34}{'label':<14}{'value':>16}{'numerator':>16}{'denominator':>14}")
    for kpi, result in answer.kpis.items():
        rows = [("", result)] if isinstance(result, Figure) else list(result.items())
        for label, figure in rows:
            print(
                f"{kpi:<34}{label:<14}{_format(figure.value):>16}"
                f"{_format(figure.numerator):>16}{_format(figure.denominator):>14}"
            )
    return 0
