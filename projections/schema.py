"""The JSON Schema (draft 2020-12) of the event contract, derived from projections.events.

``python -m projections.schema`` prints it; the published copy lives in
``schemas/events-v1.schema.json`` and a unit test keeps the two identical.
What JSON Schema cannot say (the validator's clock bound on ``occurred_at``,
the IANA zone list, the record size limit) is stated in the descriptions.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from projections.events import (
    COUNT,
    COUNT_MAX,
    EVENT_TYPES,
    ID,
    ID_MAX_CHARS,
    INSTANT,
    SCHEMA_VERSION,
    TEXT,
    TEXT_MAX_CHARS,
    TIMEZONE,
)
from projections.validation import FieldSpec, field_specs

SCHEMA_ID = "https://salespulse.dev/schemas/events-v1.schema.json"
# RFC 3339 date-time with a mandatory offset.
# Ids: any character but a control character (C0, DEL, C1).
ID_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"


def _property(spec: FieldSpec) -> dict[str, Any]:
    if spec.choices:
        return {"type": "string", "enum": list(spec.choices)}
    if spec.kind is ID:
        return {
            "type": "string",
            "minLength": 1,
            "maxLength": ID_MAX_CHARS,
            "pattern": ID_PATTERN,
            "description": "an id: any characters but control characters",
        }
    if spec.kind is TEXT:
        return {"type": "string", "maxLength": TEXT_MAX_CHARS}
    if spec.kind is INSTANT:
        return {
            "type": "string",
            "format": "date-time",
            "pattern": RFC3339_PATTERN,
            "description": "RFC 3339 with an offset",
        }
    if spec.kind is COUNT or spec.python_type is int:
        return {"type": "integer", "minimum": 0, "maximum": COUNT_MAX}
    if spec.kind is TIMEZONE:
        return {"type": "string", "minLength": 1, "maxLength": 64, "description": "IANA zone"}
    if spec.python_type is bool:
        return {"type": "boolean"}
    raise TypeError(f"no schema for {spec}")  # pragma: no cover


def event_schema() -> dict[str, Any]:
    variants = []
    for type_name, cls in EVENT_TYPES.items():
        specs = [s for s in field_specs(cls) if s.attr_name != "schema_version"]
        properties: dict[str, Any] = {
            "type": {"const": type_name},
            "schema_version": {"const": SCHEMA_VERSION},
        }
        properties.update({s.wire_name: _property(s) for s in specs})
        variant: dict[str, Any] = {
            "title": type_name,
            "type": "object",
            "properties": properties,
            "required": ["type", "schema_version"] + [s.wire_name for s in specs if s.required],
            "additionalProperties": True,
        }
        variants.append(variant)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "salespulse canonical event, version 1.1 (schema_version 1)",
        "description": (
            "One JSON object per Kafka record on salespulse.events.raw. Unknown extra fields "
            "are kept and ignored. Money is integer minor units, durations integer ms. "
            "Beyond this schema the validator rejects records over the size limit "
            "(default 65,536 bytes), unknown IANA zones, and occurred_at before 1970 or "
            "more than the configured skew (default 24 h) ahead of its clock."
        ),
        "oneOf": variants,
    }


def render() -> bytes:
    return orjson.dumps(event_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(render())
