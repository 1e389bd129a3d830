"""JSON text of KPI figures, exact at any size. Pure.

orjson writes integers of 64 bits only, and reads longer ones as floats. A rollup total
derived from many days and partitions (docs/projections.md, "Derived tiers") has no such
bound: a figure past it is written and read by the standard library instead, still as an
exact JSON integer, rather than failing the answer or the KPI publisher's pass (or, read
back as a float, looking changed on every pass).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson


def dumps(value: Any, option: int | None = None) -> bytes:
    """``orjson.dumps(value, option=option)``; for a value holding an integer past 64 bits,
    the standard library's JSON (indented by 2 if ``option`` asks orjson to)."""
    try:
        return orjson.dumps(value, option=option)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise
    indent = 2 if option is not None and option & orjson.OPT_INDENT_2 else None
    return json.dumps(value, indent=indent, ensure_ascii=False).encode()


# A run of 19 digits: an integer of 10^18 or more (orjson writes a float with at most 17).
_LONG_INTEGER = re.compile(rb"\d{19}")


def loads(text: bytes) -> Any:
    """``orjson.loads(text)``; for a text holding an integer that may pass 64 bits, the
    standard library's, which reads it exactly."""
    if _LONG_INTEGER.search(text):
        return json.loads(text)
    return orjson.loads(text)
