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


def _kept_until_by_hand(bucket: str) -> int | None:
    """``windows.kept_until`` worked out on its own: the period's start (a calendar period's
    earliest, a day before its UTC start) plus the tier's TTL."""
    from datetime import date

    days = {"m": None, "h": None, "d": 40, "D": 40, "W": 120, "M": 400, "Q": 800}
    tier, text = bucket[0], bucket[1:]
    if tier not in days:
        return None
    if tier == "m":
        return int(text) * 60_000 + 3 * 3_600_000
    if tier == "h":
        return int(text) * 3_600_000 + 3 * 86_400_000
    if tier == "d":
        return int(text) * 86_400_000 + 40 * 86_400_000
    if tier == "D":
        first = date.fromisoformat(text)
    elif tier == "W":
        year, week = text.split("-W")
        first = date.fromisocalendar(int(year), int(week), 1)
    elif tier == "M":
        first = date.fromisoformat(text + "-01")
    else:
        year, quarter = text.split("-Q")
        first = date(int(year), 3 * int(quarter) - 2, 1)
    utc_start = utc(first.year, first.month, first.day)
    return utc_start - 86_400_000 + days[tier] * 86_400_000


def test_how_long_each_tier_is_kept() -> None:
    from projections.windows import kept_until

    assert kept_until("m29400000") == 29_400_000 * 60_000 + 3 * 3_600_000
    assert kept_until("h20000") == 20_000 * 3_600_000 + 3 * 86_400_000
    assert kept_until("d20500") == (20_500 + 40) * 86_400_000
    # Calendar buckets: from a day before their UTC start, the earliest any zone begins them.
    assert kept_until("D2026-11-23") == utc(2026, 11, 22) + 40 * 86_400_000
    assert kept_until("W2026-W48") == utc(2026, 11, 22) + 120 * 86_400_000  # Monday the 23rd
    assert kept_until("M2026-11") == utc(2026, 10, 31) + 400 * 86_400_000
    assert kept_until("Q2026-Q4") == utc(2026, 9, 30) + 800 * 86_400_000
    for for_ever in ("Y2026", "A", "G", "!u"):
        assert kept_until(for_ever) is None


def test_a_bucket_is_given_its_tier_ttl_or_more_if_its_period_is_ahead() -> None:
    from projections.windows import TIER_TTL_SECONDS, ttl_seconds

    now = utc(2026, 11, 23, 9)
    assert ttl_seconds(f"m{now // 60_000}", now) == TIER_TTL_SECONDS["m"]
    assert ttl_seconds("D2026-11-23", now) == TIER_TTL_SECONDS["D"]
    assert ttl_seconds("D2025-01-01", now) == TIER_TTL_SECONDS["D"]  # from now, as before
    # An event up to a day ahead: its minute bucket lives until 3 hours after that minute.
    ahead = now + 20 * 3_600_000
    assert ttl_seconds(f"m{ahead // 60_000}", now) == 23 * 3_600
    assert ttl_seconds("D2026-11-25", now) == TIER_TTL_SECONDS["D"] + 15 * 3_600
    assert ttl_seconds("A", now) == ttl_seconds("Y2026", now) == 0


def test_the_keys_of_buckets_totals_are_derived_from_live_longer_in_the_store() -> None:
    from projections.windows import TIER_TTL_SECONDS, stored_ttl_seconds, ttl_seconds

    now = utc(2026, 11, 23, 9)
    minute, hour = now // 60_000, now // 3_600_000
    assert stored_ttl_seconds(f"m{minute}", now) == TIER_TTL_SECONDS["m"] + 3_600
    assert stored_ttl_seconds(f"h{hour}", now) == TIER_TTL_SECONDS["h"] + 86_400
    assert stored_ttl_seconds("D2026-11-23", now) == TIER_TTL_SECONDS["D"] + 86_400
    assert stored_ttl_seconds("D2026-11-25", now) == ttl_seconds("D2026-11-25", now) + 86_400
    for other in ("d20415", "W2026-W48", "M2026-11", "Y2026", "A"):
        assert stored_ttl_seconds(other, now) == ttl_seconds(other, now)


