"""What one entity record adds to the aggregates: a pure function of the record alone.

An item is ``(scope, scope_id, zone, anchor_ms, field) -> value``. The engine
diffs a record's items before and after a batch and writes the difference to
every bucket of the anchor; an anchor of ``GAUGE`` means "current state", kept
in one bucket outside time. Most fields are credited to the org, a team and a
rep at once: those are kept as one *credit* ``(rep, team, zone, anchor_ms,
field)`` (``Found.credits``) until the engine writes them, a third of the
entries to build and diff (``Found.items`` holds the others).

Base fields (integers) and the KPIs built from them are listed in
docs/kpis.md; ``projections.catalogue`` turns sums of them into KPI values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from projections.entities import SEEN, SEP, UNASSIGNED, Record, unescape, unpack
from projections.lateness import DEFAULT_HORIZON, parse_horizon

GAUGE = -1
CLOSED_STAGES = frozenset({"converted", "unqualified"})

# Fixed histogram bounds (seconds) of kpis.md; "+Inf" is the last bucket.
SALES_CYCLE_BOUNDS = tuple(d * 86_400 for d in (1, 3, 7, 14, 30, 60, 90, 180, 365))
SPEED_TO_LEAD_BOUNDS = (30, 60, 120, 300, 600, 1_800, 3_600, 7_200, 14_400, 28_800, 86_400, 259_200)

Item = tuple[str, str, str, int, str]  # scope, scope id, zone, anchor ms, field
# A field credited to the org (in the org's zone), a team and, unless rep is "", a rep (both
# in the team's zone): rep, team, the team's zone, anchor ms, field.
Credit = tuple[str, str, str, int, str]


@dataclass(frozen=True, slots=True)
class Rules:
    """Configuration that KPI definitions depend on. Changing it needs a rebuild."""

    org_zone: str = "UTC"
    service_level_seconds: int = 20
    follow_up_hours: int = 24
    # Contact-centre queue -> team; a queue not listed credits the answering rep's team.
    queue_teams: tuple[tuple[str, str], ...] = ()
    # Events older than their partition's stream time by more than this are not applied
    # (projections/lateness.py).
    lateness_horizon_ms: int = parse_horizon(DEFAULT_HORIZON)


def histogram_label(value_s: float, bounds: tuple[int, ...]) -> str:
    """The ``le`` label of the first bucket whose bound is at least the value."""
    for bound in bounds:
        if value_s <= bound:
            return str(bound)
    return "+Inf"


def _split(team_zone: str, rules: Rules) -> tuple[str, str]:
    """A record's packed ``team|zone`` (entities.pack): the zone, an IANA name, is last."""
    if not team_zone:
        return UNASSIGNED, rules.org_zone
    found = _SPLIT.get(team_zone)
    if found is None:
        if len(_SPLIT) >= _SPLIT_SIZE:
            _SPLIT.clear()
        team, _, zone = team_zone.rpartition(SEP)
        found = _SPLIT[team_zone] = (unescape(team), zone)
    return found


# Split ``team|zone`` values: a worker sees few (one per team and zone), each many times.
_SPLIT: dict[str, tuple[str, str]] = {}
_SPLIT_SIZE = 10_000


@dataclass(slots=True)
class Found:
    """What a record adds: items, and credits (``Credit``) each standing for three items."""

    items: dict[Item, int] = field(default_factory=dict)
    credits: dict[Credit, int] = field(default_factory=dict)

    def expanded(self, org_zone: str) -> dict[Item, int]:
        """Every item, the credits written out as the org's, the team's and the rep's."""
        out = dict(self.items)
        for (rep, team, zone, at, name), value in self.credits.items():
            for item in credit_items(rep, team, zone, org_zone, at, name):
                out[item] = out.get(item, 0) + value
        return out


def credit_items(rep: str, team: str, zone: str, org_zone: str, at: int, name: str) -> list[Item]:
    """The items one credit stands for."""
    items: list[Item] = [("org", "", org_zone, at, name), ("team", team, zone, at, name)]
    if rep:
        items.append(("rep", rep, zone, at, name))
    return items


@dataclass
class _Items:
    rules: Rules
    found: Found = field(default_factory=Found)

    def add(self, items: Iterable[Item], value: int = 1) -> None:
        found = self.found.items
        for item in items:
            found[item] = found.get(item, 0) + value

    def credit(self, rep: str, team_zone: str, at: int, name: str, value: int = 1) -> None:
        """One field, credited to the org, the rep's team (a record's packed ``team|zone``)
        and the rep."""
        team, zone = _split(team_zone, self.rules)
        credits = self.found.credits
        credit: Credit = (rep, team, zone, at, name)
        credits[credit] = credits.get(credit, 0) + value

    def credit_in(self, rep: str, team: str, zone: str, at: int, name: str, value: int = 1) -> None:
        """One field, credited to the org, a team (in its zone) and the rep."""
        credits = self.found.credits
        credit: Credit = (rep, team, zone, at, name)
        credits[credit] = credits.get(credit, 0) + value


def contributions(kind: str, entity: str, record: Record, rules: Rules) -> dict[Item, int]:
    """Everything the record of entity ``(kind, entity)`` currently adds to the aggregates."""
    return found_in(kind, entity, record, rules).expanded(rules.org_zone)


