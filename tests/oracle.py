"""An independent batch computation of the KPI catalogue, in SQL (DuckDB), over a JSONL event log.

Written from ../shared/kpis.md and docs/windows.md, not from the projection
code, which it never imports. It sees the whole log at once: duplicates are
dropped by ``event_id``, "latest" means the greatest ``(occurred_at,
event_id)``, and a rep's team at an instant is the team of the rep's latest
``rep.upserted`` not after it.

The lateness horizon (docs/lateness.md) comes first: an event more than the horizon
older than the newest event before it on its Kafka partition is left out (and listed in
``late``). The log's order is the order its records reach each partition: the order
they were produced, each keyed by its subject id (events.md). The same rule ends the
life of a call, an email, a meeting, a campaign or a closed opportunity: an event of one
whose newest event is more than the horizon older than the newest event before it on the
partition starts a new one, which the oracle gives event ids (and but for a campaign,
whose id is also a scope's, a subject id) of its own.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
from aiokafka.partitioner import murmur2

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HORIZON_MS = 35 * 24 * 3600 * 1000  # the engine's default, SALESPULSE_LATENESS_HORIZON
# The field holding the subject id (the record key) of each family of event types, as
# events.md defines it.
SUBJECT_OF = {
    "team": "team_id",
    "rep": "rep_id",
    "lead": "lead_id",
    "opportunity": "opportunity_id",
    "email": "message_id",
    "meeting": "meeting_id",
    "call": "call_id",
    "campaign": "campaign_id",
}
# Families whose subjects end by the lateness horizon (see above); an opportunity only
# once it is closed.
ENDING = frozenset({"email", "meeting", "call", "campaign", "opportunity"})
NEXT_LIFE = "\u241f"  # joins a subject id (and event id) to the number of its later life


class _Life:
    """One life of a subject: its newest event, its events so far, and which life it is."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.newest: int | None = None
        self.events: set[str] = set()
        self.closed = False  # (an opportunity's)


def kafka_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record keyed ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class Lateness(NamedTuple):
    kept: list[str]  # lines on time (of a subject's later life: with its ids renamed)
    late: list[str]  # lines too late
    late_at: list[int]  # their places in the log (0: its first line)
    renamed: int  # kept lines of a later life


def apply_horizon(
    log: Path, horizon_ms: int, partitions: int | None, left_out: Collection[str] = ()
) -> Lateness:
    """The log's lines split into on time and too late. With ``partitions`` None the log
    must have no late event even in one global order (the test did not say how the
    records were partitioned): then, per partition, none is late either. Lines in
    ``left_out`` count for lateness (they are in the log) but are in neither list."""
    newest: dict[int, int] = {}
    lives: dict[tuple[str, str], _Life] = {}  # (family, subject) -> its current life
    kept, late, late_at, renamed = [], [], [], 0
    lines = [line for line in log.read_text().split("\n") if line.strip()]  # U+2028 may be in one
    for place, line in enumerate(lines):
        event = json.loads(line)
        # RFC 3339 allows lower-case t and z, and more than the 6 fraction digits Python reads.
        text = re.sub(r"(\.\d{6})\d+", r"\1", event["occurred_at"].upper())
        at = (datetime.fromisoformat(text) - EPOCH) // timedelta(milliseconds=1)
        family = event["type"].split(".")[0]
        subject = event[SUBJECT_OF[family]]
        where = 0 if partitions is None else kafka_partition(subject, partitions)
        before = newest.get(where)
        too_late = before is not None and at < before - horizon_ms
        if not too_late:
            newest[where] = max(newest.get(where, at), at)
        if line in left_out:
            continue
        if too_late:
            late.append(line)
            late_at.append(place)
            continue
        if family in ENDING:
            life = lives.get((family, subject))
            if life is None or (
                before is not None
                and life.newest is not None
                and life.newest < before - horizon_ms
                and (family != "opportunity" or life.closed)
            ):
                life = lives[(family, subject)] = _Life(0 if life is None else life.number + 1)
            if event["event_id"] not in life.events:
                life.events.add(event["event_id"])
                life.newest = at if life.newest is None else max(life.newest, at)
                life.closed |= event["type"] == "opportunity.closed"
            if life.number:
                if family != "campaign":  # a campaign's id is also its KPIs' scope id
                    event[SUBJECT_OF[family]] = f"{subject}{NEXT_LIFE}{life.number}"
                event["event_id"] = f"{event['event_id']}{NEXT_LIFE}{life.number}"
                line = json.dumps(event, ensure_ascii=False)
                renamed += 1
        kept.append(line)
    if (late or renamed) and partitions is None:
        raise ValueError(
            f"{len(late)} event(s) of {log} are beyond the lateness horizon in log order, and "
            f"{renamed} belong to a subject's later life: give the oracle the partition count "
            "to judge them"
        )
    return Lateness(kept, late, late_at, renamed)


