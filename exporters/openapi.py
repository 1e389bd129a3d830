"""The OpenAPI document of the query API (served at /openapi.json). Pure data."""

from __future__ import annotations

from typing import Any

from projections.catalogue import SCOPES
from projections.display import UNIT_NAMES
from projections.windows import WINDOWS


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(schema: str) -> dict[str, Any]:
    return {
        "description": "OK",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


SCOPE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "scope",
        "in": "query",
        "description": "Whose KPIs (default org)",
        "schema": {"type": "string", "enum": list(SCOPES)},
    },
    {
        "name": "id",
        "in": "query",
        "description": "The team, rep, campaign or queue id; none for org",
        "schema": {"type": "string"},
    },
    {
        "name": "window",
        "in": "query",
        "description": "Rolling or calendar window (default today); calendar windows follow "
        "the scope's time zone",
        "schema": {"type": "string", "enum": list(WINDOWS)},
    },
    {
        "name": "as_of",
        "in": "query",
        "description": "RFC 3339 instant whose window is read (default now)",
        "schema": {"type": "string", "format": "date-time"},
    },
]

FIGURE = {
    "type": "object",
    "required": ["value", "numerator", "denominator"],
    "additionalProperties": False,
    "properties": {
        "value": _nullable({"type": "number"}),
        "numerator": {"type": "integer"},
        "denominator": _nullable({"type": "integer"}),
        "target": {"$ref": "#/components/schemas/Target"},
    },
}

TARGET = {
    "type": "object",
    "required": ["target", "direction", "warning", "critical", "status"],
    "properties": {
        "target": {"type": "number"},
        "direction": {"type": "string", "enum": ["higher", "lower"]},
        "warning": _nullable({"type": "number"}),
        "critical": _nullable({"type": "number"}),
        "status": _nullable({"type": "string", "enum": ["met", "missed", "warning", "critical"]}),
    },
}

RESULT = {
    "description": "A figure, or for a KPI with labels (activities, shares) a figure per label",
    "oneOf": [
        {"$ref": "#/components/schemas/Figure"},
        {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Figure"}},
    ],
}

UNIT = {
    "type": "string",
    "enum": list(UNIT_NAMES.values()),
    "description": "count; ratio (0-1); seconds; money: minor units of the currency (cents), "
    "value / 10^exponent in major units",
}
CURRENCY = {
    "type": "object",
    "description": "The ISO 4217 currency of money figures (SALESPULSE_CURRENCY), and the "
    "number of digits of its minor unit (2: cents, 0: yen)",
    "required": ["code", "exponent"],
    "additionalProperties": False,
    "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "exponent": {"type": "integer", "minimum": 0, "maximum": 4},
    },
}

SPAN_PROPERTIES = {
    "scope": {"type": "string", "enum": list(SCOPES)},
    "id": {"type": "string"},
    "window": {"type": "string", "enum": list(WINDOWS)},
    "window_start": _nullable({"type": "string", "format": "date-time"}),
    "window_end": _nullable({"type": "string", "format": "date-time"}),
    "zone": {"type": "string"},
    "as_of": {"type": "string", "format": "date-time"},
}
SPAN_REQUIRED = list(SPAN_PROPERTIES)
# What the numbers of an answer are: live, or partial while lost records are applied again.
PROJECTIONS = {
    "type": "object",
    "required": ["status", "live"],
    "properties": {
        "status": {"type": "string", "enum": ["live", "rebuilding", "refilling", "folding"]},
        "live": {"type": "boolean"},
    },
}


# The exporter's reader token (exporters/auth.py): as a bearer token, or as basic auth's
# password with any user name (what browsers send for the wallboard).
SECURITY_SCHEMES = {
    "readerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The token in SALESPULSE_READER_TOKEN_FILE",
    },
    "readerBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "Any user name, the token in SALESPULSE_READER_TOKEN_FILE as password",
    },
}


