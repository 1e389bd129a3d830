"""Salesforce Change Data Capture events (as JSON, from a Pub/Sub API relay) -> lead and
opportunity events.

A body is one change event or an array of them: the changed fields plus the
``ChangeEventHeader`` (``entityName``, ``recordIds``, ``changeType``,
``changedFields``, ``commitTimestamp``, ...). One event may name several
records: one canonical event per record, timed by ``commitTimestamp``, with an
id from the record id, ``transactionKey``, ``sequenceNumber`` and the kind, so a
relay's redelivery maps to the same ids.

* Lead ``CREATE`` -> ``lead.created``: origin from ``LeadSource`` via
  ``[salesforce.lead_source_origins]``; the owner (a user id, ``005...``) via
  ``[reps.salesforce]`` (a queue owner, ``00G...``, leaves it unassigned);
* Lead ``UPDATE`` of ``Status`` -> ``lead.stage_changed`` (``[salesforce.lead_status_stages]``);
  of ``OwnerId`` -> ``lead.assigned``;
* Opportunity ``CREATE`` -> ``opportunity.created`` with what it carries: the
  owner (when a user owns it), ``Amount`` in the reporting currency -> minor
  units, product and segment from the fields ``[salesforce.opportunity_fields]``
  names (optional);
* Opportunity ``UPDATE`` of ``OwnerId``, ``Amount`` or ``CloseDate`` ->
  ``opportunity.updated`` (the owner when a user, the amount, the expected close);
* Opportunity ``StageName`` (on create or update) -> ``opportunity.stage_changed``,
  or ``opportunity.closed`` when ``[salesforce.opportunity_stages]`` maps it to
  ``won``/``lost``, with the owner and amount when the same event carries them.
  An ``UPDATE`` carries only the changed fields, so a thin close (``StageName``
  alone) names neither: the engine takes them from the deal's record (contract 1.1).

``GAP_*`` events carry only the header: the records must be re-fetched, so they
are reported (reason ``gap``), never guessed. ``DELETE``/``UNDELETE`` and other
entities are ignored.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from adapters.canonical import (
    Gap,
    Incomplete,
    Malformed,
    Mapped,
    event,
    map_parts,
    minor_units,
    need,
    stable_id,
)
from adapters.config import Mappings

SOURCE = "salesforce"


def record_id(ident: str) -> str:
    return f"salesforce-{ident}"


def map_events(body: Any, mappings: Mappings) -> Mapped:
    """``body`` is one parsed change event or a list of them."""
    changes = body if isinstance(body, list) else [body]
    return map_parts(changes, lambda change, out: _map_change(change, mappings, out), orjson.dumps)


def _map_change(change: Any, mappings: Mappings, out: Mapped) -> None:
    header = need(change, "ChangeEventHeader", dict)
    entity = need(header, "entityName", str)
    kind = need(header, "changeType", str)
    ids = need(header, "recordIds", list)
    at_ms = need(header, "commitTimestamp", int)
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise Malformed("recordIds: expected a list of record ids")
    if kind.startswith("GAP_"):
        raise Gap(f"{kind} for {entity} {', '.join(ids)}: re-fetch these records")
    if entity not in ("Lead", "Opportunity") or kind not in ("CREATE", "UPDATE"):
        out.ignored += 1
        return
    fields = header.get("changedFields") or []
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise Malformed("changedFields: expected a list of field names")
    changed = set(fields) if kind == "UPDATE" else set(change)
    # The change's own ids: without them two changes of one record could share event ids.
    key = (need(header, "transactionKey", str), need(header, "sequenceNumber", int))
    events: list[dict[str, Any]] = []
    for ident in ids:

        def new(name: str, **fields: Any) -> None:
            eid = stable_id(SOURCE, ident, *key, kind, name)  # noqa: B023
            events.append(event(name, eid, at_ms, SOURCE, **fields))

        if entity == "Lead":
            _lead(change, kind, changed, record_id(ident), mappings, new)
        else:
            _opportunity(change, kind, changed, record_id(ident), mappings, new)
    if not events:
        out.ignored += 1
    out.events += events


def _owner(change: dict[str, Any], mappings: Mappings) -> str | None:
    """The owner's rep; None when the event names no owner or a queue or group owns it
    (nobody to credit)."""
    owner = change.get("OwnerId")
    if not isinstance(owner, str) or not owner.startswith("005"):
        return None
    return mappings.get("reps.salesforce", owner)


def _lead(
    change: dict[str, Any], kind: str, changed: set[str], lead_id: str, mappings: Mappings, new: Any
) -> None:
    if kind == "CREATE":
        source = change.get("LeadSource")
        if not isinstance(source, str) or not source:
            raise Incomplete("a new lead without LeadSource: its origin is unknown")
        origin = mappings.get("salesforce.lead_source_origins", source)
        new(
            "lead.created",
            lead_id=lead_id,
            origin=origin,
            lead_source=source,
            rep_id=_owner(change, mappings),
        )
        return
    if "Status" in changed:
        stage = mappings.get("salesforce.lead_status_stages", need(change, "Status", str))
        new("lead.stage_changed", lead_id=lead_id, stage=stage)
    if "OwnerId" in changed:
        rep = _owner(change, mappings)
        if rep is not None:
            new("lead.assigned", lead_id=lead_id, rep_id=rep)


def _opportunity(
    change: dict[str, Any],
    kind: str,
    changed: set[str],
    opportunity_id: str,
    mappings: Mappings,
    new: Any,
) -> None:
    owner = _owner(change, mappings) if "OwnerId" in changed else None
    amount = _amount(change) if "Amount" in changed else None
    if kind == "CREATE":
        fields = mappings.tables.get("salesforce.opportunity_fields", {})
        described = {
            name: value
            for name in ("product", "segment")
            if name in fields and isinstance(value := change.get(fields[name]), str) and value
        }
        new(
            "opportunity.created",
            opportunity_id=opportunity_id,
            rep_id=owner,
            amount_minor=amount,
            **described,
        )
    else:
        expected = _close_date(change) if "CloseDate" in changed else None
        if owner is not None or amount is not None or expected is not None:
            new(
                "opportunity.updated",
                opportunity_id=opportunity_id,
                rep_id=owner,
                amount_minor=amount,
                expected_close=expected,
            )
    if "StageName" in changed:
        stage = mappings.get("salesforce.opportunity_stages", need(change, "StageName", str))
        if stage in ("won", "lost"):
            new(
                "opportunity.closed",
                opportunity_id=opportunity_id,
                outcome=stage,
                rep_id=owner,
                amount_minor=amount,
            )
        else:
            new("opportunity.stage_changed", opportunity_id=opportunity_id, stage=stage)


def _amount(change: dict[str, Any]) -> int | None:
    """``Amount`` in minor units; None when the event carries none (or nulls it)."""
    amount = change.get("Amount")
    return None if amount is None else minor_units(amount, "Amount")


def _close_date(change: dict[str, Any]) -> str | None:
    """``CloseDate`` (a date, ``2026-12-31``) as midnight UTC of that day; None when the event
    has none or one in another form (a relay may send epoch days): no KPI reads it, so it
    never costs the change its other events."""
    value = change.get("CloseDate")
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return f"{date.fromisoformat(value).isoformat()}T00:00:00Z"
    except ValueError:
        return None