COLUMNS = {
    "event_id": "VARCHAR",
    "type": "VARCHAR",
    "occurred_at": "VARCHAR",
    "rep_id": "VARCHAR",
    "team_id": "VARCHAR",
    "timezone": "VARCHAR",
    "lead_id": "VARCHAR",
    "origin": "VARCHAR",
    "lead_source": "VARCHAR",
    "campaign_id": "VARCHAR",
    "stage": "VARCHAR",
    "sentiment": "VARCHAR",
    "opportunity_id": "VARCHAR",
    "amount_minor": "BIGINT",
    "outcome": "VARCHAR",
    "message_id": "VARCHAR",
    "meeting_id": "VARCHAR",
    "call_id": "VARCHAR",
    "direction": "VARCHAR",
    "queue_id": "VARCHAR",
    "talk_ms": "BIGINT",
}

# "Latest" is the event with the greatest (occurred_at, event_id), whole: arg_max skips NULL
# values, so each value goes in a one-element list, and a later event that omits an optional
# field wins with its NULL.
SETUP = """
CREATE TABLE ev AS
SELECT * EXCLUDE (occurred_at), epoch_ms(occurred_at::TIMESTAMPTZ) AS t_ms
FROM raw
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY occurred_at) = 1;

CREATE TABLE rep_team AS
SELECT rep_id, t_ms, event_id, team_id FROM ev WHERE type = 'rep.upserted';

CREATE TABLE team_zone AS
SELECT team_id, arg_max([timezone], (t_ms, event_id))[1] AS zone
FROM ev WHERE type = 'team.upserted' GROUP BY team_id;

-- The team (and its zone) of the rep of each event, at the event's time.
CREATE MACRO credit_team(rep, t) AS COALESCE((
    SELECT arg_max(r.team_id, (r.t_ms, r.event_id)) FROM rep_team r
    WHERE r.rep_id = rep AND r.t_ms <= t), 'unassigned');
CREATE MACRO zone_of(team) AS COALESCE(
    (SELECT zone FROM team_zone z WHERE z.team_id = team), getvariable('org_zone'));

-- A touch is an outbound call by a rep, a sent email or a held meeting on the lead.
CREATE TABLE touches AS
SELECT lead_id, min(t_ms) AS first_touch FROM ev
WHERE lead_id IS NOT NULL AND (
    (type = 'call.started' AND direction = 'outbound' AND rep_id IS NOT NULL)
    OR type IN ('email.sent', 'meeting.held'))
GROUP BY lead_id;

CREATE TABLE leads AS
WITH created AS (
    SELECT lead_id, arg_max([t_ms], (t_ms, event_id))[1] AS t_ms,
           arg_max([rep_id], (t_ms, event_id))[1] AS rep,
           arg_max([origin], (t_ms, event_id))[1] AS origin,
           arg_max([lead_source], (t_ms, event_id))[1] AS source,
           arg_max([campaign_id], (t_ms, event_id))[1] AS campaign
    FROM ev WHERE type = 'lead.created' GROUP BY lead_id),
owner AS (
    SELECT lead_id, arg_max([rep_id], (t_ms, event_id))[1] AS rep,
           arg_max([t_ms], (t_ms, event_id))[1] AS t_ms
    FROM ev WHERE type IN ('lead.created', 'lead.assigned') GROUP BY lead_id),
stage AS (
    SELECT lead_id, arg_max([stage], (t_ms, event_id))[1] AS stage
    FROM ev WHERE type = 'lead.stage_changed' GROUP BY lead_id)
SELECT c.*, credit_team(c.rep, c.t_ms) AS team, o.rep AS owner,
       credit_team(o.rep, o.t_ms) AS owner_team, COALESCE(s.stage, 'new') AS stage,
       t.first_touch,
       lead_id IN (SELECT lead_id FROM ev WHERE type = 'opportunity.created') AS converted
FROM created c JOIN owner o USING (lead_id) LEFT JOIN stage s USING (lead_id)
LEFT JOIN touches t USING (lead_id);

-- A deal's owner and amount: the latest value any of its created, updated (and, for the
-- owner, stage) events gives; a close or creation that names no rep (or no amount) uses them.
CREATE TABLE opps AS
WITH created AS (
    SELECT opportunity_id, arg_max([t_ms], (t_ms, event_id))[1] AS c_at,
           arg_max([rep_id], (t_ms, event_id))[1] AS c_rep
    FROM ev WHERE type = 'opportunity.created' GROUP BY opportunity_id),
closed AS (
    SELECT opportunity_id, arg_max([t_ms], (t_ms, event_id))[1] AS x_at,
           arg_max([rep_id], (t_ms, event_id))[1] AS x_rep,
           arg_max([outcome], (t_ms, event_id))[1] AS outcome,
           arg_max([amount_minor], (t_ms, event_id))[1] AS amount
    FROM ev WHERE type = 'opportunity.closed' GROUP BY opportunity_id),
owner AS (
    SELECT opportunity_id, arg_max(rep_id, (t_ms, event_id)) AS owner
    FROM ev WHERE type IN ('opportunity.created', 'opportunity.updated',
                           'opportunity.stage_changed') AND rep_id IS NOT NULL
    GROUP BY opportunity_id),
amount AS (
    SELECT opportunity_id, arg_max(amount_minor, (t_ms, event_id)) AS amount
    FROM ev WHERE type IN ('opportunity.created', 'opportunity.updated')
              AND amount_minor IS NOT NULL
    GROUP BY opportunity_id),
known AS (
    SELECT COALESCE(c.opportunity_id, x.opportunity_id) AS opportunity_id, c.c_at,
           COALESCE(c.c_rep, o.owner) AS c_rep, x.x_at, COALESCE(x.x_rep, o.owner) AS x_rep,
           x.outcome, COALESCE(x.amount, a.amount) AS amount
    FROM created c FULL JOIN closed x USING (opportunity_id)
    LEFT JOIN owner o ON o.opportunity_id = COALESCE(c.opportunity_id, x.opportunity_id)
    LEFT JOIN amount a ON a.opportunity_id = COALESCE(c.opportunity_id, x.opportunity_id))
SELECT opportunity_id, c_at, c_rep, credit_team(c_rep, c_at) AS c_team, x_at, x_rep,
       credit_team(x_rep, x_at) AS x_team, outcome, amount
FROM known;

CREATE TABLE messages AS
SELECT message_id,
       (arg_max([t_ms], (t_ms, event_id)) FILTER (WHERE type = 'email.sent'))[1] AS t_ms,
       (arg_max([rep_id], (t_ms, event_id)) FILTER (WHERE type = 'email.sent'))[1] AS rep,
       bool_or(type = 'email.opened') AS opened, bool_or(type = 'email.clicked') AS clicked,
       bool_or(type = 'email.replied') AS replied
FROM ev WHERE type LIKE 'email.%' GROUP BY message_id;

CREATE TABLE calls AS
SELECT call_id,
       (arg_max([t_ms], (t_ms, event_id)) FILTER (WHERE type = 'call.started'))[1] AS s_at,
       (arg_max([direction], (t_ms, event_id)) FILTER (WHERE type = 'call.started'))[1]
           AS direction,
       (arg_max([queue_id], (t_ms, event_id)) FILTER (WHERE type = 'call.started'))[1] AS queue,
       (arg_max([rep_id], (t_ms, event_id)) FILTER (WHERE type = 'call.started'))[1] AS s_rep,
       (arg_min([t_ms], (t_ms, event_id)) FILTER (WHERE type = 'call.answered'))[1] AS a_at,
       (arg_min([rep_id], (t_ms, event_id)) FILTER (WHERE type = 'call.answered'))[1] AS a_rep,
       (arg_max([t_ms], (t_ms, event_id)) FILTER (WHERE type = 'call.ended'))[1] AS e_at,
       -- talk time: of the latest end that reports one
       arg_max(talk_ms, (t_ms, event_id))
           FILTER (WHERE type = 'call.ended' AND talk_ms IS NOT NULL) AS talk
FROM ev WHERE type LIKE 'call.%' GROUP BY call_id;

-- Every credited fact: one row per (thing counted, scope it is credited to).
CREATE TABLE facts (what VARCHAR, t_ms BIGINT, scope VARCHAR, id VARCHAR, zone VARCHAR,
                    label VARCHAR, v BIGINT, w BIGINT);
"""

