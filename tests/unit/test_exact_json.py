"""Figures past 64 bits are written as exact JSON integers (projections/exact_json.py)."""

from __future__ import annotations

import json

import orjson
import pytest

from projections.exact_json import dumps, loads

pytestmark = pytest.mark.unit


def test_a_figure_past_64_bits_is_written_exactly() -> None:
    big = 2_100 * (2**53 - 1)  # an all-time revenue of 2,100 deals of the largest amount
    assert big > 2**64
    figure = {"value": big, "numerator": big, "denominator": None, "label": "ü"}
    text = dumps(figure)
    assert json.loads(text) == figure
    assert str(big).encode() in text  # every digit, not a float
    assert json.loads(dumps([-big, 1.5])) == [-big, 1.5]
    # Read back exactly (orjson would give a float, unequal to the figure).
    state = [3, big, big, None]
    assert loads(dumps(state)) == state and orjson.loads(dumps(state)) != state
    assert loads(dumps([1, -(2**63) - 1])) == [1, -(2**63) - 1]
    assert dumps(figure, option=orjson.OPT_INDENT_2).startswith(b'{\n  "value"')


def test_other_values_are_orjsons_and_its_other_errors_stay() -> None:
    figure = {"value": 0.25, "numerator": 2**64 - 1, "denominator": 4}
    assert dumps(figure) == orjson.dumps(figure)
    small = [7, 1.2345678901234567e29, 10**17, None]
    assert loads(orjson.dumps(small)) == small
    with pytest.raises(TypeError):
        dumps({"value": object()})
