"""Progress lines: rate and time-left arithmetic, formatting, and when a line is due."""

from __future__ import annotations

import io
import logging

import pytest

from streams.progress import (
    Meter,
    NoProgress,
    eta_seconds,
    format_duration,
    format_rate,
    offsets_progress,
    progress_line,
    rate,
    reporting,
    share,
    summary_line,
)
from streams.progress_display import LogProgress, TerminalProgress

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0.0s"),
        (-3, "0.0s"),
        (3.24, "3.2s"),
        (9.94, "9.9s"),
        (45, "45s"),
        (59.4, "59s"),
        (59.6, "1m 00s"),
        (65, "1m 05s"),
        (3599, "59m 59s"),
        (3600, "1h 00m"),
        (2 * 3600 + 3 * 60 + 29, "2h 03m"),
        (3 * 86_400 + 4 * 3600, "3d 04h"),
        (10**12, "11,574,074d 01h"),
    ],
)
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_rates_have_thousands_separators() -> None:
    assert format_rate(2_468.4) == "2,468"
    assert format_rate(1e9) == "1,000,000,000"
    assert format_rate(42.46) == "42.5"
    assert format_rate(0) == "0.0"


def test_the_arithmetic_at_its_edges() -> None:
    assert rate(10, 0.0) is None  # no time has passed: no rate yet
    assert rate(10, 4.0) == 2.5
    assert share(5, 0) is None  # an empty total measures nothing
    assert share(5, None) is None and share(None, 10) is None
    assert share(15, 10) == 1.0  # beyond the total: done, not 150 %
    assert share(-1, 10) == 0.0
    assert eta_seconds(10.0, 0.5) == 10.0
    assert eta_seconds(10.0, 0.0) is None  # nothing done yet: no speed to extrapolate
    assert eta_seconds(0.0, 0.5) is None
    assert eta_seconds(10.0, 1.0) == 0.0


def test_a_progress_line_says_what_it_can() -> None:
    # No time has passed: a share, but no rate nor time left yet.
    assert progress_line("backfill a.csv", "rows", 0, 0.0, 0, 1000) == "backfill a.csv: 0 rows, 0%"
    assert (
        progress_line("backfill a.csv", "rows", 12_345, 5.0, 450, 1000)
        == "backfill a.csv: 12,345 rows, 2,469 rows/s, 45%, ETA 6.1s"
    )
    # The total is unknown (a pipe) or empty: the rate, no share nor time left.
    assert progress_line("b", "rows", 500, 10.0) == "b: 500 rows, 50.0 rows/s"
    assert progress_line("b", "rows", 500, 10.0, 0, 0) == "b: 500 rows, 50.0 rows/s"
    # Beyond the total (the topic grew): done, not more than done.
    assert progress_line("r", "records", 120, 60.0, 120, 100) == (
        "r: 120 records, 2.0 records/s, 100%, ETA 0.0s"
    )
    assert progress_line("r", "records", 10**12, 65.0 * 1000, 10**12 // 4, 10**12) == (
        "r: 1,000,000,000,000 records, 15,384,615 records/s, 25%, ETA 2d 06h"
    )
    assert progress_line("r", "records", 3, 65.0, 1, 2) == (
        "r: 3 records, 0.0 records/s, 50%, ETA 1m 05s"
    )


def test_the_summary() -> None:
    assert summary_line("backfill a.csv", "rows", 27_000, 11.2) == (
        "backfill a.csv: 27,000 rows in 11s (2,411 rows/s)"
    )
    assert summary_line("x", "rows", 0, 0.0) == "x: 0 rows in 0.0s"
    assert summary_line("x", "rows", 5, 0.0) == "x: 5 rows in 0.0s"


def test_offsets_measure_the_work_of_a_replay() -> None:
    begin = {"p0": 0, "p1": 100, "p2": 7}
    ends = {"p0": 50, "p1": 300, "p2": 7}
    assert offsets_progress(begin, ends, {}) == (0, 50 + 200)
    assert offsets_progress(begin, ends, {"p0": 50, "p1": 150}) == (50 + 50, 250)
    # A partition read past the end offsets asked for earlier: the total grows with it.
    assert offsets_progress(begin, ends, {"p0": 80, "p1": 300, "p2": 9}) == (80 + 200 + 2, 282)
    # A checkpoint before the beginning (records deleted by retention) counts as nothing.
    assert offsets_progress({"p": 1_000}, {"p": 2_000}, {"p": 10}) == (0, 1_000)
    assert offsets_progress({}, {}, {}) == (0, 0)


