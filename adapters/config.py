"""The mappings from vendor ids and values to the engine's own: a TOML file, checked whole.

::

    [reps]                       # vendor user ids -> rep ids
    hubspot = { "101" = "rep-01" }          # HubSpot owner id
    salesforce = { "0055e000001AbCd" = "rep-01" }  # Salesforce user id
    aircall = { "3001" = "rep-01" }         # Aircall user id
    twilio = { "client:alice" = "rep-01" }  # the agent's Twilio address (To of its leg)

    [queues]                     # called numbers -> contact-centre queues
    twilio = { "+15550100" = "q-emea" }
    aircall = { "+15550100" = "q-emea" }

    [hubspot]
    origin_by_change_source = { FORM = "marketing", CRM_UI = "sales" }
    lead_status_stages = { NEW = "new", ATTEMPTED_TO_CONTACT = "contacted" }
    deal_stages = { appointmentscheduled = "discovery", closedwon = "won", closedlost = "lost" }

    [salesforce]
    lead_source_origins = { Web = "marketing", "Phone Inquiry" = "sales" }
    lead_status_stages = { "Open - Not Contacted" = "new", "Working - Contacted" = "contacted" }
    opportunity_stages = { Prospecting = "discovery", "Closed Won" = "won", "Closed Lost" = "lost" }
    opportunity_fields = { product = "Type", segment = "Segment__c" }  # Salesforce field names

A value that is not in its table is reported (``Unmapped``), never guessed.
Every problem of a file is reported, one line each.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from projections.errors import ProblemsError

ORIGINS = ("marketing", "sales")
TABLES: dict[str, tuple[str, ...]] = {
    "reps": ("hubspot", "salesforce", "aircall", "twilio"),
    "queues": ("twilio", "aircall"),
    "hubspot": ("origin_by_change_source", "lead_status_stages", "deal_stages"),
    "salesforce": (
        "lead_source_origins",
        "lead_status_stages",
        "opportunity_stages",
        "opportunity_fields",
    ),
}
# Tables whose values are origins.
ORIGIN_TABLES = ("hubspot.origin_by_change_source", "salesforce.lead_source_origins")


class MappingsError(ProblemsError, ValueError):
    """A mappings file with problems (one line each)."""


class Unmapped(LookupError):
    """A vendor value the mappings do not name: the payload is reported, not guessed."""


@dataclass(frozen=True)
class Mappings:
    tables: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def get(self, table: str, value: object) -> str:
        """``table`` is ``section.name``, e.g. ``reps.hubspot``."""
        found = self.tables.get(table, {}).get(str(value))
        if found is None:
            raise Unmapped(f"{value!r} is not in [{table}] of the mappings file")
        return found


def parse_mappings(text: str) -> Mappings:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingsError([f"not TOML: {exc}"]) from None
    problems: list[str] = []
    tables: dict[str, dict[str, str]] = {}
    for section, body in document.items():
        if section not in TABLES:
            problems.append(f"unknown section [{section}]; use {', '.join(TABLES)}")
            continue
        if not isinstance(body, dict):
            problems.append(f"[{section}] must be a table")
            continue
        for name, mapping in body.items():
            where = f"{section}.{name}"
            if name not in TABLES[section]:
                problems.append(f"unknown table {where}; use {', '.join(TABLES[section])}")
                continue
            tables[where] = _strings(where, mapping, problems)
    for table in ORIGIN_TABLES:
        for vendor_value, origin in tables.get(table, {}).items():
            if origin not in ORIGINS:
                problems.append(
                    f"{table}: {vendor_value} = {origin!r} is not {' or '.join(ORIGINS)}"
                )
    unknown_fields = set(tables.get("salesforce.opportunity_fields", {})) - {"product", "segment"}
    if unknown_fields:
        problems.append(
            f"salesforce.opportunity_fields: {sorted(unknown_fields)[0]} is not product or segment"
        )
    if problems:
        raise MappingsError(problems)
    return Mappings(tables)


def _strings(where: str, mapping: Any, problems: list[str]) -> dict[str, str]:
    if not isinstance(mapping, dict):
        problems.append(f'{where} must be a table of "vendor value" = "our value"')
        return {}
    good = {}
    for key, value in mapping.items():
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}: {key} must map to a non-empty string, not {value!r}")
        else:
            good[key] = value
    return good
