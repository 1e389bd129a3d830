"""Helpers shared by the integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from config.settings import Settings
from projections.catalogue import Figure
from projections.engine import BatchPlan, DirectoryView
from projections.read import read_kpis
from projections.store import RedisStore
from projections.stores import Commit, Landed, ProjectionStore
from simulator.log import DUPLICATE, VALID, Record
from streams.producer import publish
from streams.worker_process import WorkerProcess
from tests.oracle import Oracle

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


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


def fails_in_one_line(*args: str, env: dict[str, str]) -> str:
    """Run the command; check it failed with exit code 2 and one line; return the line."""
    started = time.monotonic()
    done = cli(*args, env=env)
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("salespulse: error: ")
    assert took < 20, f"{args} took {took:.1f}s"
    return lines[0]


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


async def feed_directory_first(
    worker: WorkerProcess, settings: Settings, records: Sequence[Record], expected: int
) -> float:
    """Publish the simulated log as a deployment loads it (the directory first, projected
    before the rest is sent), wait until ``expected`` events and every lead fact are
    projected, and return the seconds the rest took."""
    directory, rest = directory_first(records)
    await publish(settings, settings.raw_topic, directory)
    wait_for(
        lambda: worker.metrics().projected["applied"] >= len(directory),
        60,
        "the directory to be projected",
    )
    started = time.monotonic()
    await publish(settings, settings.raw_topic, rest)
    wait_for(
        lambda: projections_settled(worker, expected),
        180,
        "every valid event and every lead fact to be projected",
    )
    return time.monotonic() - started


async def assert_matches_oracle(
    store: RedisStore,
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
            answer = await read_kpis(store, view, scope, scope_id, window, as_of_ms)
            got = {kpi: figures(result) for kpi, result in answer.kpis.items()}
            assert got == oracle.kpis(scope, scope_id, window, as_of_ms), (scope, window)


Difference = tuple[str, str, str, str, Any, Any]  # scope, id, window, KPI, engine, oracle


async def differences(
    store: RedisStore,
    partitions: Sequence[int],
    view: DirectoryView,
    oracle: Oracle,
    scopes: Sequence[tuple[str, str]],
    windows: Sequence[str],
    as_of_ms: int,
) -> tuple[list[Difference], int]:
    """Every KPI figure of these scopes and windows that differs from the oracle's, and how
    many figures were compared."""
    found: list[Difference] = []
    compared = 0
    for scope, scope_id in scopes:
        for window in windows:
            answer = await read_kpis(store, view, scope, scope_id, window, as_of_ms)
            got = {kpi: figures(result) for kpi, result in answer.kpis.items()}
            want = oracle.kpis(scope, scope_id, window, as_of_ms)
            for kpi in sorted(set(got) | set(want)):
                compared += 1
                if got.get(kpi) != want.get(kpi):
                    found.append((scope, scope_id, window, kpi, got.get(kpi), want.get(kpi)))
    return found, compared


def projections_settled(worker: WorkerProcess, expected: int) -> bool:
    """The worker has applied ``expected`` events (duplicates included) and every lead fact
    it published."""
    snap = worker.metrics()
    events = snap.projected["applied"] + snap.projected["duplicate"]
    facts = snap.lead_facts["applied"] + snap.lead_facts["duplicate"]
    return events >= expected and facts >= snap.lead_facts["published"]


@contextmanager
def salespulse(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``salespulse`` subcommand running as a child process for the block's duration."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_exporter(process: subprocess.Popen[bytes], port: int, log: Path) -> str:
    """Wait until this exporter (not another one on the port) answers; its base URL."""
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        with urllib.request.urlopen(f"{url}/api/v1/health", timeout=10) as response:
            return bool(response.status == 200)

    wait_for(answers, 30, "the exporter to answer")
    return url


def own_env(stack_env: dict[str, str], targets: Path, text: str, **extra: str) -> dict[str, str]:
    """The stack's settings with a topic prefix of this test's own and a targets file."""
    targets.write_text(text)
    return {
        **stack_env,
        "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "SALESPULSE_TARGETS_FILE": str(targets),
        **extra,
    }


def hypothesis_examples(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """``count`` examples hypothesis generates from ``strategy`` (deterministic), for tests
    that send them through real processes rather than call a function per example."""
    found: list[T] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        found.append(value)

    collect()
    return found


class RecordedProgress:
    """A ``streams.progress.Progress`` that keeps every update and finish it is given."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, int | None, int | None]] = []
        self.finished: list[bool] = []

    def update(self, done: int, position: int | None = None, total: int | None = None) -> None:
        self.updates.append((done, position, total))

    def finish(self, failed: bool = False) -> None:
        self.finished.append(failed)


class Writer:
    """Successive commits of one partition, each continuing the checkpoint of the last (the
    store tests' way of writing plans without a projector)."""

    def __init__(self, store: ProjectionStore, partition: int = 0) -> None:
        self.store, self.partition = store, partition
        self.offset: int | None = None

    async def __call__(self, **plan: object) -> Landed:
        new = (self.offset if self.offset is not None else -1) + 1
        batch = BatchPlan(applied=1, **plan)  # type: ignore[arg-type]
        landed = await self.store.commit(
            [Commit(self.partition, {"events": (self.offset, new)}, batch)]
        )
        if not landed.moved and not landed.out_of_range:
            self.offset = new
        return landed
