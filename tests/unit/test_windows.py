"""Buckets and windows: which buckets an instant lands in, which buckets a window sums."""

from __future__ import annotations

import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.windows import (
    CALENDAR,
    DAY_MS,
    TIERS,
    WINDOWS,
    UnknownWindow,
    buckets,
    calendar_buckets,
    window_span,
)

pytestmark = pytest.mark.unit


def utc(*parts: int) -> int:
    """Epoch ms of a UTC date-time given as (year, month, day[, hour[, minute[, second]]])."""
    return calendar.timegm((*parts, 0, 0, 0)[:6]) * 1000


def test_one_bucket_per_tier() -> None:
    ids = buckets(utc(2026, 11, 22, 9, 15, 30), "Europe/Berlin")
    assert len(ids) == len(TIERS)
    assert ids[3:] == ("D2026-11-22", "W2026-W47", "M2026-11", "Q2026-Q4", "Y2026", "A")


def test_calendar_buckets_follow_the_local_day() -> None:
    late_evening_utc = utc(2026, 11, 22, 23, 30)
    assert calendar_buckets(late_evening_utc, "UTC")[0] == "D2026-11-22"
    assert calendar_buckets(late_evening_utc, "Europe/Berlin")[0] == "D2026-11-23"
    assert calendar_buckets(late_evening_utc, "America/Los_Angeles")[0] == "D2026-11-22"
    assert calendar_buckets(utc(2026, 11, 22, 18, 20), "Asia/Kathmandu")[0] == "D2026-11-23"
    assert calendar_buckets(utc(2026, 11, 22, 18, 10), "Asia/Kathmandu")[0] == "D2026-11-22"


def test_new_year_week_and_quarter() -> None:
    # 2027-01-01 is a Friday: ISO week 53 of 2026, but month, quarter and year of 2027.
    ids = calendar_buckets(utc(2027, 1, 1, 12), "UTC")
    assert ids == ("D2027-01-01", "W2026-W53", "M2027-01", "Q2027-Q1", "Y2027")


@pytest.mark.parametrize(
    ("day", "hours"),
    [((2026, 3, 29), 23), ((2026, 10, 25), 25), ((2026, 11, 22), 24)],
)
def test_today_spans_the_local_day_across_dst(day: tuple[int, int, int], hours: int) -> None:
    span = window_span("today", utc(*day, 11), "Europe/Berlin")
    assert span.end_ms - span.start_ms == hours * 3_600_000
    assert (
        calendar_buckets(span.start_ms, "Europe/Berlin")[0]
        == f"D{day[0]}-{day[1]:02d}-{day[2]:02d}"
    )
    assert calendar_buckets(span.end_ms - 1, "Europe/Berlin")[0] == span.bucket_ids[0]
    assert calendar_buckets(span.end_ms, "Europe/Berlin")[0] != span.bucket_ids[0]


def test_rolling_windows_are_whole_buckets_ending_with_the_current_one() -> None:
    as_of = utc(2026, 11, 22, 10, 7, 42)
    span = window_span("15m", as_of, "UTC")
    assert len(span.bucket_ids) == 15
    assert (span.start_ms, span.end_ms) == (utc(2026, 11, 22, 9, 53), utc(2026, 11, 22, 10, 8))
    span = window_span("24h", as_of, "UTC")
    assert (span.start_ms, span.end_ms) == (utc(2026, 11, 21, 11), utc(2026, 11, 22, 11))
    span = window_span("30d", as_of, "Asia/Tokyo")  # rolling windows ignore the zone
    assert (span.start_ms, span.end_ms) == (utc(2026, 10, 24), utc(2026, 11, 23))


def span_of(window: str, as_of: int, zone: str) -> tuple[int, int]:
    span = window_span(window, as_of, zone)
    return span.start_ms, span.end_ms


def test_month_quarter_year_ranges() -> None:
    as_of = utc(2026, 11, 22, 12)
    assert span_of("month", as_of, "UTC") == (utc(2026, 11, 1), utc(2026, 12, 1))
    assert span_of("quarter", as_of, "UTC") == (utc(2026, 10, 1), utc(2027, 1, 1))
    assert span_of("year", as_of, "UTC") == (utc(2026, 1, 1), utc(2027, 1, 1))
    assert span_of("week", as_of, "UTC") == (utc(2026, 11, 16), utc(2026, 11, 23))