def test_derived_buckets_are_a_minutes_hour_and_day_and_a_local_days_longer_ones() -> None:
    from projections.windows import derived_buckets

    assert derived_buckets("D2026-11-22") == ("W2026-W47", "M2026-11", "Q2026-Q4", "Y2026", "A")
    # 1 January 2027 is a Friday of ISO week 53 of 2026; 29 December 2025 a Monday of week 1.
    assert derived_buckets("D2027-01-01") == ("W2026-W53", "M2027-01", "Q2027-Q1", "Y2027", "A")
    assert derived_buckets("D2025-12-29")[0] == "W2026-W01"
    # 2026-11-23T08:59Z: minute 29,923,739 since 1970, in hour 498,728 and UTC day 20,780.
    assert derived_buckets("m29923739") == ("h498728", "d20780")
    assert derived_buckets("h498728") == ("d20780",)
    assert derived_buckets("h498743") == ("d20780",)  # 23:00Z, the day's last hour
    assert derived_buckets("m-1") == ("h-1", "d-1")  # 1969-12-31T23:59Z
    for tier in ("d20415", "W2026-W48", "M2026-11", "Q2026-Q4", "Y2026", "A", "G"):
        assert derived_buckets(tier) == ()
    for at, zone in ((utc(2026, 11, 22, 23, 30), "Europe/Berlin"), (utc(2027, 1, 1), "UTC")):
        every = buckets(at, zone)
        assert derived_buckets(every[0]) == every[1:3]
        assert derived_buckets(every[1]) == every[2:3]
        assert derived_buckets(every[3]) == every[4:]


def test_live_buckets_leave_out_buckets_no_read_can_ask_for() -> None:
    from projections.windows import buckets, live_buckets, written_buckets

    now = 1_790_000_000_000
    recent = now - 60_000
    # The minute and the local day: the rollups derive the hour, the UTC day and the week
    # to all time from them.
    assert live_buckets(recent, "Europe/Berlin", now) == written_buckets(recent, "Europe/Berlin")
    every = buckets(recent, "Europe/Berlin")
    assert written_buckets(recent, "Europe/Berlin") == (every[0], every[3])
    # A minute bucket that began exactly its TTL ago is gone; one a minute later is kept.
    gone = (now - 3 * 3_600_000) // 60_000 * 60_000
    kept = gone + 60_000
    assert [b[0] for b in live_buckets(gone, "UTC", now)] == ["h", "D"]
    assert [b[0] for b in live_buckets(kept, "UTC", now)] == ["m", "D"]
    # Two days ago: the hour, from which the rollups derive the UTC day, and the local day.
    tiers = [b[0] for b in live_buckets(now - 2 * 86_400_000, "Asia/Singapore", now)]
    assert tiers == ["h", "D"]
    # Twenty days ago: no minute or hour bucket; the UTC and local days stay.
    old = now - 20 * 86_400_000
    tiers = [b[0] for b in live_buckets(old, "Asia/Singapore", now)]
    assert tiers == ["d", "D"]
    # Sixty days ago the days are gone: the week and on are written, as no day derives them.
    tiers = [b[0] for b in live_buckets(now - 60 * 86_400_000, "Asia/Singapore", now)]
    assert tiers == ["W", "M", "Q", "Y", "A"]
    # A year ago the days and the week are gone too; months (400 days) and on stay.
    year_ago = now - 365 * 86_400_000
    assert [b[0] for b in live_buckets(year_ago, "UTC", now)] == ["M", "Q", "Y", "A"]
    # Years ago (a backfill of an old export): the year and all time only.
    assert [b[0] for b in live_buckets(utc(2016, 5, 1), "UTC", now)] == ["Y", "A"]


