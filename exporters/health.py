"""Engine health from the projections' checkpoints (and the topics' end offsets). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric

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

    @property
    def total_lag(self) -> int | None:
        return None if self.lag is None else sum(self.lag.values())

    @property
    def status(self) -> str:
        """``ok``, ``stale`` (records wait, no recent commit) or ``unknown`` (no Kafka)."""
        if self.lag is None:
            return "unknown"
        waiting = bool(self.total_lag)
        age = self.last_commit_age_seconds
        if waiting and (age is None or age > self.stale_after_seconds):
            return "stale"
        return "ok"


def summarise(
    progress: Sequence[Mapping[str, str]],
    ends: Mapping[tuple[str, int], int] | None,
    now_ms: int,
    stale_after_seconds: float = STALE_AFTER_SECONDS,
) -> Health:
    """``progress[p]`` is partition p's checkpoint hash; ``ends`` the topics' end offsets."""
    offsets: dict[tuple[str, int], int] = {}
    newest = committed = 0
    for partition, fields in enumerate(progress):
        for topic, offset in fields.items():
            if not topic.startswith("!"):
                offsets[(topic, partition)] = int(offset)
        newest = max(newest, int(fields.get("!newest_ms", 0)))
        committed = max(committed, int(fields.get("!committed_ms", 0)))
    lag = None
    if ends is not None:
        lag = {}
        for (topic, partition), end in sorted(ends.items()):
            done = offsets.get((topic, partition))
            lag[(topic, partition)] = max(0, end - (done + 1 if done is not None else 0))
    return Health(
        offsets=offsets,
        lag=lag,
        newest_event_age_seconds=max(0, now_ms - newest) / 1000 if newest else None,
        last_commit_age_seconds=max(0, now_ms - committed) / 1000 if committed else None,
        stale_after_seconds=stale_after_seconds,
    )


def health_families(health: Health) -> list[Metric]:
    offsets = GaugeMetricFamily(
        "salespulse_projection_checkpoint_offset",
        "Last offset applied to the projections",
        labels=["topic", "partition"],
    )
    for (topic, partition), offset in health.offsets.items():
        offsets.add_metric([topic, str(partition)], float(offset))
    out: list[Metric] = [offsets]
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
