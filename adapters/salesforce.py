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
* Opportunity ``CREATE`` -> ``opportunity.created`` (owner, ``Amount`` in the
  reporting currency -> minor units, product and segment from the fields
  ``[salesforce.opportunity_fields]`` names);
* Opportunity ``StageName`` (on create or update) -> ``opportunity.stage_changed``,
  or ``opportunity.closed`` when ``[salesforce.opportunity_stages]`` maps it to
  ``won``/``lost``. A close needs the owner (and, when won, the amount) in the
  same event; an ``UPDATE`` carries only changed fields, so without them it is
  dead-lettered as ``incomplete``.

``GAP_*`` events carry only the header: the records must be re-fetched, so they
are reported (reason ``gap``), never guessed. ``DELETE``/``UNDELETE`` and other
entities are ignored.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from adapters.canonical import Gap, Incomplete, Malformed, Mapped, event, map_parts, need, stable_id
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
    changed = set(header.get("changedFields") or []) if kind == "UPDATE" else set(change)
    key = (header.get("transactionKey"), header.get("sequenceNumber"))
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


def _owner(change: dict[str, Any], mappings: Mappings, required: bool) -> str | None:
    owner = change.get("OwnerId")
    if not isinstance(owner, str) or not owner:
        if required:
            raise Incomplete("OwnerId is not in this change event")
        return None
    if not owner.startswith("005"):  # a queue or group owns it: nobody to credit
        if required:
            raise Incomplete(f"OwnerId {owner} is not a user")
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
            rep_id=_owner(change, mappings, required=False),
        )
        return
    if "Status" in changed:
        stage = mappings.get("salesforce.lead_status_stages", need(change, "Status", str))
        new("lead.stage_changed", lead_id=lead_id, stage=stage)
    if "OwnerId" in changed:
        rep = _owner(change, mappings, required=False)
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
    if kind == "CREATE":
        fields = mappings.tables.get("salesforce.opportunity_fields", {})
        if "product" not in fields or "segment" not in fields:
            raise Incomplete("set [salesforce.opportunity_fields] product and segment")
        product, segment = change.get(fields["product"]), change.get(fields["segment"])
        if (
            not isinstance(product, str)
            or not product
            or not isinstance(segment, str)
            or not segment
        ):
            raise Incomplete(
                f"a new opportunity without {fields['product']} or {fields['segment']}"
            )
        new(
            "opportunity.created",
            opportunity_id=opportunity_id,
            rep_id=_owner(change, mappings, required=True),
            amount_minor=_amount(change, required=True),
            product=product,
            segment=segment,
        )
    if "StageName" in changed:
        stage = mappings.get("salesforce.opportunity_stages", need(change, "StageName", str))
        if stage in ("won", "lost"):
            new(
                "opportunity.closed",
                opportunity_id=opportunity_id,
                outcome=stage,
                rep_id=_owner(change, mappings, required=True),
                amount_minor=_amount(change, required=stage == "won"),
            )
        else:
            new("opportunity.stage_changed", opportunity_id=opportunity_id, stage=stage)


def _amount(change: dict[str, Any], required: bool) -> int | None:
    amount = change.get("Amount")
    if amount is None or isinstance(amount, bool):
        if required:
            raise Incomplete("Amount is not in this change event")
        return None
    try:
        minor = (Decimal(str(amount)) * 100).quantize(Decimal(1))
    except InvalidOperation:
        raise Malformed("Amount: not a number") from None
    if minor < 0:
        raise Malformed("Amount: negative")
    return int(minor)