def test_answerable_means_every_bucket_read_is_still_kept() -> None:
    from projections.windows import answerable, kept_until, live_buckets, window_span

    now = 1_790_000_000_000
    for window in WINDOWS:
        for hours_ago in (0, 1, 2, 3, 5, 30, 24 * 20, 24 * 38, 24 * 45, 24 * 130, 24 * 900):
            as_of = now - hours_ago * 3_600_000
            if window in ("15m", "1h", "24h", "7d", "30d"):
                span = window_span(window, as_of, "UTC")
                # The buckets a read needs, against those a write at any instant in them
                # reaches: written, or derived by the rollups from one written.
                kept = all(
                    b in _reached(live_buckets(start, "UTC", now))
                    for b, start in zip(span.bucket_ids, _starts(span), strict=True)
                )
                assert answerable(window, as_of, now) == kept, (window, hours_ago)
            elif answerable(window, as_of, now):
                # A calendar window: its bucket is kept in every zone, from a day ahead of
                # UTC to half a day behind.
                for zone in ("Pacific/Kiritimati", "Etc/GMT+12", "America/St_Johns", "UTC"):
                    (bucket,) = window_span(window, as_of, zone).bucket_ids
                    until = kept_until(bucket)
                    assert until is None or until > now, (window, hours_ago, zone)
    # What the calendar rule refuses, and what it answers.
    day = 86_400_000
    assert answerable("today", now - 37 * day, now)
    assert not answerable("today", now - 41 * day, now)  # day buckets are kept 40 days
    assert answerable("week", now - 100 * day, now)
    assert not answerable("week", now - 130 * day, now)
    assert answerable("month", now - 300 * day, now)
    assert not answerable("month", now - 450 * day, now)
    assert not answerable("quarter", now - 900 * day, now)
    assert answerable("year", utc(2016, 5, 1), now) and answerable("all", 0, now)


def test_a_bucket_is_gone_at_kept_until_to_the_millisecond() -> None:
    from projections.windows import answerable, kept_until, live_buckets

    minute = 29_800_000
    until = kept_until(f"m{minute}")
    assert until == minute * 60_000 + 3 * 3_600_000
    start = minute * 60_000
    assert f"m{minute}" not in live_buckets(start, "UTC", until)
    assert f"m{minute}" in live_buckets(start, "UTC", until - 1)
    as_of = start + 59 * 60_000  # the 1h window whose oldest bucket is that minute
    assert not answerable("1h", as_of, until)
    assert answerable("1h", as_of, until - 1)


def test_a_refused_window_says_how_long_its_buckets_are_kept() -> None:
    from projections.windows import too_old

    assert too_old("1h") == (
        "the 1h window as of that instant is no longer kept "
        "(minute buckets are kept 3 hours): use a later as_of"
    )
    assert "(day buckets are kept 40 days)" in too_old("today")
    assert "(week buckets are kept 120 days)" in too_old("week")
    assert "(quarter buckets are kept 800 days)" in too_old("quarter")


def _reached(written: tuple[str, ...]) -> set[str]:
    """The buckets written, and those the rollups derive from them."""
    from projections.windows import derived_buckets

    return {*written, *(d for b in written for d in derived_buckets(b))}


def _starts(span: object) -> list[int]:
    from projections.windows import ROLLING, UTC_TIER_MS, WindowSpan

    assert isinstance(span, WindowSpan)
    if span.window not in ROLLING:
        return [span.start_ms] * len(span.bucket_ids)
    size = UTC_TIER_MS[ROLLING[span.window][0]]
    return [span.start_ms + i * size for i in range(len(span.bucket_ids))]


# Zones whose local date changes within a UTC hour, or at a time change: offsets of half
# and three quarters of an hour, a half-hour DST, a time change at local midnight, and an
# offset with seconds (Monrovia until 1972).
AWKWARD_ZONES = (
    "Asia/Kathmandu",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "America/St_Johns",
    "Africa/Monrovia",
    "Pacific/Apia",
    "Europe/Berlin",
    "UTC",
)


