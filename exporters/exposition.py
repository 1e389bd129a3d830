"""The Prometheus text format (0.0.4), written for scrapes of 100k series.

prometheus_client's ``generate_latest`` re-validates and escapes every label name of every
sample (about 6 µs a sample); a scrape of a thousand reps has tens of thousands of samples.
The KPI families are therefore written as text from the start (``TextFamily``: one line per
sample, each answer's labels formatted once); the few other families (health, the exporter's
own) stay prometheus_client ``*MetricFamily`` objects, which ``render`` writes in the same
format, escaping only label values that need it. Unit tests check that both parse as
prometheus_client's own rendering does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import Metric

# The families this project builds: everything else would need OpenMetrics-only handling.
SUPPORTED_TYPES = {"gauge", "counter", "histogram"}


@dataclass
class TextFamily:
    """A gauge or histogram family as the lines of its samples, already in the text format
    (``name{labels} value``, each ending in a newline; see ``label_text`` and ``number``)."""

    name: str
    type: str
    documentation: str
    lines: list[str] = field(default_factory=list)


def label_text(names: Sequence[str], values: Sequence[str]) -> str:
    """``name="value",...`` for the braces of a sample line, values escaped."""
    return ",".join(f'{k}="{escape(v)}"' for k, v in zip(names, values, strict=True))


def render(families: Iterable[Metric | TextFamily]) -> bytes:
    out: list[str] = []
    append = out.append
    # Families share label dicts between samples: format each dict once (ids are stable while
    # the families are alive, which they are for this whole call).
    formatted: dict[int, str] = {}
    families = list(families)
    for family in families:
        if family.type not in SUPPORTED_TYPES:
            raise ValueError(f"{family.name}: cannot render a {family.type} family")
        name = f"{family.name}_total" if family.type == "counter" else family.name
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        append(f"# HELP {name} {doc}\n# TYPE {name} {family.type}\n")
        if isinstance(family, TextFamily):
            out += family.lines
            continue
        for sample in family.samples:
            if sample.timestamp is not None:
                raise ValueError(f"{sample.name}: samples with timestamps are not rendered")
            if sample.labels:
                pairs = formatted.get(id(sample.labels))
                if pairs is None:
                    pairs = label_text(list(sample.labels), list(sample.labels.values()))
                    formatted[id(sample.labels)] = pairs
                append(f"{sample.name}{{{pairs}}} {number(sample.value)}\n")
            else:
                append(f"{sample.name} {number(sample.value)}\n")
    return "".join(out).encode()


def escape(value: str) -> str:
    """A label value as the text format quotes it."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def number(value: float) -> str:
    """A sample's value as the text format writes it (an integer as its digits: Prometheus
    reads them as the same float64 as ``float(value)``)."""
    if type(value) is int:
        return str(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    return repr(float(value))
