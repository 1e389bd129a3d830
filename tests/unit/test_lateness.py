"""The lateness rule (projections/lateness.py) and its setting."""

from __future__ import annotations

import pytest

from config.settings import Settings, SettingsError
from projections.lateness import DAY_MS, judge, parse_horizon, stream_upto

pytestmark = pytest.mark.unit

H = 2 * DAY_MS
T = 1_795_420_800_000  # 2026-11-23T08:00:00Z


@pytest.mark.parametrize(
    "text, ms",
    [("35d", 35 * DAY_MS), ("12h", 12 * 3_600_000), ("90m", 5_400_000), ("600s", 600_000)],
)
def test_a_horizon_is_a_count_and_a_unit(text: str, ms: int) -> None:
    assert parse_horizon(text) == ms


@pytest.mark.parametrize("text", ["0d", "35", "d", "-1d", "5 weeks", "1.5d", "35D", ""])
def test_anything_else_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ValueError, match="is not a positive duration"):
        parse_horizon(text)
    with pytest.raises(SettingsError, match=r"^SALESPULSE_LATENESS_HORIZON="):
        Settings.from_env({"SALESPULSE_LATENESS_HORIZON": text})


def test_the_default_is_35_days() -> None:
    assert Settings.from_env({}).rules.lateness_horizon_ms == 35 * DAY_MS


def test_an_event_exactly_the_horizon_behind_is_applied_one_ms_more_is_late() -> None:
    judged = judge(0, [(0, T), (1, T - H), (2, T - H - 1)], H)
    assert judged.late == {2}
    assert judged.stream_ms == T


def test_the_first_event_of_a_partition_is_never_late() -> None:
    assert judge(0, [(7, 0)], H).late == set()


def test_stream_time_is_the_newest_so_far_and_late_events_do_not_move_it() -> None:
    events = [(0, T - 5 * DAY_MS), (1, T), (2, T - 3 * DAY_MS), (3, T - DAY_MS), (4, T + DAY_MS)]
    judged = judge(0, events, H)
    assert judged.late == {2}
    assert judged.stream_after == {0: T - 5 * DAY_MS, 1: T, 2: T, 3: T, 4: T + DAY_MS}
    assert stream_upto(judged, 3) == T and stream_upto(judged, 99) == T + DAY_MS


def test_a_batch_continues_from_the_stored_stream_time() -> None:
    """Split anywhere, the same events get the same verdicts: the rule reads the log only."""
    events = [(n, T + (n % 7 - 3) * DAY_MS) for n in range(40)]
    whole = judge(0, events, H)
    first = judge(0, events[:13], H)
    second = judge(first.stream_ms, events[13:], H)
    assert first.late | second.late == whole.late
    assert second.stream_ms == whole.stream_ms


def test_history_in_time_order_is_never_late() -> None:
    years = [(n, T - 3 * 365 * DAY_MS + n * 3_600_000) for n in range(10_000)]
    assert judge(0, years, H).late == set()


def test_no_event_before_a_part_means_no_stream_time_to_give() -> None:
    assert stream_upto(judge(0, [(5, T)], H), 4) is None
