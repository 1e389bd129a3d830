"""KPI values for people (projections/display.py) and `salespulse kpis`'s table and JSON."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.catalogue import BY_ID, CATALOGUE, Figure, Result, Unit
from projections.display import (
    CURRENCIES,
    MISSING,
    UNIT_NAMES,
    Currency,
    UnknownCurrency,
    count,
    duration,
    kpi_text,
    money,
    percent,
    unit_name,
    value_text,
)
from projections.read import Answer
from projections.windows import WindowSpan
from streams.kpis_command import answer_json, table

pytestmark = pytest.mark.unit

USD, EUR, JPY, KWD = (Currency.of(code) for code in ("USD", "EUR", "JPY", "KWD"))
HOSTILE = [None, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [
        (7_530_000, EUR, "EUR 75,300.00"),
        (0, USD, "USD 0.00"),
        (5, USD, "USD 0.05"),
        (-1_250, USD, "USD -12.50"),
        (12_345, JPY, "JPY 12,345"),
        (12_345, KWD, "KWD 12.345"),
        (123_456.6, USD, "USD 1,234.57"),  # an average: rounded to the cent
        (0.4, USD, "USD 0.00"),
        (0.5, USD, "USD 0.01"),  # half a cent: away from zero, not to even
        (-0.5, USD, "USD -0.01"),
        (2.5, JPY, "JPY 3"),
        (10**30 + 1, USD, "USD 10,000,000,000,000,000,000,000,000,000.01"),  # exact
        (1e300, JPY, f"JPY {int(1e300):,}"),
    ],
)
def test_money_is_major_units_with_the_code(minor: float, currency: Currency, shown: str) -> None:
    assert money(minor, currency) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (0.04, "0s"),
        (0.4, "0.4s"),
        (45, "45s"),
        (45.4, "45s"),
        (59.6, "1m 0s"),
        (725, "12m 5s"),
        (5_100, "1h 25m"),
        (86_399, "23h 59m"),
        (273_600, "3d 4h"),
        (10**12, "11,574,074d 1h"),
        (-45, "-45s"),  # clocks that disagree: shown, not hidden as 0
        (-5_100, "-1h 25m"),
        (-0.4, "-0.4s"),
        (-0.01, "0s"),
    ],
)
def test_durations_read_like_a_clock(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_huge_values_are_shown_whole() -> None:
    assert duration(1e300).endswith("h") and "d " in duration(1e300)
    assert duration(10**400).endswith("h") and "d " in duration(10**400)
    assert percent(10**400) == f"{10**402:,}.0 %"
    assert count(10**400) == f"{10**400:,}"
    assert money(10**400, USD) == f"USD {10**398:,}.00"


@pytest.mark.parametrize(
    ("ratio", "shown"),
    [
        (2 / 3, "66.7 %"),
        (0, "0.0 %"),
        (1, "100.0 %"),
        (0.0004, "0.0 %"),
        (-0.05, "-5.0 %"),
        (12.5, "1,250.0 %"),
    ],
)
def test_ratios_are_percentages(ratio: float, shown: str) -> None:
    assert percent(ratio) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (12_345, "12,345"),
        (-12_345, "-12,345"),
        (10**21, "1,000,000,000,000,000,000,000"),
        (2.0, "2"),
        (4 / 3, "1.33"),  # won per lost
        (1234.5, "1,234.50"),
    ],
)
def test_counts_have_thousands_separators(value: float, shown: str) -> None:
    assert count(value) == shown


@pytest.mark.parametrize("value", HOSTILE)
def test_no_value_is_a_dash_in_every_format(value: float | None) -> None:
    assert money(value, USD) == duration(value) == percent(value) == count(value) == MISSING


def test_the_format_follows_the_registry_unit() -> None:
    assert kpi_text("revenue_won", 7_530_000, EUR) == "EUR 75,300.00"
    assert kpi_text("cost_per_lead", 21_728.4, EUR) == "EUR 217.28"
    assert kpi_text("average_handle_time_seconds", 5_100.0, EUR) == "1h 25m"
    assert kpi_text("oldest_untouched_lead_age_seconds", 273_600, EUR) == "3d 4h"
    assert kpi_text("win_rate", 2 / 3, EUR) == "66.7 %"
    assert kpi_text("activities", 12_345, EUR) == "12,345"
    for kpi in CATALOGUE:
        assert kpi_text(kpi.id, 1, USD) == value_text(1, kpi.unit, USD)
        assert unit_name(kpi.id) == UNIT_NAMES[kpi.unit]
    assert set(UNIT_NAMES) == set(Unit)


@given(
    kpi=st.sampled_from([kpi.id for kpi in CATALOGUE]),
    value=st.one_of(
        st.none(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    code=st.sampled_from(sorted(CURRENCIES)),
)
def test_any_value_of_any_kpi_is_one_line_of_text(kpi: str, value: float | None, code: str) -> None:
    shown = kpi_text(kpi, value, Currency.of(code))
    assert shown and "\n" not in shown and "nan" not in shown.lower()
    assert (shown == MISSING) == (value is None or not math.isfinite(value))


def test_the_currency_table_knows_the_minor_units() -> None:
    assert (JPY.exponent, USD.exponent, EUR.exponent, KWD.exponent) == (0, 2, 2, 3)
    assert CURRENCIES["GBP"] == 2 and CURRENCIES["BHD"] == 3 and CURRENCIES["CLF"] == 4
    assert CURRENCIES["KRW"] == 0 and CURRENCIES["ISK"] == 0
    assert all(len(code) == 3 and code.isascii() and code.isupper() for code in CURRENCIES)
    assert len(CURRENCIES) > 150
    assert EUR.json() == {"code": "EUR", "exponent": 2}


@pytest.mark.parametrize("code", ["usd", "XYZ", "", "US", "XAU", "EURO"])
def test_an_unknown_currency_is_refused(code: str) -> None:
    with pytest.raises(UnknownCurrency, match="is not an ISO 4217 currency code"):
        Currency.of(code)


def _answer() -> Answer:
    span = WindowSpan("today", ("D1",), 1_795_996_800_000, 1_796_083_200_000)
    kpis: dict[str, Result] = {
        "leads_created": Figure(12_345, 12_345, None),
        "win_rate": Figure(2 / 3, 6, 9),
        "revenue_won": Figure(7_530_000, 7_530_000, None),
        "average_deal_size": Figure(1_255_000.0, 7_530_000, 6),
        "average_handle_time_seconds": Figure(5_100.0, 15_300_000, 3),
        "activities": {"call": Figure(3, 3, None), "total": Figure(3, 3, None)},
        "abandonment_rate": Figure(None, 0, 0),
    }
    return Answer("team", "emea", span, "Europe/Berlin", kpis, {})


def test_the_table_shows_values_for_people() -> None:
    lines = table(_answer(), EUR)
    assert lines[0] == (
        "team emea  window today: [2026-11-30T00:00:00+00:00, 2026-12-01T00:00:00+00:00) "
        "in Europe/Berlin"
    )
    assert lines[1].split() == ["kpi", "label", "value", "basis"]
    assert lines[2].split() == ["leads_created", "12,345"]
    assert lines[3].split() == ["win_rate", "66.7", "%", "6", "of", "9"]
    assert lines[4].split() == ["revenue_won", "EUR", "75,300.00"]
    assert lines[5].split() == ["average_deal_size", "EUR", "12,550.00", "over", "6"]
    assert lines[6].split() == ["average_handle_time_seconds", "1h", "25m", "over", "3"]
    assert lines[7].split() == ["activities", "call", "3"]
    assert lines[9].split() == ["abandonment_rate", "-", "0", "of", "0"]
    # Values are right-aligned in one column, whatever their unit.
    value_end = lines[1].index("value") + len("value")
    assert all(
        line[value_end - 1] != " " and line[value_end : value_end + 2] in ("", "  ")
        for line in lines[2:]
    )


def test_the_json_keeps_exact_minor_units_and_says_so() -> None:
    document = answer_json(_answer(), 1_796_000_000_000, EUR)
    assert document["currency"] == {"code": "EUR", "exponent": 2}
    assert document["units"]["revenue_won"] == "money"
    assert document["units"]["win_rate"] == "ratio"
    assert document["units"]["average_handle_time_seconds"] == "seconds"
    assert document["units"]["activities"] == "count"
    assert document["kpis"]["revenue_won"] == {
        "value": 7_530_000,
        "numerator": 7_530_000,
        "denominator": None,
    }
    assert document["kpis"]["activities"]["total"]["value"] == 3
    assert (document["scope"], document["id"], document["window"]) == ("team", "emea", "today")
    assert document["as_of"] == "2026-11-30T00:53:20.000+00:00"
    assert set(document["units"]) == set(document["kpis"]) <= set(BY_ID)
