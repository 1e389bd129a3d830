"""Progress of a long command (a backfill, a rebuild): records done, rate, time left.

Pure: the clock is passed in, and what happens to a line (redrawn on a terminal,
logged) is ``streams/progress_display.py``'s. The time left comes from the share
done of a known total, in whatever unit measures the work best (bytes of a file,
offsets of a topic, rows of a known count), at the average speed so far.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol, TypeVar

Clock = Callable[[], float]
K = TypeVar("K")


class Progress(Protocol):
    """Where a long job reports how far it is."""

    def update(self, done: int, position: int | None = None, total: int | None = None) -> None:
        """``done`` records so far; ``position`` of ``total`` (any unit) for the time left."""

    def finish(self, failed: bool = False) -> None:
        """The job is over: the summary; when it ``failed``, only the end of the line (the
        caller reports the error)."""


ProgressFactory = Callable[[str, str], Progress]  # (label, unit) -> Progress


class NoProgress:
    """Reports nowhere (library callers, tests)."""

    def update(self, done: int, position: int | None = None, total: int | None = None) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass


def no_progress(label: str, unit: str) -> Progress:
    return NoProgress()


@contextmanager
def reporting(progress: Progress) -> Iterator[Progress]:
    """Finish ``progress`` when the block ends, as failed when it raises."""
    try:
        yield progress
    except BaseException:
        progress.finish(failed=True)
        raise
    progress.finish()


def share(position: int | None, total: int | None) -> float | None:
    """The share done, from 0 to 1; None when there is no total to measure against."""
    if position is None or total is None or total <= 0:
        return None
    return min(max(position / total, 0.0), 1.0)


def rate(done: int, elapsed: float) -> float | None:
    """Records per second; None before any time has passed."""
    return done / elapsed if elapsed > 0 else None


def eta_seconds(elapsed: float, done_share: float | None) -> float | None:
    """Seconds left at the average speed so far; None while that cannot be told."""
    if done_share is None or elapsed <= 0 or done_share <= 0:
        return None
    return elapsed * (1 - done_share) / done_share


def format_duration(seconds: float) -> str:
    """``3.2s``, ``45s``, ``1m 05s``, ``2h 03m``, ``3d 04h``."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86_400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86_400:,}d {whole % 86_400 // 3600:02d}h"


def format_rate(per_second: float) -> str:
    """``12,345`` (whole numbers from 100 up), ``42.5`` below."""
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:,.1f}"


def progress_line(
    label: str,
    unit: str,
    done: int,
    elapsed: float,
    position: int | None = None,
    total: int | None = None,
) -> str:
    """``backfill deals.csv: 12,345 rows, 2,468 rows/s, 45%, ETA 1m 05s``; the parts that
    cannot be told yet (no time passed, no total) are left out."""
    parts = [f"{label}: {done:,} {unit}"]
    speed = rate(done, elapsed)
    if speed is not None:
        parts.append(f"{format_rate(speed)} {unit}/s")
    done_share = share(position, total)
    if done_share is not None:
        parts.append(f"{done_share:.0%}")
        left = eta_seconds(elapsed, done_share)
        if left is not None:
            parts.append(f"ETA {format_duration(left)}")
    return ", ".join(parts)


def summary_line(label: str, unit: str, done: int, elapsed: float) -> str:
    """``backfill deals.csv: 27,000 rows in 11.2s (2,410 rows/s)``."""
    speed = rate(done, elapsed)
    tail = f" ({format_rate(speed)} {unit}/s)" if speed is not None and done else ""
    return f"{label}: {done:,} {unit} in {format_duration(elapsed)}{tail}"


def offsets_progress(
    begin: Mapping[K, int], ends: Mapping[K, int], positions: Mapping[K, int]
) -> tuple[int, int]:
    """(done, total) of reading partitions from ``begin`` to ``ends``, at ``positions``: the
    total never falls below what is done (a topic can grow while it is read)."""
    done = total = 0
    for key, start in begin.items():
        at = max(positions.get(key, start), start)
        done += at - start
        total += max(ends.get(key, start), at) - start
    return done, total


class Meter:
    """Keeps a job's counts and says when a line is due: at most one per ``every`` seconds,
    the first ``every`` seconds after the start."""

    def __init__(self, label: str, unit: str, clock: Clock, every: float) -> None:
        self.label, self.unit, self.clock, self.every = label, unit, clock, every
        self.started = self.last = clock()
        self.done = 0
        self.position: int | None = None
        self.total: int | None = None

    def update(
        self, done: int, position: int | None = None, total: int | None = None
    ) -> str | None:
        """Record the counts; the line to show, when one is due."""
        self.done, self.position, self.total = done, position, total
        now = self.clock()
        if now - self.last < self.every:
            return None
        self.last = now
        return progress_line(self.label, self.unit, done, now - self.started, position, total)

    def summary(self) -> str:
        return summary_line(self.label, self.unit, self.done, self.clock() - self.started)