def document(secured: bool = False) -> dict[str, Any]:
    """The API's OpenAPI document; ``secured``: the exporter requires the reader token."""
    spec = _document()
    if secured:
        spec["security"] = [{name: []} for name in SECURITY_SCHEMES]
        spec["components"]["securitySchemes"] = SECURITY_SCHEMES
        for path in spec["paths"].values():
            path["get"]["responses"]["401"] = _error("No reader token, or a wrong one")
    return spec


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "salespulse query API",
            "version": "1",
            "description": "KPIs read from the live projections (docs/api.md).",
        },
        "paths": {
            "/api/v1/kpis": {
                "get": {
                    "operationId": "kpis",
                    "summary": "Every KPI of one scope and window",
                    "parameters": SCOPE_PARAMETERS,
                    "responses": {
                        "200": _ok("Kpis"),
                        "400": _error("A parameter is wrong; the error names it"),
                        "404": _error("No data for this scope id"),
                        "503": _error("The projections cannot be read now"),
                    },
                }
            },
            "/api/v1/kpis/{kpi}": {
                "get": {
                    "operationId": "kpi",
                    "summary": "One KPI of one scope and window",
                    "parameters": [
                        {
                            "name": "kpi",
                            "in": "path",
                            "required": True,
                            "description": "KPI id (docs/kpis.md)",
                            "schema": {"type": "string"},
                        },
                        *SCOPE_PARAMETERS,
                    ],
                    "responses": {
                        "200": _ok("Kpi"),
                        "400": _error("A parameter is wrong; the error names it"),
                        "404": _error("Unknown KPI, or no data for this scope id"),
                        "503": _error("The projections cannot be read now"),
                    },
                }
            },
            "/api/v1/leaderboard": {
                "get": {
                    "operationId": "leaderboard",
                    "summary": "A team's reps ranked by one KPI, best first",
                    "parameters": [
                        {
                            "name": "kpi",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "team",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "label",
                            "in": "query",
                            "description": "For KPIs with labels (activities defaults to total)",
                            "schema": {"type": "string"},
                        },
                        SCOPE_PARAMETERS[2],
                        {
                            "name": "limit",
                            "in": "query",
                            "description": "Rows to return (default 10)",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                    ],
                    "responses": {
                        "200": _ok("Leaderboard"),
                        "400": _error("A parameter is wrong; the error names it"),
                        "404": _error("Unknown KPI, or no data for this team"),
                        "503": _error("The projections cannot be read now"),
                    },
                }
            },
            "/api/v1/teams": {
                "get": {
                    "operationId": "teams",
                    "summary": "The teams with data, and their time zones",
                    "responses": {
                        "200": _ok("Teams"),
                        "503": _error("The projections cannot be read now"),
                    },
                }
            },
            "/api/v1/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Can the projections be read, and how fresh are they",
                    "responses": {"200": _ok("Health"), "503": _ok("Health")},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "message": {"type": "string"},
                                "parameter": {"type": "string"},
                            },
                        }
                    },
                },
                "Figure": FIGURE,
                "Target": TARGET,
                "Result": RESULT,
                "Unit": UNIT,
                "Currency": CURRENCY,
                "Kpis": {
                    "type": "object",
                    "required": [*SPAN_REQUIRED, "projections", "currency", "units", "kpis"],
                    "properties": {
                        **SPAN_PROPERTIES,
                        "projections": PROJECTIONS,
                        "currency": {"$ref": "#/components/schemas/Currency"},
                        "units": {
                            "type": "object",
                            "description": "Each KPI's unit",
                            "additionalProperties": {"$ref": "#/components/schemas/Unit"},
                        },
                        "kpis": {
                            "type": "object",
                            "additionalProperties": {"$ref": "#/components/schemas/Result"},
                        },
                    },
                },
                "Kpi": {
                    "type": "object",
                    "required": [*SPAN_REQUIRED, "projections", "kpi", "unit", "result"],
                    "properties": {
                        **SPAN_PROPERTIES,
                        "projections": PROJECTIONS,
                        "kpi": {"type": "string"},
                        "unit": {"$ref": "#/components/schemas/Unit"},
                        "currency": {
                            "description": "For money only",
                            "allOf": [{"$ref": "#/components/schemas/Currency"}],
                        },
                        "result": {"$ref": "#/components/schemas/Result"},
                    },
                },
                "Leaderboard": {
                    "type": "object",
                    "required": [
                        "kpi",
                        "team",
                        "window",
                        "direction",
                        "as_of",
                        "unit",
                        "reps",
                        "rows",
                    ],
                    "properties": {
                        "kpi": {"type": "string"},
                        "label": _nullable({"type": "string"}),
                        "team": {"type": "string"},
                        "window": {"type": "string", "enum": list(WINDOWS)},
                        "direction": {"type": "string", "enum": ["higher", "lower"]},
                        "as_of": {"type": "string", "format": "date-time"},
                        "unit": {"$ref": "#/components/schemas/Unit"},
                        "currency": {
                            "description": "For money only",
                            "allOf": [{"$ref": "#/components/schemas/Currency"}],
                        },
                        "reps": {"type": "integer", "minimum": 0},
                        "rows": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": [
                                    "rank",
                                    "rep",
                                    "name",
                                    "value",
                                    "numerator",
                                    "denominator",
                                ],
                                "properties": {
                                    "rank": {"type": "integer", "minimum": 1},
                                    "rep": {"type": "string"},
                                    "name": _nullable(
                                        {
                                            "type": "string",
                                            "description": "From the rep's latest "
                                            "rep.upserted that named it",
                                        }
                                    ),
                                    "value": _nullable({"type": "number"}),
                                    "numerator": {"type": "integer"},
                                    "denominator": _nullable({"type": "integer"}),
                                },
                            },
                        },
                    },
                },
                "Teams": {
                    "type": "object",
                    "required": ["teams"],
                    "properties": {
                        "teams": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "zone", "queues"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "zone": {"type": "string"},
                                    "queues": {
                                        "type": "array",
                                        "description": "The contact-centre queues mapped to "
                                        "the team (SALESPULSE_QUEUE_TEAMS)",
                                        "items": {"type": "string"},
                                    },
                                },
                            },
                        }
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "redis"],
                    "properties": {
                        "status": {
                            "type": "string",
                            "enum": [
                                "ok",
                                "rebuilding",
                                "stale",
                                "refilling",
                                "folding",
                                "unknown",
                                "down",
                            ],
                        },
                        "live": {"type": "boolean"},
                        "refilling": {"type": "array", "items": {"type": "object"}},
                        "rebuild": _nullable({"type": "object"}),
                        "redis": {"type": "boolean"},
                        "kafka": {"type": "boolean"},
                        "consumer_lag": _nullable({"type": "integer"}),
                        "newest_event_age_seconds": _nullable({"type": "number"}),
                        "last_commit_age_seconds": _nullable({"type": "number"}),
                        "partitions": {"type": "array", "items": {"type": "object"}},
                        "targets": {"type": "integer"},
                        "dead_letters": _nullable({"type": "integer"}),
                        "too_late": {"type": "integer"},
                    },
                },
            }
        },
    }
