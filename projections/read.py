"""The read side: "KPI k for scope s, id i, window w, as of instant t"."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from projections.catalogue import SCOPES, Figure, Result, evaluate
from projections.engine import GAUGE_BUCKET, DirectoryView
from projections.stores import ProjectionStore
from projections.validation import format_instant_ms
from projections.windows import OPEN_END_MS, WindowSpan, window_span

OLDEST_UNTOUCHED = "oldest_untouched_lead_age_seconds"


class UnknownScope(ValueError):
    """A scope name that is not one of SCOPES."""


@dataclass(frozen=True)
class Answer:
    scope: str
    scope_id: str
    span: WindowSpan
    zone: str
    kpis: dict[str, Result]
    sums: dict[str, int]  # the window's base fields, for histograms


def scope_zone(scope: str, scope_id: str, as_of_ms: int, directory: DirectoryView) -> str:
    """The zone whose calendar a scope's calendar windows follow."""
    if scope == "team":
        return directory.zone_of(scope_id)
    if scope == "rep":
        return directory.zone_of(directory.team_of(scope_id, as_of_ms))
    return directory.org_zone  # org, campaign, queue


def span_fields(answer: Answer, as_of_ms: int) -> dict[str, Any]:
    """What an answer is about, as the API and ``kpis --json`` say it (RFC 3339 instants; no
    start or end where the window has none)."""
    span = answer.span
    return {
        "scope": answer.scope,
        "id": answer.scope_id,
        "window": span.window,
        "window_start": format_instant_ms(span.start_ms) if span.start_ms > 0 else None,
        "window_end": format_instant_ms(span.end_ms) if span.end_ms < OPEN_END_MS else None,
        "zone": answer.zone,
        "as_of": format_instant_ms(as_of_ms),
    }


async def read_kpis(
    store: ProjectionStore,
    directory: DirectoryView,
    scope: str,
    scope_id: str,
    window: str,
    as_of_ms: int,
) -> Answer:
    (answer,) = await read_many(store, directory, [(scope, scope_id, window)], as_of_ms)
    return answer


async def read_many(
    store: ProjectionStore,
    directory: DirectoryView,
    queries: Sequence[tuple[str, str, str]],
    as_of_ms: int,
    only: Mapping[str, Collection[str]] | None = None,
) -> list[Answer]:
    """Many (scope, id, window) reads as of one instant, in three round trips in all.

    ``only`` limits the KPIs computed for a scope (e.g. the per-rep KPIs an exporter shows).
    """
    spans = []
    for scope, scope_id, window in queries:
        if scope not in SCOPES:
            raise UnknownScope(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
        scope_id = "" if scope == "org" else scope_id
        zone = scope_zone(scope, scope_id, as_of_ms, directory)
        spans.append((scope, scope_id, zone, window_span(window, as_of_ms, zone)))
    scopes = sorted({(scope, scope_id) for scope, scope_id, _, _ in spans})
    windowed = await store.sums_many([(s, i, span.bucket_ids) for s, i, _, span in spans])
    gauges = dict(
        zip(
            scopes,
            await store.sums_many([(s, i, (GAUGE_BUCKET,)) for s, i in scopes]),
            strict=True,
        )
    )

    def wants(scope: str, kpi: str) -> bool:
        wanted = only.get(scope) if only else None
        return wanted is None or kpi in wanted

    aged = [sc for sc in scopes if wants(sc[0], OLDEST_UNTOUCHED)]
    oldest = dict(zip(aged, await store.oldest_untouched(aged), strict=True))
    answers = []
    for (scope, scope_id, zone, span), sums in zip(spans, windowed, strict=True):
        wanted = only.get(scope) if only else None
        kpis = evaluate(scope, sums, gauges[(scope, scope_id)], wanted)
        if wants(scope, OLDEST_UNTOUCHED):
            since = oldest[(scope, scope_id)]
            age = max(0, as_of_ms - since) // 1000 if since is not None else None
            kpis[OLDEST_UNTOUCHED] = Figure(age, age or 0, None)
        answers.append(Answer(scope, scope_id, span, zone, kpis, sums))
    return answers
