"""Namespace generations of the projections, and the switch from one to the next.

Readers and writers find the live generation in ``<prefix>:current``
(``<prefix>:g1`` when nothing was ever switched). A rebuild fills
``<prefix>:g<N+1>`` from the log, *freezes* the live generation (a flag in each
partition's checkpoint hash, which the commit script refuses to write past),
catches up with the frozen checkpoints, points ``current`` at the new
generation and deletes the old one. Writers that meet the freeze wait for the
switch and continue in the new generation from its checkpoints.
"""

from __future__ import annotations

import re


def pointer(prefix: str) -> str:
    """The key naming the live generation of a topic prefix."""
    return f"{prefix}:current"


def rebuild_marker(prefix: str) -> str:
    return f"{prefix}:rebuilding"


# A rebuild renews its marker this often; one that died leaves it for at most MARKER_SECONDS.
MARKER_SECONDS = 30
# A dropped generation's checkpoints stay as frozen tombstones this long.
TOMBSTONE_SECONDS = 86_400


def next_generation(namespace: str) -> str:
    match = re.fullmatch(r"(.*):g(\d+)", namespace)
    if match is None:
        raise ValueError(f"not a generation name: {namespace!r}")
    return f"{match.group(1)}:g{int(match.group(2)) + 1}"
