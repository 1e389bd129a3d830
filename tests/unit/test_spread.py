"""How a plan's contributions become bucket deltas (``engine._spread``): grouped by anchor and
merged wherever anchors share the rest of their buckets, it must equal writing every item's
change (a credit's: the org's, team's and rep's items it stands for) to each bucket
``windows.live_buckets`` lists, one by one."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.contributions import GAUGE, Credit, Item, credit_items
from projections.engine import GAUGE_BUCKET, AggregateKey, _spread
from projections.windows import DAY_MS, derived_buckets, live_buckets, written_buckets

pytestmark = pytest.mark.unit

# Zones with DST, a half-hour and a 45-minute offset, the date line, and one whose offset
# had seconds (Monrovia was UTC-0:44:30 until 1972).
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/Los_Angeles",
    "Asia/Kathmandu",
    "Pacific/Apia",
    "Africa/Monrovia",
    "Australia/Lord_Howe",
]
NOW = 1_795_420_800_000  # 2026-11-23


def written_one_by_one(
    changes: Mapping[Item, int], credit_changes: Mapping[Credit, int], now_ms: int | None
) -> dict[AggregateKey, dict[str, int]]:
    out: dict[AggregateKey, dict[str, int]] = {}
    every = list(changes.items())
    for (rep, team, zone, anchor, name), change in credit_changes.items():
        every += [(item, change) for item in credit_items(rep, team, zone, ORG, anchor, name)]
    for (scope, scope_id, zone, anchor, name), change in every:
        if anchor == GAUGE:
            targets: tuple[str, ...] = (GAUGE_BUCKET,)
        elif now_ms is None:
            targets = written_buckets(anchor, zone)
        else:
            targets = live_buckets(anchor, zone, now_ms)
        for bucket in targets:
            fields = out.setdefault((scope, scope_id, bucket), {})
            fields[name] = fields.get(name, 0) + change
    return {
        key: {name: value for name, value in fields.items() if value}
        for key, fields in out.items()
        if any(fields.values())
    }


anchors = st.one_of(
    st.just(GAUGE),
    st.integers(0, NOW + DAY_MS),  # any time since 1970
    st.integers(NOW - 60 * DAY_MS, NOW),  # the last two months: minute and hour buckets live
    st.integers(NOW - 3 * 60_000, NOW),  # the last minutes: many share a bucket
)
items = st.dictionaries(
    st.tuples(
        st.sampled_from(["org", "team", "rep"]),
        st.sampled_from(["", "a", "b"]),
        st.sampled_from(ZONES),
        anchors,
        st.sampled_from(["calls", "talk_ms", "won"]),
    ),
    st.integers(-3, 3),
    max_size=60,
)
credits = st.dictionaries(
    st.tuples(
        st.sampled_from(["", "a", "b"]),  # "": no rep
        st.sampled_from(["a", "unassigned"]),
        st.sampled_from(ZONES),
        anchors,
        st.sampled_from(["calls", "talk_ms", "won"]),
    ),
    st.integers(-3, 3),
    max_size=40,
)
ORG = "America/Los_Angeles"  # the org's zone in these tests


@settings(max_examples=400, deadline=None)
@given(items, credits, st.sampled_from([None, NOW]))
def test_spread_equals_every_item_to_every_bucket(
    changes: dict[Item, int], credit_changes: dict[Credit, int], now_ms: int | None
) -> None:
    deltas: dict[AggregateKey, dict[str, int]] = {}
    _spread(deltas, changes, credit_changes, ORG, now_ms)
    assert deltas == written_one_by_one(changes, credit_changes, now_ms)


def test_an_instant_near_midnight_goes_to_its_local_day_week_and_month() -> None:
    """2026-11-30T23:30Z is December 1st in Berlin: its day, week, month and quarter there
    are not those of the UTC date."""
    at = 1_796_081_400_000  # 2026-11-30T23:30:00Z
    deltas: dict[AggregateKey, dict[str, int]] = {}
    _spread(deltas, {("team", "emea", "Europe/Berlin", at, "calls"): 1}, {}, ORG, None)
    assert set(deltas) == {("team", "emea", bucket) for bucket in ("m29934690", "D2026-12-01")}
    # The rollups count the minute in its UTC hour and day (30 November), and the local day
    # in its week, month, quarter and year.
    assert derived_buckets("m29934690") == ("h498911", "d20787")
    assert derived_buckets("D2026-12-01") == ("W2026-W49", "M2026-12", "Q2026-Q4", "Y2026", "A")
