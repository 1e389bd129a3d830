"""Helpers shared by the integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from projections.catalogue import Figure
from projections.read import read_kpis
from projections.store import Store
from simulator.log import DUPLICATE, VALID, Record
from streams.settings import Settings
from tests.oracle import Oracle

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``salespulse`` as a user would, with ``env`` on top of this environment."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass  # a server not answering yet
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def figures(result: object) -> Any:
    """A KPI result as the plain dict the oracle and ``kpis --json`` use."""
    if isinstance(result, Figure):
        return {
            "value": result.value,
            "numerator": result.numerator,
            "denominator": result.denominator,
        }
    assert isinstance(result, dict)
    return {label: figures(figure) for label, figure in result.items()}


def write_valid_log(records: Sequence[Record], path: Path) -> list[bytes]:
    """Write the valid copies (duplicates included) as the oracle's JSONL log; return them."""
    valid = [r.value for r in records if r.label in (VALID, DUPLICATE)]
    path.write_bytes(b"\n".join(valid) + b"\n")
    return valid


def directory_first(records: Sequence[Record]) -> tuple[list[bytes], list[bytes]]:
    """The log split as a deployment loads it: team and rep upserts first, then the rest."""
    first = [r.label == VALID and b'.upserted"' in r.value for r in records]
    directory = [r.value for r, is_first in zip(records, first, strict=True) if is_first]
    rest = [r.value for r, is_first in zip(records, first, strict=True) if not is_first]
    return directory, rest


async def assert_matches_oracle(
    store: Store,
    settings: Settings,
    oracle: Oracle,
    scopes: Sequence[tuple[str, str]],
    windows: Sequence[str],
    as_of_ms: int,
) -> None:
    partitions = range(settings.partitions)
    view = await store.directory(partitions, settings.rules)
    for scope, scope_id in scopes:
        for window in windows:
            answer = await read_kpis(store, partitions, view, scope, scope_id, window, as_of_ms)
            got = {kpi: figures(result) for kpi, result in answer.kpis.items()}
            assert got == oracle.kpis(scope, scope_id, window, as_of_ms), (scope, window)
