"""Engine health from the projections' checkpoints (and the topics' end offsets). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from projections.stores import APPLIED, REFILL, TOO_LATE

# Projections are stale when records wait and nothing was committed for this long (the
# default of SALESPULSE_STALE_AFTER_SECONDS).
STALE_AFTER_SECONDS = 60


@dataclass(frozen=True)
class Health:
    offsets: dict[tuple[str, int], int]  # last applied offset per (topic, partition)
    lag: dict[tuple[str, int], int] | None  # records not yet applied; None: Kafka unreachable
    newest_event_age_seconds: float | None  # now - occurred_at of the newest applied event
    last_commit_age_seconds: float | None  # now - wall time of the last commit
    stale_after_seconds: float = STALE_AFTER_SECONDS
    # (topic, partition) whose records the projections lost and apply again, or never had
    refilling: list[tuple[str, int]] = field(default_factory=list)
    rebuild: dict[str, Any] | None = None  # the running rebuild (namespaces.rebuilding)
    too_late: int = 0  # events passed as beyond the lateness horizon, ever (dead-lettered)
    events: int = 0  # distinct events applied, ever
    leads: int = 0  # leads created, ever (the org's all-time count)
    redis_used_bytes: int | None = None  # Redis used_memory (None: not known)
    unfolded: int = 0  # (partition, rollup shard) pairs whose commits reads do not show yet

    @property
    def total_lag(self) -> int | None:
        return None if self.lag is None else sum(self.lag.values())

    @property
    def status(self) -> str:
        """``refilling`` (the projections lost records and apply them again: numbers are
        partial), ``folding`` (commits are folded into the rollups again after a failed fold
        or a failover: partial), ``unknown`` (no Kafka), ``stale`` (records wait, no recent
        commit), ``rebuilding`` (a rebuild runs; the numbers are the live generation's), or
        ``ok``."""
        if self.refilling:
            return "refilling"
        if self.unfolded:
            return "folding"
        if self.lag is None:
            return "unknown"
        waiting = bool(self.total_lag)
        age = self.last_commit_age_seconds
        if waiting and (age is None or age > self.stale_after_seconds):
            return "stale"
        return "rebuilding" if self.rebuild else "ok"

    @property
    def live(self) -> bool:
        """Whether the numbers read now are the live ones (not partial, not stale)."""
        return self.status in ("ok", "rebuilding")


def summarise(
    progress: Sequence[Mapping[str, str]],
    ends: Mapping[tuple[str, int], int] | None,
    now_ms: int,
    stale_after_seconds: float = STALE_AFTER_SECONDS,
    rebuild: dict[str, Any] | None = None,
) -> Health:
    """``progress[p]`` is partition p's checkpoint hash; ``ends`` the topics' end offsets."""
    offsets: dict[tuple[str, int], int] = {}
    refilling: set[tuple[str, int]] = set()
    newest = committed = too_late = events = 0
    for partition, fields in enumerate(progress):
        for name, offset in fields.items():
            if name.startswith(REFILL):
                refilling.add((name.removeprefix(REFILL), partition))
            elif not name.startswith("!"):
                offsets[(name, partition)] = int(offset)
        newest = max(newest, int(fields.get("!newest_ms", 0)))
        committed = max(committed, int(fields.get("!committed_ms", 0)))
        too_late += int(fields.get(TOO_LATE, 0))
        events += int(fields.get(APPLIED, 0))
    lag = None
    if ends is not None:
        lag = {}
        for (topic, partition), end in sorted(ends.items()):
            done = offsets.get((topic, partition))
            lag[(topic, partition)] = max(0, end - (done + 1 if done is not None else 0))
            if done is None and end > 0:
                refilling.add((topic, partition))  # records, but nothing of them in Redis
    return Health(
        offsets=offsets,
        lag=lag,
        newest_event_age_seconds=max(0, now_ms - newest) / 1000 if newest else None,
        last_commit_age_seconds=max(0, now_ms - committed) / 1000 if committed else None,
        stale_after_seconds=stale_after_seconds,
        refilling=sorted(refilling),
        rebuild=rebuild,
        too_late=too_late,
        events=events,
    )


STATUSES = ("ok", "rebuilding", "stale", "refilling", "folding", "unknown")


def _footprint(health: Health) -> list[Metric]:
    """Redis memory, and per lead and per event applied (so operators see what state costs;
    docs/capacity.md). Absent while Redis will not say (an ACL without INFO)."""
    used = health.redis_used_bytes
    if used is None:
        return []
    out: list[Metric] = []
    for name, what, count in (
        (
            "salespulse_redis_used_memory_bytes",
            "Redis used_memory (summed over a cluster's masters)",
            1,
        ),
        (
            "salespulse_redis_bytes_per_lead",
            "Redis used_memory per lead created, ever",
            health.leads,
        ),
        (
            "salespulse_redis_bytes_per_event",
            "Redis used_memory per event applied, ever",
            health.events,
        ),
    ):
        if count:
            family = GaugeMetricFamily(name, what)
            family.add_metric([], used / count)
            out.append(family)
    return out


def health_families(health: Health) -> list[Metric]:
    offsets = GaugeMetricFamily(
        "salespulse_projection_checkpoint_offset",
        "Last offset applied to the projections",
        labels=["topic", "partition"],
    )
    for (topic, partition), offset in health.offsets.items():
        offsets.add_metric([topic, str(partition)], float(offset))
    status = GaugeMetricFamily(
        "salespulse_projections_status",
        "1 for the projections' status: ok, rebuilding (numbers still live), stale (records "
        "wait, no commit), refilling (numbers partial: lost records are applied again), unknown",
        labels=["status"],
    )
    for name in STATUSES:
        status.add_metric([name], float(health.status == name))
    live = GaugeMetricFamily(
        "salespulse_projections_live", "1 if the numbers read now are live (not partial or stale)"
    )
    live.add_metric([], float(health.live))
    late = CounterMetricFamily(
        "salespulse_events_too_late",
        "Events beyond the lateness horizon of their partition: dead-lettered as too_late and "
        "applied nowhere (counted with the projections' checkpoints, each once)",
    )
    late.add_metric([], float(health.too_late))
    out: list[Metric] = [offsets, status, live, late, *_footprint(health)]
    if health.lag is not None:
        lag = GaugeMetricFamily(
            "salespulse_consumer_lag",
            "Records on the topic not yet applied to the projections",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in health.lag.items():
            lag.add_metric([topic, str(partition)], float(behind))
        out.append(lag)
    if health.newest_event_age_seconds is not None:
        age = GaugeMetricFamily(
            "salespulse_projection_newest_event_age_seconds",
            "Now minus occurred_at of the newest event applied (event-time freshness)",
        )
        age.add_metric([], health.newest_event_age_seconds)
        out.append(age)
    if health.last_commit_age_seconds is not None:
        since = GaugeMetricFamily(
            "salespulse_projection_last_commit_age_seconds",
            "Now minus the wall time of the last projection commit",
        )
        since.add_metric([], health.last_commit_age_seconds)
        out.append(since)
    return out
