"""KPI values for people: money in major units with its currency, durations as ``1h 25m``,
ratios as percentages, counts with thousands separators. Pure.

The projections, ``--json``, the API and the metrics keep exact integers in minor units;
only what people read is formatted here, from the KPI's unit in the registry. A value that
cannot be shown (None, NaN, infinite) is ``-``, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from projections.catalogue import BY_ID, Unit

MISSING = "-"

# ISO 4217 list one, active codes, by the exponent of their minor unit (cents: 2). Python's
# standard library has no such table; codes of funds and metals (XAU, XDR...) are left out.
_BY_EXPONENT = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    2: "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN "
    "BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB "
    "EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS "
    "KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN "
    "MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD "
    "SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS "
    "UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}
CURRENCIES: Mapping[str, int] = {
    code: exponent for exponent, codes in _BY_EXPONENT.items() for code in codes.split()
}

# The unit of a KPI as the API and ``--json`` name it.
UNIT_NAMES: Mapping[Unit, str] = {
    Unit.COUNT: "count",
    Unit.RATIO: "ratio",
    Unit.SECONDS: "seconds",
    Unit.MONEY: "money",
}


class UnknownCurrency(ValueError):
    """A code that is not an ISO 4217 currency of the table."""

    def __init__(self, code: str) -> None:
        known = code.upper() in CURRENCIES
        hint = f": write it in capitals, {code.upper()!r}" if known else " (e.g. USD, EUR, JPY)"
        super().__init__(f"{code!r} is not an ISO 4217 currency code{hint}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Currency:
    code: str  # ISO 4217, e.g. "EUR"
    exponent: int  # digits of the minor unit: 2 for cents, 0 for yen

    @classmethod
    def of(cls, code: str) -> Currency:
        if code not in CURRENCIES:
            raise UnknownCurrency(code)
        return cls(code, CURRENCIES[code])

    def json(self) -> dict[str, object]:
        """What the API and ``--json`` say of the money they give in minor units."""
        return {"code": self.code, "exponent": self.exponent}


def _finite(value: float | int | None) -> bool:
    # Integers of any size are finite (math.isfinite would overflow on a float of them).
    if value is None or isinstance(value, bool):
        return False
    return isinstance(value, int) or math.isfinite(value)


def count(value: float | int | None) -> str:
    """``12,345``; a fraction (won per lost) keeps two decimals: ``1.33``."""
    if value is None or not _finite(value):
        return MISSING
    if isinstance(value, int) or value.is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def percent(ratio: float | int | None) -> str:
    """A 0-1 ratio as ``66.7 %``."""
    if ratio is None or not _finite(ratio):
        return MISSING
    if isinstance(ratio, int):
        return f"{ratio * 100:,}.0 %"
    return f"{ratio * 100:,.1f} %"


def duration(seconds: float | int | None) -> str:
    """``45s``, ``12m 5s``, ``1h 25m``, ``3d 4h``; under a second ``0.4s``. A negative
    duration (clocks that disagree) keeps its sign rather than pass for a short one."""
    if seconds is None or not _finite(seconds):
        return MISSING
    sign = "-" if seconds < 0 else ""
    left = abs(seconds)
    if left < 0.95:
        tenths = round(left, 1)
        return "0s" if tenths == 0 else f"{sign}{tenths:.1f}s"
    s = left if isinstance(left, int) else int(left + 0.5)  # whole seconds, halves up
    if s < 60:
        text = f"{s}s"
    elif s < 3_600:
        text = f"{s // 60}m {s % 60}s"
    elif s < 86_400:
        text = f"{s // 3_600}h {s % 3_600 // 60}m"
    else:
        text = f"{s // 86_400:,}d {s % 86_400 // 3_600}h"
    return sign + text


def money(minor: float | int | None, currency: Currency) -> str:
    """Minor units as major units with the code: ``USD 75,300.00``, ``JPY 12,345``. An
    average (a fraction of a minor unit) is rounded to the minor unit."""
    if minor is None or not _finite(minor):
        return MISSING
    # Exact for integers of any size; an average is rounded half away from zero, like a till.
    if isinstance(minor, int):
        units = minor
    else:
        units = int(math.copysign(math.floor(abs(minor) + 0.5), minor))
    sign = "-" if units < 0 else ""
    major, rest = divmod(abs(units), 10**currency.exponent)
    fraction = f".{rest:0{currency.exponent}d}" if currency.exponent else ""
    return f"{currency.code} {sign}{major:,}{fraction}"


def value_text(value: float | int | None, unit: Unit, currency: Currency) -> str:
    """A KPI value as people read it, by the KPI's unit."""
    if unit is Unit.MONEY:
        return money(value, currency)
    if unit is Unit.SECONDS:
        return duration(value)
    if unit is Unit.RATIO:
        return percent(value)
    return count(value)


def kpi_text(kpi: str, value: float | int | None, currency: Currency) -> str:
    """A value of the registry's KPI ``kpi`` as people read it."""
    return value_text(value, BY_ID[kpi].unit, currency)


def unit_name(kpi: str) -> str:
    """The unit of the registry's KPI ``kpi`` as the API names it: count, ratio, seconds, money."""
    return UNIT_NAMES[BY_ID[kpi].unit]
