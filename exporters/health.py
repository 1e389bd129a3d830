"""Engine health from the projections' checkpoints (and the topics' end offsets). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from projections.stores import REFILL

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

    @property
    def total_lag(self) -> int | None:
        return None if self.lag is None else sum(self.lag.values())

    @property
    def status(self) -> str:
        """``refilling`` (the projections lost records and apply them again: numbers are
        partial), ``unknown`` (no Kafka), ``stale`` (records wait, no recent commit),
        ``rebuilding`` (a rebuild runs; the numbers are the live generation's), or ``ok``."""
        if self.refilling:
            return "refilling"
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
    newest = committed = 0
    for partition, fields in enumerate(progress):
        for name, offset in fields.items():
            if name.startswith(REFILL):
                refilling.add((name.removeprefix(REFILL), partition))
            elif not name.startswith("!"):
                offsets[(name, partition)] = int(offset)
        newest = max(newest, int(fields.get("!newest_ms", 0)))
        committed = max(committed, int(fields.get("!committed_ms", 0)))
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
    )


STATUSES = ("ok", "rebuilding", "stale", "refilling", "unknown")


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
    out: list[Metric] = [offsets, status, live]
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
