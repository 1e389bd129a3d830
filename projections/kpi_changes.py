"""KPI change records for the ``<prefix>.kpi`` topic. Pure: KPIs and last states in, records out.

A record is keyed ``{kpi}/{scope}/{id}/{window}[/{label}]``, with ``%`` and ``/`` inside the
id and the label percent-escaped (``%25``, ``%2F``) so that no two figures share a key
whatever their ids (``key_part``). ``window`` names one window
instance, so that a compacted topic keeps the latest value of every one of them:
``all``, or a calendar period ``day@2026-11-22``, ``week@2026-W47``, ``month@2026-11``,
``quarter@2026-Q4``, ``year@2026`` in the scope's time zone. Rolling windows are not
published (they move every minute without any event). Gauge KPIs (untouched leads,
stage share: states "now", not sums over a window) are published under ``all`` only;
the age of the oldest untouched lead, which changes with the clock, is not published.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from projections.catalogue import CATALOGUE, GAUGES, Figure, Result
from projections.validation import format_instant_ms

SCHEMA_VERSION = 1
PERIOD_UNITS = {"D": "day", "W": "week", "M": "month", "Q": "quarter", "Y": "year"}
NOT_PUBLISHED = frozenset(kpi.id for kpi in CATALOGUE if not kpi.published)


@dataclass(frozen=True)
class WindowInstance:
    bucket: str  # the bucket id it sums: "A", "D2026-11-22", ...
    token: str  # "all" or "<unit>@<period>"
    unit: str  # "all", "day", "week", "month", "quarter", "year"
    period: str | None  # "2026-11-22", "2026-W47", ... ; None for all
    start_ms: int | None
    end_ms: int | None


@dataclass(frozen=True)
class LastState:
    revision: int
    value: float | int | None
    numerator: int
    denominator: int | None


def instance(bucket: str, start_ms: int | None, end_ms: int | None) -> WindowInstance:
    """The window instance of a calendar or all-time bucket id (``D2026-11-22``, ``A``)."""
    if bucket == "A":
        return WindowInstance(bucket, "all", "all", None, None, None)
    unit = PERIOD_UNITS[bucket[0]]
    return WindowInstance(bucket, f"{unit}@{bucket[1:]}", unit, bucket[1:], start_ms, end_ms)


_KEY_ESCAPES = str.maketrans({"%": "%25", "/": "%2F"})


def key_part(text: str) -> str:
    """An id or a label as it appears between the ``/`` of a record key."""
    return text.translate(_KEY_ESCAPES) if "/" in text or "%" in text else text


def record_key(kpi: str, scope: str, scope_id: str, window: str, label: str | None) -> str:
    key = f"{kpi}/{scope}/{key_part(scope_id)}/{window}"
    return f"{key}/{key_part(label)}" if label is not None else key


def published_results(
    kpis: Mapping[str, Result], window: WindowInstance
) -> Iterator[tuple[str, Result]]:
    """(kpi, result) of the KPIs this window instance publishes."""
    for kpi, result in kpis.items():
        if kpi in NOT_PUBLISHED or (kpi in GAUGES and window.unit != "all"):
            continue
        yield kpi, result


def published_figures(
    kpis: Mapping[str, Result], window: WindowInstance
) -> Iterator[tuple[str, str | None, Figure]]:
    """(kpi, label, figure) of the KPIs this window instance publishes."""
    for kpi, result in published_results(kpis, window):
        if isinstance(result, Figure):
            yield kpi, None, result
        else:
            for label, figure in result.items():
                yield kpi, label, figure


def labelled_bases(
    scope: str, scope_id: str, kpis: Mapping[str, Result], window: WindowInstance
) -> list[str]:
    """Keys (without label) of this instance's KPIs with labels, whose label sets are kept."""
    return [
        record_key(kpi, scope, scope_id, window.token, None)
        for kpi, result in published_results(kpis, window)
        if isinstance(result, dict)
    ]


@dataclass(frozen=True)
class Change:
    key: str
    value: dict[str, Any] | None  # None: a tombstone, the label is gone from this window
    state: LastState


def changes(
    scope: str,
    scope_id: str,
    window: WindowInstance,
    kpis: Mapping[str, Result],
    last: Mapping[str, LastState],
    labels_before: Mapping[str, frozenset[str]],
    now_ms: int,
) -> tuple[list[Change], dict[str, frozenset[str]]]:
    """The records for every figure that differs from its last state, and the label sets
    that changed (base key -> labels now).

    A label that was published and is gone (a stage that no lead is in any more) gets a
    tombstone: compaction then forgets the key. A
    change to an already published value of a window that ended before ``now_ms`` was made
    by a late event: it is flagged ``correction``.
    """
    out: list[Change] = []
    closed = window.end_ms is not None and window.end_ms <= now_ms
    label_sets: dict[str, frozenset[str]] = {}
    for kpi, result in published_results(kpis, window):
        if not isinstance(result, dict):
            continue
        base = record_key(kpi, scope, scope_id, window.token, None)
        now = frozenset(result)
        if now != labels_before.get(base, frozenset()):
            label_sets[base] = now
        for gone in sorted(labels_before.get(base, frozenset()) - now):
            gone_key = record_key(kpi, scope, scope_id, window.token, gone)
            was = last.get(gone_key)
            revision = was.revision if was is not None else 0
            out.append(Change(gone_key, None, LastState(revision, None, 0, None)))
    for kpi, label, figure in published_figures(kpis, window):
        key = record_key(kpi, scope, scope_id, window.token, label)
        before = last.get(key)
        if before is None and figure.numerator == 0 and not figure.denominator:
            continue  # nothing to say yet (e.g. a campaign's abandonment rate): no record
        if before is not None and (before.value, before.numerator, before.denominator) == (
            figure.value,
            figure.numerator,
            figure.denominator,
        ):
            continue
        revision = before.revision + 1 if before is not None else 1
        value = {
            "schema_version": SCHEMA_VERSION,
            "kpi": kpi,
            "label": label,
            "scope": scope,
            "id": scope_id,
            "window": window.unit,
            "period": window.period,
            "window_start": format_instant_ms(window.start_ms)
            if window.start_ms is not None
            else None,
            "window_end": format_instant_ms(window.end_ms) if window.end_ms is not None else None,
            "value": figure.value,
            "numerator": figure.numerator,
            "denominator": figure.denominator,
            "as_of": format_instant_ms(now_ms),
            "revision": revision,
            "correction": closed and before is not None,
        }
        state = LastState(revision, figure.value, figure.numerator, figure.denominator)
        out.append(Change(key, value, state))
    return out, label_sets
