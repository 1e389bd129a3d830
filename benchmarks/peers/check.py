"""A peer's five KPIs checked against the oracle (tests/oracle.py).

A peer (Quix Streams, Kafka Streams, ...) outputs rows, each one KPI of one scope for one
UTC clock hour or UTC day::

    {"kpi": "activities"|"calls_offered"|"calls_answered"|"calls_abandoned"|"asa",
     "scope": "rep"|"team"|"org"|"queue", "id": str ("" for org), "period": "hour"|"day",
     "start_ms": int (UTC start of the hour / day), "value": int (a count; for "asa" the
     sum of answer delays in ms), "n": int (only for "asa": the answered calls summed)}

``mismatches`` compares them with the oracle over the JSONL log of the events that were on
the topic: every row must equal the oracle's figure, and every bucket where the oracle has
a nonzero figure must be among the rows (rows of value 0 may be left out).

The oracle's figures for every bucket come from one grouped query over its credited facts
(one ``Oracle.kpis`` call per bucket would take minutes on a month of events); a sample of
buckets is then read through ``Oracle.kpis`` itself (``1h`` as of the hour's start + 59
minutes covers exactly that clock hour, ``24h`` as of the day's start + 23 hours exactly
that UTC day: docs/windows.md), and the checker refuses to judge if the two disagree.

    python -m benchmarks.peers.check events.jsonl rows.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tests.oracle import Oracle

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
PERIOD_MS = {"hour": HOUR_MS, "day": DAY_MS}
# The oracle's window that covers exactly one period, read as of its start + this offset.
ORACLE_WINDOW = {"hour": ("1h", 59 * 60_000), "day": ("24h", 23 * HOUR_MS)}
SCOPES = {
    "activities": (("rep", "team", "org"), ("hour", "day")),
    "calls_offered": (("queue",), ("hour",)),
    "calls_answered": (("queue",), ("hour",)),
    "calls_abandoned": (("queue",), ("hour",)),
    "asa": (("queue",), ("hour",)),
}
SAMPLES_PER_KPI = 6  # buckets per KPI and period read through Oracle.kpis as a cross-check


class Bucket(NamedTuple):
    """Where a row's figure belongs."""

    kpi: str
    scope: str
    id: str
    period: str
    start_ms: int


class Figure(NamedTuple):
    """A bucket's figure: ``value`` and, for ``asa`` only, ``n`` (else 0)."""

    value: int
    n: int = 0

    def is_zero(self) -> bool:
        return self.value == 0 and self.n == 0


# Activities: outbound calls, sent emails and held meetings the oracle credits to the org,
# the team and the rep. Inbound calls: the oracle's "inbound" facts of the queue scope, by
# the call's start; their label is "answered", "abandoned" or empty.
ACTIVITY_FACTS = """
SELECT scope, id, t_ms // {size} * {size} AS start, count(*) FROM facts
WHERE scope IN ('rep', 'team', 'org')
  AND (what IN ('outbound', 'email') OR (what = 'meeting' AND label = 'meeting.held'))
GROUP BY ALL
"""
INBOUND_FACTS = f"""
SELECT id, t_ms // {HOUR_MS} * {HOUR_MS} AS start, count(*),
       count(*) FILTER (WHERE list_contains(string_split(label, ','), 'answered')),
       count(*) FILTER (WHERE list_contains(string_split(label, ','), 'abandoned')),
       COALESCE(sum(v) FILTER (WHERE list_contains(string_split(label, ','), 'answered')), 0)
FROM facts WHERE what = 'inbound' AND scope = 'queue'
GROUP BY ALL
"""


def expected_figures(oracle: Oracle) -> dict[Bucket, Figure]:
    """The oracle's nonzero figure of every bucket of the five KPIs."""
    out: dict[Bucket, Figure] = {}
    for period, size in PERIOD_MS.items():
        for scope, scope_id, start, count in oracle.db.execute(
            ACTIVITY_FACTS.format(size=size)
        ).fetchall():
            out[Bucket("activities", scope, scope_id, period, int(start))] = Figure(int(count))
    for queue, start, offered, answered, abandoned, waited in oracle.db.execute(
        INBOUND_FACTS
    ).fetchall():
        figures = {
            "calls_offered": Figure(int(offered)),
            "calls_answered": Figure(int(answered)),
            "calls_abandoned": Figure(int(abandoned)),
            "asa": Figure(int(waited), int(answered)),
        }
        for kpi, figure in figures.items():
            if not figure.is_zero():
                out[Bucket(kpi, "queue", queue, "hour", int(start))] = figure
    return out


def figure_from_kpis(kpis: Mapping[str, Any], kpi: str) -> Figure:
    """A bucket's figure as ``Oracle.kpis`` gives it."""
    if kpi == "activities":
        return Figure(int(kpis["activities"]["total"]["numerator"]))
    if kpi == "asa":
        asa = kpis["average_speed_of_answer_seconds"]
        return Figure(int(asa["numerator"]), int(asa["denominator"] or 0))
    return Figure(int(kpis[kpi]["numerator"]))


