"""The lateness horizon: which events of a partition are too late to apply. Pure.

A partition's *stream time* is the greatest ``occurred_at`` of the records of its events
topic so far, in offset order (every record with an event in it: duplicates, and records
that are later dead-lettered, count too). An event is applied only if it is at most the
horizon older than the stream time before it; otherwise it is *too late*: dead-lettered
with reason ``too_late`` and applied nowhere.

Lateness so measured depends on the log alone, never on a wall clock: a live run, a
rebuild of the same log and a replay years later decide alike, and an import of old
history in time order is never late. Lead facts (``<prefix>.lead-facts``) follow from
events that were applied; they neither are late nor move stream time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DAY_MS = 86_400_000
# Five weeks: a month's calendar window (this month, last 30 days) stays open to a late
# event for the whole month plus a few days of a source's retries or a delayed export.
DEFAULT_HORIZON = "35d"

_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": DAY_MS}
_DURATION = re.compile(r"(\d{1,9})([smhd])")


def parse_horizon(text: str) -> int:
    """``35d``, ``12h``, ``90m`` or ``3600s`` in ms; ValueError for anything else."""
    found = _DURATION.fullmatch(text.strip())
    if found is None or int(found.group(1)) == 0:
        raise ValueError(f"{text!r} is not a positive duration such as 35d, 12h, 90m or 600s")
    return int(found.group(1)) * _UNITS_MS[found.group(2)]


@dataclass
class Judged:
    """A partition's events judged by the rule, in offset order."""

    late: set[int] = field(default_factory=set)  # offsets of the events too late
    # The stream time once each event is passed, and before it, by its offset.
    stream_after: dict[int, int] = field(default_factory=dict)
    stream_before: dict[int, int] = field(default_factory=dict)
    stream_ms: int = 0  # once the last is passed
    topic: str = ""  # the events topic the offsets are of


def late_passed(judged: Judged, moves: Mapping[str, tuple[int | None, int]]) -> int:
    """How many late events a checkpoint move (topic -> (from, to)) passes."""
    if judged.topic not in moves:
        return 0
    start, end = moves[judged.topic]
    low = -1 if start is None else start
    return sum(1 for offset in judged.late if low < offset <= end)


def judge(stream_ms: int, events: Iterable[tuple[int, int]], horizon_ms: int) -> Judged:
    """Apply the rule to a partition's events, given as (offset, occurred_at ms) in offset
    order; ``stream_ms`` is the stream time before the first (0: no event yet)."""
    judged = Judged(stream_ms=stream_ms)
    for offset, at in events:
        judged.stream_before[offset] = judged.stream_ms
        if judged.stream_ms and at < judged.stream_ms - horizon_ms:
            judged.late.add(offset)
        else:
            judged.stream_ms = max(judged.stream_ms, at)
        judged.stream_after[offset] = judged.stream_ms
    return judged


def stream_upto(judged: Judged, last: int) -> int | None:
    """The stream time once every event up to offset ``last`` is passed; None if the judged
    events hold none at or before it."""
    upto = [offset for offset in judged.stream_after if offset <= last]
    return judged.stream_after[max(upto)] if upto else None
