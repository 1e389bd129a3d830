"""Event-time buckets and the windows that sum them. Pure; the exact rules are in docs/windows.md.

Every contribution counts in one bucket of each tier, chosen by its anchor
instant (integer epoch ms):

* ``m``: the UTC minute;  ``h``: the UTC hour;  ``d``: the UTC day;
* ``D``, ``W``, ``M``, ``Q``, ``Y``: the calendar day, ISO week, month, quarter
  and year in the scope's time zone;
* ``A``: one bucket for all time.

A partition writes an event's minute and local day (``written_buckets``); the rollups
derive the hour and UTC day totals from each minute's, and the week, month, quarter, year
and all-time totals from each local day's (``derived_buckets``). A contribution whose
minute or day is no longer kept is written to the shortest tiers still kept, and the
rollups derive the rest from those (``live_buckets``).

A window "as of" an instant ``t`` sums whole buckets:

* ``15m`` and ``1h``: the 15 / 60 minute buckets ending with the minute that
  contains ``t``;
* ``24h``: the 24 hour buckets ending with the hour that contains ``t``;
* ``7d`` and ``30d``: the 7 / 30 UTC-day buckets ending with the day that
  contains ``t``;
* ``today``, ``week``, ``month``, ``quarter``, ``year``: the one calendar
  bucket of the scope's zone that contains ``t``;
* ``all``: the all-time bucket.

So a window includes its current bucket whole (events later than ``t`` in the
same minute, hour or day count too). Reads with the same ``as_of`` over the
same events always give the same answer.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

ROLLING = {"15m": ("m", 15), "1h": ("m", 60), "24h": ("h", 24), "7d": ("d", 7), "30d": ("d", 30)}
CALENDAR = {"today": "D", "week": "W", "month": "M", "quarter": "Q", "year": "Y"}
WINDOWS: tuple[str, ...] = (*ROLLING, *CALENDAR, "all")

# How long a bucket must live: a little longer than the longest window that reads it,
# so a read "as of" a recent instant still finds every bucket it needs.
TIER_TTL_SECONDS = {
    "m": 3 * 3600,
    "h": 3 * 86_400,
    "d": 40 * 86_400,
    "D": 40 * 86_400,
    "W": 120 * 86_400,
    "M": 400 * 86_400,
    "Q": 800 * 86_400,
    "Y": 0,  # kept
    "A": 0,  # kept
}
TIERS: tuple[str, ...] = tuple(TIER_TTL_SECONDS)


ALL_TIME = "A"  # the one bucket of the "all" window

# The end of the "all" window: no instant to show.
OPEN_END_MS = 2**63 - 1


class UnknownWindow(ValueError):
    """A window name that is not one of WINDOWS."""


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=65_536)
def _calendar_ids(ordinal: int) -> tuple[str, ...]:
    """Calendar bucket ids of a local date (by ordinal); cached, as many events share a day."""
    day = date.fromordinal(ordinal)
    iso_year, iso_week, _ = day.isocalendar()
    return (
        f"D{day:%Y-%m-%d}",
        f"W{iso_year}-W{iso_week:02d}",
        f"M{day:%Y-%m}",
        f"Q{day.year}-Q{(day.month - 1) // 3 + 1}",
        f"Y{day.year}",
    )


def calendar_buckets(at_ms: int, zone_name: str) -> tuple[str, ...]:
    """The day, week, month, quarter and year bucket ids of an instant in a zone."""
    local = datetime.fromtimestamp(at_ms / 1000, _zone(zone_name))
    return _calendar_ids(local.toordinal())


def buckets(at_ms: int, zone_name: str) -> tuple[str, ...]:
    """Every bucket id an event at ``at_ms`` counts in, one per tier, in TIERS order."""
    return (f"m{at_ms // MINUTE_MS}", *_from_hour(at_ms, zone_name)[0])


def written_buckets(at_ms: int, zone_name: str) -> tuple[str, ...]:
    """The buckets a partition writes for an event at ``at_ms`` while all are kept: the
    minute and the local day (``m``, ``D``); the rollups derive the rest."""
    return (f"m{at_ms // MINUTE_MS}", _from_hour(at_ms, zone_name)[0][2])


@lru_cache(maxsize=65_536)
def derived_buckets(bucket: str) -> tuple[str, ...]:
    """The buckets whose totals the rollups move with ``bucket``'s: a minute's hour and UTC
    day, an hour's UTC day, a local day's (``D<date>``) week, month, quarter, year and all
    time; none for the other tiers. A contribution written to its minute counts in its hour
    and UTC day through the minute's totals (docs/projections.md, "Derived tiers"); a
    partition writes a derived tier itself only when the bucket it derives from is no longer
    kept (``live_buckets``): an hour for an event more than 3 hours old."""
    tier = bucket[0]
    if tier == "m":
        minute = int(bucket[1:])
        return (f"h{minute * MINUTE_MS // HOUR_MS}", f"d{minute * MINUTE_MS // DAY_MS}")
    if tier == "h":
        return (f"d{int(bucket[1:]) * HOUR_MS // DAY_MS}",)
    if tier == "D":
        ordinal = date.fromisoformat(bucket[1:]).toordinal()
        return (*_calendar_ids(ordinal)[1:], ALL_TIME)
    return ()


UTC_TIER_MS = {"m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS}


@lru_cache(maxsize=65_536)
def kept_until(bucket: str) -> int | None:
    """The instant (epoch ms) until which a bucket is surely kept; None: kept for ever.

    Its period's start plus its tier's TTL. A calendar bucket's period starts at another
    instant in each zone, so the earliest counts: a day before its UTC start (no zone is a
    day or more ahead of UTC). The store gives every bucket it writes at least this long
    (``ttl_seconds``), and no bucket is written or read past it (``live_buckets``,
    ``answerable``): retention follows the events' time, not when a bucket was written."""
    ttl_ms = TIER_TTL_SECONDS.get(bucket[0], 0) * 1000
    if not ttl_ms:
        return None
    size = UTC_TIER_MS.get(bucket[0])
    start = int(bucket[1:]) * size if size else calendar_range(bucket, "UTC")[0] - DAY_MS
    return start + ttl_ms