def cross_check(oracle: Oracle, expected: Mapping[Bucket, Figure]) -> None:
    """Read a spread of buckets through ``Oracle.kpis``; raise if the grouped query differs.

    The sample takes, per KPI and period, buckets spread over the sorted nonzero ones and
    the empty hour or day just before the first of them."""
    by_kind: dict[tuple[str, str], list[Bucket]] = {}
    for bucket in sorted(expected):
        by_kind.setdefault((bucket.kpi, bucket.period), []).append(bucket)
    for buckets in by_kind.values():
        step = max(1, len(buckets) // SAMPLES_PER_KPI)
        sample = buckets[::step][:SAMPLES_PER_KPI]
        first = buckets[0]
        sample.append(first._replace(start_ms=first.start_ms - PERIOD_MS[first.period]))
        for bucket in sample:
            window, offset = ORACLE_WINDOW[bucket.period]
            kpis = oracle.kpis(bucket.scope, bucket.id, window, bucket.start_ms + offset)
            told = figure_from_kpis(kpis, bucket.kpi)
            grouped = expected.get(bucket, Figure(0))
            if told != grouped:
                raise RuntimeError(
                    f"the checker's grouped query gives {grouped} for {bucket}, Oracle.kpis "
                    f"{told}: the checker no longer follows the oracle"
                )


def row_problem(row: Mapping[str, Any]) -> str | None:
    """Why a row is not a well-formed row of the five KPIs, or None."""
    kpi, scope, period = row.get("kpi"), row.get("scope"), row.get("period")
    if kpi not in SCOPES:
        return f"unknown kpi {kpi!r}"
    scopes, periods = SCOPES[kpi]
    if scope not in scopes or period not in periods:
        return f"{kpi} has no {scope!r} scope by {period!r}"
    if not isinstance(row.get("id"), str):
        return "id is not a string"
    if (scope == "org") != (row["id"] == ""):
        return "the org's id, and only the org's, is empty"
    fields = ("start_ms", "value", "n") if kpi == "asa" else ("start_ms", "value")
    for field in fields:
        if not isinstance(row.get(field), int) or isinstance(row.get(field), bool):
            return f"{field} is not an integer"
    if row["start_ms"] % PERIOD_MS[period]:
        return f"start_ms is not the start of a UTC {period}"
    return None


def bucket_of(row: Mapping[str, Any]) -> Bucket:
    return Bucket(row["kpi"], row["scope"], row["id"], row["period"], row["start_ms"])


def figure_of(row: Mapping[str, Any]) -> Figure:
    return Figure(row["value"], row["n"] if row["kpi"] == "asa" else 0)


def describe(bucket: Bucket) -> str:
    return f"{bucket.kpi} {bucket.scope} {bucket.id!r} {bucket.period} {bucket.start_ms}"


def compare(expected: Mapping[Bucket, Figure], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every difference between the rows and the oracle's figures, one line each."""
    problems: list[str] = []
    seen: set[Bucket] = set()
    for row in rows:
        problem = row_problem(row)
        if problem is not None:
            problems.append(f"malformed row {dict(row)}: {problem}")
            continue
        bucket = bucket_of(row)
        if bucket in seen:
            problems.append(f"{describe(bucket)}: more than one row")
            continue
        seen.add(bucket)
        want = expected.get(bucket, Figure(0))
        got = figure_of(row)
        if got != want:
            problems.append(f"{describe(bucket)}: peer {tuple(got)}, oracle {tuple(want)}")
    problems += [
        f"{describe(bucket)}: missing, oracle {tuple(figure)}"
        for bucket, figure in sorted(expected.items())
        if bucket not in seen
    ]
    return problems


def mismatches(
    log: Path,
    rows: Iterable[Mapping[str, Any]],
    *,
    limit: int = 20,
    partitions: int | None = None,
) -> list[str]:
    """How ``rows`` differ from the oracle over ``log`` (at most ``limit`` lines, the last
    one saying how many more); empty when they are equal. ``partitions``: the topic's
    partition count, needed only when the log has events beyond the lateness horizon."""
    oracle = Oracle(log, partitions=partitions)
    expected = expected_figures(oracle)
    cross_check(oracle, expected)
    problems = compare(expected, rows)
    if len(problems) > limit:
        return [*problems[: limit - 1], f"... and {len(problems) - limit + 1} more"]
    return problems


def main() -> None:
    """``python -m benchmarks.peers.check LOG ROWS``: print the mismatches; exit 1 if any."""
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    log, rows_path = Path(sys.argv[1]), Path(sys.argv[2])
    rows = json.loads(rows_path.read_text())
    problems = mismatches(log, rows)
    for line in problems:
        print(line)
    print(f"{len(rows)} rows: {'MISMATCH' if problems else 'equal to the oracle'}")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