def test_a_meter_gives_at_most_one_line_per_interval() -> None:
    clock = FakeClock()
    meter = Meter("job", "rows", clock, every=5.0)
    assert meter.update(1, 1, 100) is None  # not at the start: a short job says nothing
    clock.now += 4.9
    assert meter.update(40, 40, 100) is None
    clock.now += 0.1
    assert meter.update(50, 50, 100) == "job: 50 rows, 10.0 rows/s, 50%, ETA 5.0s"
    clock.now += 1
    assert meter.update(60, 60, 100) is None
    clock.now += 5
    assert meter.update(100, 100, 100) == "job: 100 rows, 9.1 rows/s, 100%, ETA 0.0s"
    assert meter.summary() == "job: 100 rows in 11s (9.1 rows/s)"


def test_a_terminal_line_is_redrawn_in_place_and_ends_with_the_summary() -> None:
    clock, stream = FakeClock(), io.StringIO()
    shown = TerminalProgress(Meter("job", "rows", clock, every=0.2), stream)
    clock.now += 1
    shown.update(1_000, 10, 100)
    clock.now += 1
    shown.update(2_000)  # a shorter line blanks the rest of the longer one
    clock.now += 0.1
    shown.update(2_100)  # too soon: not drawn
    shown.finish()
    first = "job: 1,000 rows, 1,000 rows/s, 10%, ETA 9.0s"
    second = "job: 2,000 rows, 1,000 rows/s"
    summary = "job: 2,100 rows in 2.1s (1,000 rows/s)"
    assert stream.getvalue() == (
        f"\r{first}\r{second}{' ' * (len(first) - len(second))}\r{summary}\n"
    )


def test_a_failed_job_ends_the_line_without_a_summary() -> None:
    clock, stream = FakeClock(), io.StringIO()
    shown = TerminalProgress(Meter("job", "rows", clock, every=0.2), stream)
    with pytest.raises(RuntimeError), reporting(shown):
        clock.now += 1
        shown.update(5)
        raise RuntimeError("boom")
    assert stream.getvalue() == "\rjob: 5 rows, 5.0 rows/s\n"
    quiet = io.StringIO()
    with pytest.raises(RuntimeError), reporting(TerminalProgress(Meter("j", "r", clock, 1), quiet)):
        raise RuntimeError("before any line")
    assert quiet.getvalue() == ""  # nothing drawn, nothing to end


def test_log_lines_every_interval_and_a_final_one(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    logger = logging.getLogger("test.progress")
    with (
        caplog.at_level(logging.INFO, logger="test.progress"),
        reporting(LogProgress(Meter("job", "rows", clock, every=5.0), logger)) as shown,
    ):
        for n in range(1, 13):
            clock.now += 1
            shown.update(n, n, 12)
    assert [r.getMessage() for r in caplog.records] == [
        "job: 5 rows, 1.0 rows/s, 42%, ETA 7.0s",
        "job: 10 rows, 1.0 rows/s, 83%, ETA 2.0s",
        "job: 12 rows in 12s (1.0 rows/s)",
    ]


def test_no_progress_takes_anything() -> None:
    with reporting(NoProgress()) as shown:
        shown.update(1, 2, 3)


def test_a_terminal_line_never_wraps() -> None:
    clock, stream = FakeClock(), io.StringIO()  # no terminal size: 80 columns
    shown = TerminalProgress(Meter("x" * 100, "rows", clock, every=0.2), stream)
    shown.finish()
    assert stream.getvalue() == "\r" + "x" * 79 + "\n"


def test_a_log_record_is_printed_above_the_line() -> None:
    clock, stream = FakeClock(), io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger()
    logger.addHandler(handler)
    try:
        shown = TerminalProgress(Meter("job", "rows", clock, every=0.2), stream)
        logging.getLogger("test.above").warning("before")  # no line yet: as usual
        clock.now += 1
        shown.update(7)
        logging.getLogger("test.above").warning("during")
        shown.finish()
        assert handler.stream is stream  # given back
        logging.getLogger("test.above").warning("after")
    finally:
        logger.removeHandler(handler)
    line = "job: 7 rows, 7.0 rows/s"
    assert stream.getvalue() == (
        f"before\n\r{line}\r{' ' * len(line)}\rduring\n{line}\rjob: 7 rows in 1.0s (7.0 rows/s)\n"
        "after\n"
    )
