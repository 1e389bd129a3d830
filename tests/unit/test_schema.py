"""The published JSON Schema is current, and agrees with the validator on real logs."""

from __future__ import annotations

import time
from pathlib import Path

import jsonschema
import orjson
import pytest

from projections.schema import render
from simulator.log import DUPLICATE, VALID, SimConfig, simulate
from tests.unit.test_validation import EXAMPLES, event

pytestmark = pytest.mark.unit

PUBLISHED = Path(__file__).resolve().parents[2] / "schemas" / "events-v1.schema.json"
# Bad-input classes that JSON Schema itself can express (the rest need the validator's
# clock, size limit, zone list or calendar).
SCHEMA_REJECTS = {
    "not_an_object",
    "unknown_schema_version",
    "unknown_type",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "negative_value",
    "timestamp_without_offset",
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = orjson.loads(PUBLISHED.read_bytes())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_published_schema_is_generated_from_the_contract() -> None:
    assert PUBLISHED.read_bytes() == render(), "run: python -m projections.schema > " + str(
        PUBLISHED
    )


@pytest.mark.parametrize("type_name", sorted(EXAMPLES))
def test_schema_accepts_each_example(
    validator: jsonschema.protocols.Validator, type_name: str
) -> None:
    validator.validate(event(type_name))


def test_schema_and_validator_agree_on_a_simulated_log(
    validator: jsonschema.protocols.Validator,
) -> None:
    records, _ = simulate(
        SimConfig(
            seed=7,
            count=6_000,
            end_ms=time.time_ns() // 1_000_000,
            invalid_share=0.2,
            duplicate_share=0.02,
        )
    )
    checked = 0
    for record in records:
        if record.label in (VALID, DUPLICATE):
            validator.validate(orjson.loads(record.value))
        elif record.label in SCHEMA_REJECTS:
            assert not validator.is_valid(orjson.loads(record.value)), record
            checked += 1
    assert checked > 500
