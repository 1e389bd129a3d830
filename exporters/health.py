"""Engine health from the projections' checkpoints (and the topics' end offsets). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric


def health_families(
    progress: Sequence[Mapping[str, str]],
    ends: Mapping[tuple[str, int], int] | None,
    now_ms: int,
) -> list[Metric]:
    """``progress[p]`` is partition p's checkpoint hash; ``ends`` the topics' end offsets."""
    offsets = GaugeMetricFamily(
        "salespulse_projection_checkpoint_offset",
        "Last offset applied to the projections",
        labels=["topic", "partition"],
    )
    lag = GaugeMetricFamily(
        "salespulse_consumer_lag",
        "Records on the topic not yet applied to the projections",
        labels=["topic", "partition"],
    )
    newest = committed = 0
    for partition, fields in enumerate(progress):
        for topic, offset in fields.items():
            if not topic.startswith("!"):
                offsets.add_metric([topic, str(partition)], float(offset))
        newest = max(newest, int(fields.get("!newest_ms", 0)))
        committed = max(committed, int(fields.get("!committed_ms", 0)))
    out: list[Metric] = [offsets]
    if ends is not None:
        for (topic, partition), end in sorted(ends.items()):
            done = progress[partition].get(topic) if partition < len(progress) else None
            behind = end - (int(done) + 1 if done is not None else 0)
            lag.add_metric([topic, str(partition)], float(max(0, behind)))
        out.append(lag)
    if newest:
        age = GaugeMetricFamily(
            "salespulse_projection_newest_event_age_seconds",
            "Now minus occurred_at of the newest event applied (event-time freshness)",
        )
        age.add_metric([], max(0, now_ms - newest) / 1000)
        out.append(age)
    if committed:
        since = GaugeMetricFamily(
            "salespulse_projection_last_commit_age_seconds",
            "Now minus the wall time of the last projection commit",
        )
        since.add_metric([], max(0, now_ms - committed) / 1000)
        out.append(since)
    return out
