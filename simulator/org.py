"""A simulated sales organisation: teams in several time zones, reps, queues, campaigns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

# (team id, name, IANA zone); a larger org cycles through them.
TEAM_TEMPLATES = (
    ("emea", "EMEA", "Europe/Berlin"),
    ("amer-east", "Americas East", "America/New_York"),
    ("amer-west", "Americas West", "America/Los_Angeles"),
    ("apac", "APAC", "Asia/Singapore"),
    ("anz", "ANZ", "Australia/Sydney"),
    ("uki", "UK & Ireland", "Europe/London"),
)


@dataclass(frozen=True, slots=True)
class Team:
    team_id: str
    name: str
    timezone: str
    queue_id: str
    zone: ZoneInfo


@dataclass(frozen=True, slots=True)
class Rep:
    rep_id: str
    name: str
    team: Team


@dataclass(frozen=True, slots=True)
class Org:
    teams: tuple[Team, ...]
    reps: tuple[Rep, ...]
    campaigns: tuple[str, ...]

    def reps_of(self, team: Team) -> tuple[Rep, ...]:
        return tuple(r for r in self.reps if r.team == team)


def build_org(teams: int, reps_per_team: int, campaigns: int) -> Org:
    """Deterministic ids, so that runs with the same size share one directory."""
    built = []
    for i in range(teams):
        team_id, name, zone = TEAM_TEMPLATES[i % len(TEAM_TEMPLATES)]
        if i >= len(TEAM_TEMPLATES):
            team_id, name = f"{team_id}-{i // len(TEAM_TEMPLATES) + 1}", f"{name} {i + 1}"
        built.append(Team(team_id, name, zone, f"q-{team_id}", ZoneInfo(zone)))
    reps = tuple(
        Rep(f"rep-{t.team_id}-{n:03d}", f"Rep {n} ({t.name})", t)
        for t in built
        for n in range(1, reps_per_team + 1)
    )
    return Org(tuple(built), reps, tuple(f"cmp-{n:02d}" for n in range(1, campaigns + 1)))


def activity_weight(team: Team, at_ms: int) -> float:
    """The daily rhythm: how busy a team is at an instant, by its local clock (0-1)."""
    local = datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(team.zone)
    if local.weekday() >= 5:
        return 0.08
    hour = local.hour + local.minute / 60
    if 9 <= hour < 12 or 13 <= hour < 17:
        return 1.0
    if 8 <= hour < 9 or 12 <= hour < 13 or 17 <= hour < 19:
        return 0.6
    return 0.05
