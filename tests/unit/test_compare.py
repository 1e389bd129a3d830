"""The compare benchmark's plan of runs and its table."""

from __future__ import annotations

import pytest

from benchmarks.compare import Measured, Version, order, table

pytestmark = pytest.mark.unit


def test_runs_alternate_abba_with_as_many_of_each() -> None:
    assert order(1) == [0, 1]
    assert order(2) == [0, 1, 1, 0]
    assert order(3) == [0, 1, 1, 0, 0, 1]
    for runs in range(1, 9):
        assert order(runs).count(0) == order(runs).count(1) == runs


def test_the_table_gives_medians_and_their_difference() -> None:
    versions = [Version("base a", None), Version("this b", None)]
    measured = [
        Measured("base a", 10_000, 50.0, 30.0),
        Measured("this b", 11_000, 45.0, 29.0),
        Measured("this b", 12_000, 47.0, 31.0),
        Measured("base a", 9_000, 54.0, 35.0),
        Measured("base a", 9_500, 52.0, None),  # too few events left to meter
        Measured("this b", 11_500, 40.0, 28.0),
    ]
    lines = [" ".join(line.split()) for line in table(versions, measured)]
    assert "run 5: base a 9,500 too few events left to meter" in lines
    assert "base a worker µs/ev median 52.0 range 50.0 to 54.0" in lines
    assert "this b worker µs/ev median 45.0 range 40.0 to 47.0" in lines
    assert "this - base worker µs/ev median -7.0 (-13.5 %)" in lines
    assert "this - base Redis µs/ev median -3.5 (-10.8 %)" in lines  # 29 against 32.5
    assert "this - base events/s median +2,000.0 (+21.1 %)" in lines
