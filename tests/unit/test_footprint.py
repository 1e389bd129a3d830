"""The footprint benchmark's model of what a live run's Redis has expired."""

from __future__ import annotations

import pytest

from benchmarks.footprint import bucket_start

pytestmark = pytest.mark.unit


def test_a_bucket_begins_when_its_period_does() -> None:
    assert bucket_start("m29400000") == 29_400_000 * 60_000
    assert bucket_start("h20000") == 20_000 * 3_600_000
    assert bucket_start("d20500") == 20_500 * 86_400_000
    assert bucket_start("D2026-11-23") == 1_795_392_000_000  # 2026-11-23T00:00Z
    assert bucket_start("W2026-W48") == 1_795_392_000_000  # the Monday it begins
    assert bucket_start("M2026-11") == 1_793_491_200_000
    assert bucket_start("Q2026-Q4") == 1_790_812_800_000


def test_buckets_kept_for_ever_never_expire() -> None:
    assert bucket_start("Y2026") is None
    assert bucket_start("A") is None
    assert bucket_start("G") is None