# Per-rep facts are credited three times: to the org, the rep's team and the rep.
CREDIT = """
INSERT INTO facts
WITH base(what, t_ms, rep, team, label, v, w) AS ({select})
SELECT what, t_ms, 'org', '', getvariable('org_zone'), label, v, w FROM base
UNION ALL SELECT what, t_ms, 'team', team, zone_of(team), label, v, w FROM base
UNION ALL SELECT what, t_ms, 'rep', rep, zone_of(team), label, v, w FROM base
WHERE rep IS NOT NULL AND rep <> ''
"""

CREDITED = [
    # what, t_ms, rep, team, label, v, w
    "SELECT 'lead' AS what, t_ms, rep, team, origin AS label, 1 AS v, 0 AS w FROM leads",
    "SELECT 'lead_source', t_ms, rep, team, source, 1, 0 FROM leads",
    "SELECT 'stl', t_ms, rep, team, NULL, greatest(0, first_touch - t_ms), "
    "CASE WHEN first_touch - t_ms <= 24 * 3600 * 1000 THEN 1 ELSE 0 END "
    "FROM leads WHERE first_touch IS NOT NULL",
    "SELECT 'converted', t_ms, rep, team, NULL, 1, 0 FROM leads WHERE converted",
    "SELECT 'response', t_ms, rep_id, credit_team(rep_id, t_ms), sentiment, 1, 0 FROM ev "
    "WHERE type = 'lead.responded'",
    "SELECT 'opp_created', c_at, c_rep, c_team, NULL, 1, 0 FROM opps WHERE c_at IS NOT NULL",
    "SELECT 'closed', x_at, x_rep, x_team, outcome, amount, "
    "CASE WHEN outcome = 'won' AND c_at IS NOT NULL THEN greatest(0, x_at - c_at) END "
    "FROM opps WHERE x_at IS NOT NULL",
    "SELECT 'email', t_ms, rep, credit_team(rep, t_ms), "
    "concat_ws(',', CASE WHEN opened THEN 'opened' END, CASE WHEN clicked THEN 'clicked' END, "
    "CASE WHEN replied THEN 'replied' END), 1, 0 FROM messages WHERE t_ms IS NOT NULL",
    "SELECT 'meeting', t_ms, rep_id, credit_team(rep_id, t_ms), type, 1, 0 FROM ev "
    "WHERE type IN ('meeting.held', 'meeting.no_show')",
    "SELECT 'outbound', s_at, s_rep, credit_team(s_rep, s_at), "
    "CASE WHEN a_at IS NOT NULL THEN 'connected' END, 1, 0 FROM calls "
    "WHERE s_at IS NOT NULL AND direction = 'outbound'",
]

