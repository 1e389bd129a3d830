"""The read side: "KPI k for scope s, id i, window w, as of instant t"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from projections.catalogue import Figure, Result, evaluate
from projections.engine import GAUGE_BUCKET, DirectoryView
from projections.store import Store
from projections.windows import WindowSpan, window_span

SCOPES = ("org", "team", "rep", "campaign", "queue")


class UnknownScope(ValueError):
    """A scope name that is not one of SCOPES."""


@dataclass(frozen=True)
class Answer:
    scope: str
    scope_id: str
    span: WindowSpan
    zone: str
    kpis: dict[str, Result]


def scope_zone(scope: str, scope_id: str, as_of_ms: int, directory: DirectoryView) -> str:
    """The zone whose calendar a scope's calendar windows follow."""
    if scope == "team":
        return directory.zone_of(scope_id)
    if scope == "rep":
        return directory.zone_of(directory.team_of(scope_id, as_of_ms))
    return directory.org_zone  # org, campaign, queue


async def read_kpis(
    store: Store,
    partitions: Sequence[int],
    directory: DirectoryView,
    scope: str,
    scope_id: str,
    window: str,
    as_of_ms: int,
) -> Answer:
    if scope not in SCOPES:
        raise UnknownScope(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
    scope_id = "" if scope == "org" else scope_id
    zone = scope_zone(scope, scope_id, as_of_ms, directory)
    span = window_span(window, as_of_ms, zone)
    windowed = await store.sums(partitions, scope, scope_id, span.bucket_ids)
    gauges = await store.sums(partitions, scope, scope_id, (GAUGE_BUCKET,))
    kpis = evaluate(scope, windowed, gauges)
    since = await store.oldest_untouched(partitions, scope, scope_id)
    age = max(0, as_of_ms - since) // 1000 if since is not None else None
    kpis["oldest_untouched_lead_age_seconds"] = Figure(age, age or 0, None)
    return Answer(scope, scope_id, span, zone, kpis)