def found_in(kind: str, entity: str, record: Record, rules: Rules) -> Found:
    """``contributions``, with the credits not yet written out (what the engine diffs)."""
    out = _Items(rules)
    get = record.get
    if kind == "lead" and "c_at" in record:
        at, rep, team = int(record["c_at"]), record["c_rep"], record["c_team"]
        for name in (
            "leads",
            f"leads|origin={record['origin']}",
            f"leads|source={record['source']}",
        ):
            out.credit(rep, team, at, name)
        if record["campaign"]:
            campaign, origin = record["campaign"], f"leads|origin={record['origin']}"
            out.add(
                [
                    ("campaign", campaign, rules.org_zone, at, "leads"),
                    ("campaign", campaign, rules.org_zone, at, origin),
                    ("org", "", rules.org_zone, at, "leads_campaign"),
                ]
            )
        if "t_at" in record:
            speed_ms = max(0, int(record["t_at"]) - at)
            out.credit(rep, team, at, "stl_ms", speed_ms)
            out.credit(
                rep, team, at, f"stl|le={histogram_label(speed_ms / 1000, SPEED_TO_LEAD_BOUNDS)}"
            )
            if speed_ms <= rules.follow_up_hours * 3_600_000:
                out.credit(rep, team, at, "followed_up")
        if "converted" in record:
            out.credit(rep, team, at, "converted_leads")
        stage = get("stage", "new")
        if stage not in CLOSED_STAGES:
            names = ["open_leads", f"stage|{stage}"] + ([] if "t_at" in record else ["untouched"])
            for name in names:
                out.credit(get("owner", rep), get("o_team", team), GAUGE, name)
    elif kind == "opp":
        owner = get("own") or get("c_rep", "")  # (records before contract 1.1 had no "own")
        if "c_at" in record:
            rep = record["c_rep"] or owner
            out.credit(rep, record["c_team"], int(record["c_at"]), "opps_created")
        if "x_at" in record:
            at, rep, team = int(record["x_at"]), record["x_rep"] or owner, record["x_team"]
            if record["outcome"] == "won":
                out.credit(rep, team, at, "won")
                amount = record["amount"] or get("amt", "")
                if amount:
                    out.credit(rep, team, at, "revenue", int(amount))
                else:
                    out.credit(rep, team, at, "won_no_amount")
                if "c_at" in record:
                    cycle_ms = max(0, at - int(record["c_at"]))
                    out.credit(rep, team, at, "cycle_ms", cycle_ms)
                    label = histogram_label(cycle_ms / 1000, SALES_CYCLE_BOUNDS)
                    out.credit(rep, team, at, f"cycle|le={label}")
            else:
                out.credit(rep, team, at, "lost")
    elif kind == "msg" and "s_at" in record:
        at, rep, team = int(record["s_at"]), record["s_rep"], record["s_team"]
        for name in ("sent", "activity|kind=email"):
            out.credit(rep, team, at, name)
        for name in ("opened", "clicked", "replied"):
            if name in record:
                out.credit(rep, team, at, name)
    elif kind == "call" and "s_at" in record:
        _call(record, out)
    for key, counted in record.items():  # most fields are seen events that count nothing
        if counted and key.startswith(SEEN):
            _counted(entity, unpack(counted), out)
    return out.found


def untouched_since(kind: str, record: Record, rules: Rules) -> tuple[list[tuple[str, str]], int]:
    """Scopes in which this lead is open and untouched, and since when (its creation)."""
    if kind != "lead" or "c_at" not in record or "t_at" in record:
        return [], 0
    if record.get("stage", "new") in CLOSED_STAGES:
        return [], 0
    team, _ = _split(record.get("o_team", record["c_team"]), rules)
    owner = record.get("owner", record["c_rep"])
    scopes = [("org", ""), ("team", team)] + ([("rep", owner)] if owner else [])
    return scopes, int(record["c_at"])


def _call(record: Record, out: _Items) -> None:
    get = record.get
    start = int(record["s_at"])
    answered = int(record["a_at"]) if "a_at" in record else None
    if record["direction"] == "outbound":
        rep, team = record["s_rep"], record["s_team"]
        for name in ("outbound", "activity|kind=call"):
            out.credit(rep, team, start, name)
        if answered is not None:
            out.credit(rep, team, start, "connected")
        return
    if not record["queue"]:
        return  # inbound calls outside a queue are not contact-centre traffic
    fields: list[tuple[str, int]] = [("offered", 1)]
    if answered is not None:
        wait_ms = max(0, answered - start)
        fields += [("answered", 1), ("asa_ms", wait_ms), ("asa_n", 1)]
        if wait_ms <= out.rules.service_level_seconds * 1000:
            fields.append(("answered_in_sl", 1))
        if "e_at" in record:
            talk = get("talk", "")
            fields += [
                ("aht_ms", int(talk) if talk else max(0, int(record["e_at"]) - answered)),
                ("aht_n", 1),
            ]
    elif "e_at" in record:
        fields.append(("abandoned", 1))
    # The queue's configured team, else the answering rep's team.
    rep, team = get("a_rep", ""), get("q_team") or get("a_team", "")
    for name, value in fields:
        out.credit(rep, team, start, name, value)
        out.add([("queue", record["queue"], out.rules.org_zone, start, name)], value)


def _counted(entity: str, parts: list[str], out: _Items) -> None:
    """Contributions of events counted one by one (kept in ``!event_id`` fields)."""
    what, at = parts[0], int(parts[1])
    if what == "resp":
        rep, sentiment, team, zone = parts[2:6]
        out.credit_in(rep, team, zone, at, "responses")
        out.credit_in(rep, team, zone, at, f"responses|sentiment={sentiment}")
    elif what in ("held", "no_show"):
        rep, team, zone = parts[2:5]
        out.credit_in(rep, team, zone, at, "meetings_held" if what == "held" else "no_shows")
        if what == "held":
            out.credit_in(rep, team, zone, at, "activity|kind=meeting")
    elif what == "spend":
        zone = out.rules.org_zone
        out.add(
            [("org", "", zone, at, "spend"), ("campaign", entity, zone, at, "spend")], int(parts[2])
        )