def _ids_one_by_one(at_ms: int, zone: str) -> tuple[str, ...]:
    """Every bucket id of an instant, worked out on its own (not through windows' caches)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    local = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(zone))
    iso_year, iso_week, _ = local.isocalendar()
    return (
        f"m{at_ms // 60_000}",
        f"h{at_ms // 3_600_000}",
        f"d{at_ms // 86_400_000}",
        f"D{local.year:04d}-{local.month:02d}-{local.day:02d}",
        f"W{iso_year}-W{iso_week:02d}",
        f"M{local.year:04d}-{local.month:02d}",
        f"Q{local.year}-Q{(local.month - 1) // 3 + 1}",
        f"Y{local.year}",
        "A",
    )


@given(
    zone=st.sampled_from(AWKWARD_ZONES),
    at_ms=st.one_of(
        st.integers(min_value=0, max_value=utc(2040, 1, 1)),
        # near local midnights and time changes of the zones above
        st.sampled_from(
            [
                utc(2026, 11, 22, 18, 15),  # Kathmandu's midnight (+05:45)
                utc(2018, 11, 4, 3),  # Sao Paulo's clocks went from 00:00 to 01:00
                utc(2019, 2, 17, 2),  # ... and back from 00:00 to 23:00
                utc(2026, 4, 4, 15),  # Lord Howe: 02:00 back to 01:30
                utc(2011, 12, 30, 10),  # Apia skipped 30 December 2011
                utc(1972, 1, 7, 0, 44),  # Monrovia: -00:44:30 to UTC
                utc(1971, 3, 1, 0, 44),  # Monrovia's midnight, mid-minute
            ]
        ).flatmap(lambda t: st.integers(min_value=t - 3 * 3_600_000, max_value=t + 3 * 3_600_000)),
    ),
)
def test_bucket_ids_equal_one_instant_at_a_time(zone: str, at_ms: int) -> None:
    """``buckets`` shares a UTC hour's ids between its instants; that must never change an id,
    where the local date changes within an hour or the clocks change."""
    assert buckets(at_ms, zone) == _ids_one_by_one(at_ms, zone)


@given(
    zone=st.sampled_from(AWKWARD_ZONES),
    age_ms=st.integers(min_value=-86_400_000, max_value=1_000 * 86_400_000),
    later_ms=st.lists(st.integers(min_value=0, max_value=900 * 86_400_000), max_size=3),
)
def test_live_buckets_are_those_kept_by_the_tiers_rule(
    zone: str, age_ms: int, later_ms: list[int]
) -> None:
    """At any instant, the instants a bucket of the event stops being kept and the one
    before each (live_buckets keeps what an hour writes as it ages, per hour and zone)."""
    from projections.windows import live_buckets

    now = 1_790_000_000_000
    at = now - age_ms
    untils = {u for b in _ids_one_by_one(at, zone) if (u := _kept_until_by_hand(b)) is not None}
    instants = [now, *(now + later for later in later_ms), *untils, *(u - 1 for u in untils)]
    for then in instants:
        assert live_buckets(at, zone, then) == _kept_and_not_derived(at, zone, then), then


def _kept_and_not_derived(at: int, zone: str, now: int) -> tuple[str, ...]:
    kept = [
        b
        for b in _ids_one_by_one(at, zone)
        if (until := _kept_until_by_hand(b)) is None or until > now
    ]
    # The rollups derive the hour and UTC day from a minute kept, the UTC day from an hour
    # kept, the week, month, quarter, year and all time from a local day kept: the
    # partition writes none of those.
    tiers = {b[0] for b in kept}
    left_out = set()
    if "m" in tiers:
        left_out |= {"h", "d"}
    if "h" in tiers:
        left_out.add("d")
    if "D" in tiers:
        left_out |= set("WMQYA")
    return tuple(b for b in kept if b[0] not in left_out)


def test_an_answerable_calendar_window_is_kept_in_every_zone() -> None:
    """``answerable`` does not know the scope's zone: it must hold for the zones furthest
    behind and ahead of UTC alike. As of every hour around each tier's TTL, where kept turns
    to gone."""
    from projections.windows import CALENDAR, TIER_TTL_SECONDS, answerable

    now = 1_790_000_000_000
    zones = ("Etc/GMT+12", "Pacific/Pago_Pago", "Pacific/Kiritimati", "UTC")
    checked = 0
    for window in ("today", "week", "month", "quarter"):
        ttl_ms = TIER_TTL_SECONDS[CALENDAR[window]] * 1000
        for hours in range(-3 * 24, 10 * 24):
            as_of = now - ttl_ms + hours * 3_600_000
            if not answerable(window, as_of, now):
                continue
            for zone in zones:
                (bucket,) = window_span(window, as_of, zone).bucket_ids
                until = _kept_until_by_hand(bucket)
                assert until is not None and until > now, (window, hours, zone)
                checked += 1
    assert checked > 500