INBOUND = """
CREATE TABLE inbound AS
SELECT call_id, s_at AS t_ms, queue, a_rep AS rep, a_at IS NOT NULL AS answered,
       e_at IS NOT NULL AS ended, greatest(0, a_at - s_at) AS wait,
       CASE WHEN a_at IS NOT NULL AND e_at IS NOT NULL
            THEN COALESCE(talk, greatest(0, e_at - a_at)) END AS handle,
       COALESCE((SELECT q.team FROM queue_team q WHERE q.queue = calls.queue),
                CASE WHEN a_at IS NOT NULL THEN credit_team(a_rep, a_at) END,
                'unassigned') AS team
FROM calls WHERE s_at IS NOT NULL AND direction = 'inbound' AND queue IS NOT NULL;
INSERT INTO facts
WITH base AS (SELECT 'inbound' AS what, t_ms, rep, team, queue,
                     concat_ws(',', CASE WHEN answered THEN 'answered' END,
                               CASE WHEN ended AND NOT answered THEN 'abandoned' END) AS label,
                     wait AS v, handle AS w FROM inbound)
SELECT what, t_ms, 'org', '', getvariable('org_zone'), label, v, w FROM base
UNION ALL SELECT what, t_ms, 'team', team, zone_of(team), label, v, w FROM base
UNION ALL SELECT what, t_ms, 'rep', rep, zone_of(team), label, v, w FROM base WHERE rep IS NOT NULL
UNION ALL SELECT what, t_ms, 'queue', queue, getvariable('org_zone'), label, v, w FROM base;
INSERT INTO facts
SELECT 'lead', t_ms, 'campaign', campaign, getvariable('org_zone'), origin, 1, 0
FROM leads WHERE campaign IS NOT NULL
UNION ALL SELECT 'campaign_lead', t_ms, 'org', '', getvariable('org_zone'), NULL, 1, 0
FROM leads WHERE campaign IS NOT NULL
UNION ALL SELECT 'spend', t_ms, 'campaign', campaign_id, getvariable('org_zone'), NULL,
                 amount_minor, 0 FROM ev WHERE type = 'campaign.spend'
UNION ALL SELECT 'spend', t_ms, 'org', '', getvariable('org_zone'), NULL, amount_minor, 0
FROM ev WHERE type = 'campaign.spend';
"""