# The keys of a bucket the rollups derive totals from live longer than their rule needs
# (a minute's an hour, an hour's and a local day's a day): a fold lost just before the
# bucket stops being written, and redone (by a running worker within seconds, by one that
# starts within that margin), finds the partition's values and the shares still there, so
# its moves still reach the derived totals (docs/projections.md, "Derived tiers").
SOURCE_MARGIN_SECONDS = {"m": 3_600, "h": 86_400, "D": 86_400}


def ttl_seconds(bucket: str, now_ms: int) -> int:
    """The TTL to give what belongs to a bucket written now (0: none): its tier's, or more
    for a bucket whose period starts later (an event from up to a day ahead), so that it is
    kept at least until ``kept_until``."""
    until = kept_until(bucket)
    if until is None:
        return 0
    return max(TIER_TTL_SECONDS[bucket[0]], -((now_ms - until) // 1000))


def stored_ttl_seconds(bucket: str, now_ms: int) -> int:
    """``ttl_seconds`` of a bucket's keys in the store: those the rollups derive totals from
    longer (SOURCE_MARGIN_SECONDS)."""
    ttl = ttl_seconds(bucket, now_ms)
    return ttl + SOURCE_MARGIN_SECONDS.get(bucket[0], 0) if ttl else ttl


def live_buckets(at_ms: int, zone_name: str, now_ms: int) -> tuple[str, ...]:
    """The buckets a partition writes for an event at ``at_ms``: ``buckets`` minus those past
    ``kept_until``, which no read can ask for any more (``answerable``: writing them is
    waste; a backfill of months would write one minute bucket per event and scope, one of
    years a day bucket per day), and minus the tiers the rollups derive from a bucket still
    kept (``derived_buckets``)."""
    minute = at_ms // MINUTE_MS
    every, untils, late = _from_hour(at_ms, zone_name)
    minute_kept = minute * MINUTE_MS + _MINUTES_KEPT_MS > now_ms
    if untils[0] > now_ms:  # most events: every bucket from the hour on is kept
        return (f"m{minute}", every[2]) if minute_kept else (every[0], every[2])
    if not minute_kept:  # the rest, as a minute is kept for less time than its hour
        return late[bisect_right(untils, now_ms, 0, len(late) - 1)]
    return _not_derived([b for b in (f"m{minute}", *every) if _kept_at(b, now_ms)])


_MINUTES_KEPT_MS = TIER_TTL_SECONDS["m"] * 1000
_FOR_EVER = 2**63 - 1

# The buckets of an instant from the hour tier on (h, d, D, W, M, Q, Y, A); the distinct
# ``kept_until`` among them, ascending, then _FOR_EVER; and, at each index i from 1, what
# ``live_buckets`` writes from the (i-1)th of those instants to the ith, its minute gone.
_FromHour = tuple[tuple[str, ...], tuple[int, ...], tuple[tuple[str, ...], ...]]


def _from_hour(at_ms: int, zone_name: str) -> _FromHour:
    """The bucket ids of an instant from the hour tier on, with what it writes as they go."""
    shared = _hour_ids(at_ms // HOUR_MS, zone_name)
    if shared is not None:
        return shared
    return _as_they_go(
        (
            f"h{at_ms // HOUR_MS}",
            f"d{at_ms // DAY_MS}",
            *calendar_buckets(at_ms, zone_name),
            ALL_TIME,
        )
    )


def _as_they_go(ids: tuple[str, ...]) -> _FromHour:
    """``ids`` with the instants their buckets stop being kept and what is written between."""
    untils = sorted({u for b in ids if (u := kept_until(b)) is not None})
    late: list[tuple[str, ...]] = [()]  # before the first: the minute decides (live_buckets)
    for since in untils:
        late.append(_not_derived([b for b in ids if _kept_at(b, since)]))
    return ids, (*untils, _FOR_EVER), tuple(late)


def _kept_at(bucket: str, now_ms: int) -> bool:
    """Whether ``bucket`` is still kept at ``now_ms`` (``kept_until``)."""
    until = kept_until(bucket)
    return until is None or until > now_ms


def _not_derived(kept: list[str]) -> tuple[str, ...]:
    """Of buckets still kept, in TIERS order, those the rollups derive from none of the
    others (``derived_buckets``)."""
    derived: set[str] = set()
    for bucket in kept:  # a bucket comes before those derived from it
        if bucket[0] not in derived:
            derived.update(longer[0] for longer in derived_buckets(bucket))
    return tuple(b for b in kept if b[0] not in derived)


@lru_cache(maxsize=65_536)
def _hour_ids(hour: int, zone_name: str) -> _FromHour | None:
    """``_from_hour`` of every instant of a UTC hour, or None when they differ: the local
    date changes within the hour (a zone whose offset is not whole hours, a time change).
    The zone's offset is the same at the hour's first and last millisecond, so it holds the
    whole hour (no zone changes its offset and back within an hour) and the local date,
    the same at both ends, too. Events of an hour share it: one time-zone conversion and
    one pass over the buckets' lifetimes per hour and zone instead of one per event."""
    first_ms = hour * HOUR_MS
    zone = _zone(zone_name)
    first = datetime.fromtimestamp(first_ms / 1000, zone)
    last = datetime.fromtimestamp((first_ms + HOUR_MS - 1) / 1000, zone)
    if first.utcoffset() != last.utcoffset() or first.toordinal() != last.toordinal():
        return None
    return _as_they_go(
        (f"h{hour}", f"d{first_ms // DAY_MS}", *_calendar_ids(first.toordinal()), ALL_TIME)
    )


def answerable(window: str, as_of_ms: int, now_ms: int) -> bool:
    """Whether every bucket ``window`` reads as of ``as_of_ms``, in any zone, is still kept
    at ``now_ms`` (``kept_until``): a rolling window's oldest bucket; a calendar window's
    bucket in the zone latest behind UTC, held by that of the UTC date a day before
    ``as_of_ms`` at the latest (no zone is a day or more behind UTC either)."""
    if window in ROLLING:
        oldest = window_span(window, as_of_ms, "UTC").bucket_ids[0]
    elif window in CALENDAR:
        tier_index = list(CALENDAR).index(window)
        oldest = calendar_buckets(as_of_ms - DAY_MS, "UTC")[tier_index]
    else:
        return True
    return _kept_at(oldest, now_ms)


_TIER_NAMES = {
    "m": "minute",
    "h": "hour",
    "d": "day",
    "D": "day",
    "W": "week",
    "M": "month",
    "Q": "quarter",
}


def too_old(window: str) -> str:
    """Why a window cannot be read as of an instant that ``answerable`` refuses."""
    tier = ROLLING[window][0] if window in ROLLING else CALENDAR[window]
    kept = TIER_TTL_SECONDS[tier]
    length = f"{kept // 86_400} days" if kept % 86_400 == 0 else f"{kept // 3_600} hours"
    return (
        f"the {window} window as of that instant is no longer kept "
        f"({_TIER_NAMES[tier]} buckets are kept {length}): use a later as_of"
    )


@dataclass(frozen=True, slots=True)
class WindowSpan:
    """The buckets a window sums, and the half-open instant range they cover."""

    window: str
    bucket_ids: tuple[str, ...]
    start_ms: int
    end_ms: int


@lru_cache(maxsize=4096)
def window_span(window: str, as_of_ms: int, zone_name: str) -> WindowSpan:
    """Which buckets ``window`` sums as of ``as_of_ms`` for a scope in ``zone_name`` (kept:
    a scrape asks the same few thousand times)."""
    if window in ROLLING:
        tier, count = ROLLING[window]
        size = UTC_TIER_MS[tier]
        last = as_of_ms // size
        ids = tuple(f"{tier}{n}" for n in range(last - count + 1, last + 1))
        return WindowSpan(window, ids, (last - count + 1) * size, (last + 1) * size)
    if window in CALENDAR:
        bucket = calendar_buckets(as_of_ms, zone_name)[list(CALENDAR).index(window)]
        start, end = calendar_range(bucket, zone_name)
        return WindowSpan(window, (bucket,), start, end)
    if window == "all":
        return WindowSpan(window, (ALL_TIME,), 0, OPEN_END_MS)
    raise UnknownWindow(f"unknown window {window!r}: use one of {', '.join(WINDOWS)}")


def calendar_range(bucket: str, zone_name: str) -> tuple[int, int]:
    """The UTC instants [start, end) that a calendar bucket id covers in a zone."""
    zone = _zone(zone_name)
    kind, text = bucket[0], bucket[1:]
    if kind == "D":
        start = datetime.strptime(text, "%Y-%m-%d")
        end = _add_months(start, 0, days=1)
    elif kind == "W":
        year, week = text.split("-W")
        start = datetime.fromisocalendar(int(year), int(week), 1)
        end = _add_months(start, 0, days=7)
    elif kind == "M":
        start = datetime.strptime(text, "%Y-%m")
        end = _add_months(start, 1)
    elif kind == "Q":
        year, quarter = text.split("-Q")
        start = datetime(int(year), 3 * int(quarter) - 2, 1)
        end = _add_months(start, 3)
    elif kind == "Y":
        start = datetime(int(text), 1, 1)
        end = datetime(int(text) + 1, 1, 1)
    else:
        raise ValueError(f"not a calendar bucket: {bucket!r}")
    return _ms(start.replace(tzinfo=zone)), _ms(end.replace(tzinfo=zone))


def _add_months(start: datetime, months: int, days: int = 0) -> datetime:
    if days:
        return datetime.fromordinal(start.toordinal() + days)
    month = start.month - 1 + months
    return start.replace(year=start.year + month // 12, month=month % 12 + 1)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
