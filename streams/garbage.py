"""How the long-running processes (the worker, a rebuild's replay) collect garbage."""

from __future__ import annotations

import gc

# Allocations between two collections of the youngest generation (CPython's default: 700).
# A batch allocates events, records and deltas by the hundred thousand, nearly all freed by
# their reference counts, so the default collects many times a batch for little.
GC_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect garbage less often, and never look again at what exists now (modules, the
    app: start-up's objects are never garbage)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