UNITS = {
    "15m": (60_000, 15),
    "1h": (60_000, 60),
    "24h": (3_600_000, 24),
    "7d": (86_400_000, 7),
    "30d": (86_400_000, 30),
}
CALENDAR = {"today": "day", "week": "week", "month": "month", "quarter": "quarter", "year": "year"}


def _figure(value: Any, numerator: int, denominator: int | None) -> dict[str, Any]:
    return {"value": value, "numerator": numerator, "denominator": denominator}


def _ratio(top: int, bottom: int, scale: float = 1.0) -> dict[str, Any]:
    return _figure(top / bottom / scale if bottom else None, top, bottom)


class Oracle:
    def __init__(
        self,
        log: Path,
        org_zone: str = "UTC",
        service_level_seconds: int = 20,
        queue_teams: dict[str, str] | None = None,
        *,
        horizon_ms: int | None = HORIZON_MS,
        partitions: int | None = None,
        left_out: Collection[str] = (),
    ) -> None:
        """``horizon_ms`` None: every event counts (a test that takes the engine's own
        too-late dead letters out of the log first). ``left_out``: lines that count for
        lateness but for no KPI (those the engine dead-lettered as unprocessable)."""
        self.late: list[str] = []  # the log's events beyond the horizon
        self.late_at: list[int] = []  # where they are in it
        if horizon_ms is not None:
            kept, self.late, self.late_at, renamed = apply_horizon(
                log, horizon_ms, partitions, left_out
            )
            if self.late or left_out or renamed:
                self._kept = tempfile.NamedTemporaryFile("w", suffix=".jsonl")  # noqa: SIM115
                self._kept.write("".join(line + "\n" for line in kept))
                self._kept.flush()
                log = Path(self._kept.name)
        self.db = duckdb.connect()
        self._lead_states: dict[tuple[str, str], tuple[int, int | None, dict[str, Any]]] = {}
        self.db.execute("CREATE TABLE queue_team (queue VARCHAR, team VARCHAR)")
        for queue, team in (queue_teams or {}).items():
            self.db.execute("INSERT INTO queue_team VALUES (?, ?)", [queue, team])
        self.sl_ms = service_level_seconds * 1000
        self.db.execute(f"SET VARIABLE org_zone = '{org_zone}'")
        self.db.execute("SET TimeZone = 'UTC'")
        self.db.execute(
            "CREATE TABLE raw AS SELECT * FROM read_json(?, format = 'newline_delimited', "
            "columns = ?)",
            [str(log), COLUMNS],
        )
        self.db.execute(SETUP)
        for select in CREDITED:
            self.db.execute(CREDIT.format(select=select))
        self.db.execute(INBOUND)

    def _window_filter(
        self, scope: str, scope_id: str, window: str, as_of_ms: int
    ) -> tuple[str, list[Any]]:
        if window == "all":
            return "TRUE", []
        if window in UNITS:
            size, count = UNITS[window]
            end = (as_of_ms // size + 1) * size
            return "t_ms >= ? AND t_ms < ?", [end - count * size, end]
        # A fact is in the local period of the zone it was credited in (its team's at its
        # time); the window is the period of the scope's zone at as_of that holds as_of. The
        # two zones differ only for a rep who moved to a team in another zone.
        unit = CALENDAR[window]
        reader = {
            "team": "zone_of(?)",
            "rep": "zone_of(credit_team(?, ?))",
        }.get(scope, "getvariable('org_zone')")
        by_scope: dict[str, list[Any]] = {"team": [scope_id], "rep": [scope_id, as_of_ms]}
        reader_params = by_scope.get(scope, [])
        return (
            f"date_trunc('{unit}', timezone(zone, to_timestamp(t_ms / 1000.0))) = "
            f"date_trunc('{unit}', timezone({reader}, to_timestamp(? / 1000.0)))",
            [*reader_params, as_of_ms],
        )

    def distinct_events(self) -> int:
        """Valid events in the log, each ``event_id`` once."""
        row = self.db.execute("SELECT count(*) FROM ev").fetchone()
        assert row is not None
        return int(row[0])

    def kpis(self, scope: str, scope_id: str, window: str, as_of_ms: int) -> dict[str, Any]:
        where, params = self._window_filter(scope, scope_id, window, as_of_ms)
        rows = self.db.execute(
            f"SELECT what, label, count(*), sum(v), sum(w), count(w), "
            f"count(*) FILTER (WHERE v <= {self.sl_ms}), count(v) "
            f"FROM facts WHERE scope = ? AND id = ? AND ({where}) GROUP BY ALL",
            [scope, scope_id, *params],
        ).fetchall()
        n: dict[str, int] = {}
        # Leads per lead source: any text, the empty one and commas included (the label whole).
        sources: dict[str, int] = {}
        revenue = with_amount = 0  # of the won deals; how many of them have a known amount
        for what, label, count, v, w, w_count, in_sl, v_count in rows:
            if what == "lead_source":
                sources[label] = int(count)
            elif what == "closed" and label == "won":
                revenue, with_amount = int(v or 0), int(v_count)
            labels = [what] + [f"{what}:{part}" for part in (label or "").split(",") if part]
            for key in labels:
                n[key] = n.get(key, 0) + count
            n[f"{what}#v"] = n.get(f"{what}#v", 0) + int(v or 0)
            n[f"{what}#w"] = n.get(f"{what}#w", 0) + int(w or 0)
            n[f"{what}#wn"] = n.get(f"{what}#wn", 0) + w_count
            if what == "inbound" and label and "answered" in label.split(","):
                n["inbound#answered_v"] = n.get("inbound#answered_v", 0) + int(v or 0)
                n["inbound#in_sl"] = n.get("inbound#in_sl", 0) + in_sl
        g = n.get
        leads = g("lead", 0)
        won, lost = g("closed:won", 0), g("closed:lost", 0)
        held, no_show = g("meeting:meeting.held", 0), g("meeting:meeting.no_show", 0)
        sent = g("email", 0)
        outbound, offered = g("outbound", 0), g("inbound", 0)
        answered = g("inbound:answered", 0)
        touched = g("stl", 0)
        untouched, oldest, stage_share = self._lead_state(scope, scope_id)
        age = max(0, as_of_ms - oldest) // 1000 if oldest is not None else None
        out: dict[str, Any] = {
            "leads_created": _figure(leads, leads, None),
            "speed_to_lead_seconds": _figure(
                g("stl#v", 0) / 1000 / touched if touched else None, g("stl#v", 0) // 1000, touched
            ),
            "untouched_leads": _figure(untouched, untouched, None),
            "leads_followed_up_ratio": _ratio(g("stl#w", 0), leads),
            "lead_to_opportunity_ratio": _ratio(g("converted", 0), leads),
            "lead_origin_share": {
                o: _ratio(g(f"lead:{o}", 0), leads)
                for o in ("marketing", "sales")
                if g(f"lead:{o}", 0)
            },
            "lead_source_share": {
                source: _ratio(n, leads) for source, n in sorted(sources.items())
            },
            "lead_stage_share": stage_share,
            "response_sentiment_ratio": {
                s: _ratio(g(f"response:{s}", 0), g("response", 0))
                for s in ("negative", "neutral", "positive")
                if g(f"response:{s}", 0)
            },
            "activities": {
                "call": _figure(outbound, outbound, None),
                "email": _figure(sent, sent, None),
                "meeting": _figure(held, held, None),
                "total": _figure(outbound + sent + held, outbound + sent + held, None),
            },
            "opportunities_created": _figure(g("opp_created", 0), g("opp_created", 0), None),
            "win_rate": _ratio(won, won + lost),
            "win_loss_ratio": _ratio(won, lost),
            "revenue_won": _figure(revenue, revenue, None),
            "deals_won_without_amount": _figure(
                won - with_amount,
                won - with_amount,
                None,
            ),
            "average_deal_size": _ratio(revenue, with_amount),
            "sales_cycle_seconds": _figure(
                g("closed#w", 0) / 1000 / g("closed#wn", 0) if g("closed#wn", 0) else None,
                g("closed#w", 0) // 1000,
                g("closed#wn", 0),
            ),
            "email_open_rate": _ratio(g("email:opened", 0), sent),
            "email_click_rate": _ratio(g("email:clicked", 0), sent),
            "email_reply_rate": _ratio(g("email:replied", 0), sent),
            "meeting_attendance_ratio": _ratio(held, held + no_show),
            "calls_offered": _figure(offered, offered, None),
            "calls_answered": _figure(answered, answered, None),
            "calls_abandoned": _figure(g("inbound:abandoned", 0), g("inbound:abandoned", 0), None),
            "abandonment_rate": _ratio(g("inbound:abandoned", 0), offered),
            "average_speed_of_answer_seconds": _ratio(g("inbound#answered_v", 0), answered, 1000),
            "average_handle_time_seconds": _ratio(g("inbound#w", 0), g("inbound#wn", 0), 1000),
            "service_level_ratio": _ratio(g("inbound#in_sl", 0), offered),
            "outbound_calls": _figure(outbound, outbound, None),
            "connect_rate": _ratio(g("outbound:connected", 0), outbound),
        }
        out["oldest_untouched_lead_age_seconds"] = _figure(age, age or 0, None)
        if scope == "org":
            out["cost_per_lead"] = _ratio(g("spend#v", 0), g("campaign_lead", 0))
        elif scope == "campaign":
            out["cost_per_lead"] = _ratio(g("spend#v", 0), leads)
        return out

    def _lead_state(self, scope: str, scope_id: str) -> tuple[int, int | None, dict[str, Any]]:
        """The leads' current state, the same in every window (asked once per scope)."""
        key = (scope, scope_id)
        if key not in self._lead_states:
            self._lead_states[key] = (
                *self._untouched(scope, scope_id),
                self._stage_share(scope, scope_id),
            )
        return self._lead_states[key]

    def _untouched(self, scope: str, scope_id: str) -> tuple[int, int | None]:
        """Open leads without a touch, credited to their owner: how many, oldest creation."""
        column = {"org": "''", "team": "owner_team", "rep": "owner"}.get(scope)
        if column is None:
            return 0, None
        count, oldest = self.db.execute(
            f"SELECT count(*), min(t_ms) FROM leads WHERE stage NOT IN ('converted', "
            f"'unqualified') AND first_touch IS NULL AND {column} = ?",
            [scope_id],
        ).fetchone()  # type: ignore[misc]
        return int(count), oldest

    def _stage_share(self, scope: str, scope_id: str) -> dict[str, Any]:
        """Current state: open leads (not converted, not unqualified) by latest stage."""
        column = {"org": "''", "team": "owner_team", "rep": "owner"}.get(scope)
        if column is None:
            return {}
        rows = self.db.execute(
            f"SELECT stage, count(*) FROM leads WHERE stage NOT IN ('converted', 'unqualified') "
            f"AND {column} = ? GROUP BY stage ORDER BY stage",
            [scope_id],
        ).fetchall()
        total = sum(c for _, c in rows)
        return {stage: _ratio(c, total) for stage, c in rows}