def test_unknown_window_is_named() -> None:
    with pytest.raises(UnknownWindow, match="unknown window '2h'"):
        window_span("2h", 0, "UTC")


zones = st.sampled_from(
    [
        "UTC",
        "Europe/Berlin",
        "America/Los_Angeles",
        "Asia/Kolkata",
        "Australia/Sydney",
        "Asia/Kathmandu",
        "America/St_Johns",
    ]
)
instants = st.integers(min_value=utc(2020, 1, 1), max_value=utc(2030, 12, 31))


@given(instants, zones, st.sampled_from(WINDOWS))
def test_an_instant_is_in_every_window_as_of_itself(at: int, zone: str, window: str) -> None:
    """The bucket an event lands in is read by each window as of the event's own instant."""
    span = window_span(window, at, zone)
    assert span.start_ms <= at < span.end_ms
    assert set(buckets(at, zone)) & set(span.bucket_ids)


@given(instants, zones, st.sampled_from(list(CALENDAR)), st.integers(-3 * DAY_MS, 3 * DAY_MS))
def test_calendar_bucket_membership_matches_the_range(
    at: int, zone: str, window: str, shift: int
) -> None:
    """An instant is in a calendar window's range exactly when it lands in its bucket."""
    span = window_span(window, at, zone)
    other = at + shift
    inside = span.start_ms <= other < span.end_ms
    assert inside == (span.bucket_ids[0] in buckets(other, zone))


def test_live_buckets_skip_utc_buckets_that_outlived_their_ttl() -> None:
    from projections.windows import TIER_TTL_SECONDS, buckets, live_buckets

    now = 1_790_000_000_000
    recent = now - 60_000
    assert live_buckets(recent, "Europe/Berlin", now) == buckets(recent, "Europe/Berlin")
    # A minute bucket ending exactly TTL ago is gone; one ending a minute later is kept.
    minute_ttl_ms = TIER_TTL_SECONDS["m"] * 1000
    gone = (now - minute_ttl_ms) // 60_000 * 60_000 - 60_000
    kept = gone + 60_000
    assert not any(b.startswith("m") for b in live_buckets(gone, "UTC", now))
    assert any(b.startswith("m") for b in live_buckets(kept, "UTC", now))
    # Twenty days ago: no minute or hour bucket, the UTC day and every calendar bucket stay.
    old = now - 20 * 86_400_000
    tiers = [b[0] for b in live_buckets(old, "Asia/Singapore", now)]
    assert tiers == ["d", "D", "W", "M", "Q", "Y", "A"]
    # A year ago the UTC day is gone too (40 days); calendar tiers are not cut.
    year_ago = now - 365 * 86_400_000
    assert [b[0] for b in live_buckets(year_ago, "UTC", now)] == ["D", "W", "M", "Q", "Y", "A"]


def test_answerable_means_every_bucket_read_is_still_kept() -> None:
    from projections.windows import answerable, live_buckets, window_span

    now = 1_790_000_000_000
    for window in ("15m", "1h", "24h", "7d", "30d", "today", "all"):
        for hours_ago in (0, 1, 2, 3, 5, 30, 24 * 20, 24 * 45):
            as_of = now - hours_ago * 3_600_000
            span = window_span(window, as_of, "UTC")
            # The buckets a read needs, against those a write at any instant in them keeps.
            kept = all(
                b in live_buckets(start, "UTC", now)
                for b, start in zip(span.bucket_ids, _starts(span), strict=True)
            )
            assert answerable(window, as_of, now) == kept, (window, hours_ago)


def _starts(span: object) -> list[int]:
    from projections.windows import ROLLING, UTC_TIER_MS, WindowSpan

    assert isinstance(span, WindowSpan)
    if span.window not in ROLLING:
        return [span.start_ms] * len(span.bucket_ids)
    size = UTC_TIER_MS[ROLLING[span.window][0]]
    return [span.start_ms + i * size for i in range(len(span.bucket_ids))]
