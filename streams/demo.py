"""``salespulse demo``: the whole flow on this machine, with live counts in the terminal."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

from simulator.log import SimConfig, simulate
from stack.servers import StackError, servers
from streams.producer import publish
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.watch import render, scrape


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    log_path = settings.stack_path / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_for_worker(settings: Settings, worker: subprocess.Popen[bytes], timeout: float) -> None:
    url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise StackError(
                f"the worker exited with code {worker.returncode}; "
                f"see {settings.stack_path / 'worker.log'}"
            )
        try:
            if scrape(url).agent_starts >= 1:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise StackError(f"the worker did not start within {timeout:.0f}s")


def run_demo(settings: Settings, *, count: int, rate: float) -> int:
    print("== stack up ==", flush=True)
    for server in servers(settings):
        print(f"{server.name:<11} {server.address:<28} ready in {server.up():.1f}s", flush=True)
    asyncio.run(ensure_topics(settings))
    print("== worker ==", flush=True)
    worker = start_worker(settings)
    try:
        wait_for_worker(settings, worker, timeout=60)
        records, tally = simulate(
            SimConfig(
                seed=int(time.time()),
                count=count,
                end_ms=time.time_ns() // 1_000_000,
                duplicate_share=0.01,
                late_share=0.02,
                call_disorder_share=0.1,
                invalid_share=0.01,
                max_event_bytes=settings.max_event_bytes,
            )
        )
        print(f"== simulator: {count:,} records at {rate:,.0f}/s ==", flush=True)
        producer = threading.Thread(
            target=lambda: asyncio.run(
                publish(
                    settings.bootstrap, settings.raw_topic, [r.value for r in records], rate=rate
                )
            ),
            daemon=True,
        )
        producer.start()
        url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
        clear = "\x1b[2J\x1b[H" if sys.stdout.isatty() else "\n"
        last = (time.monotonic(), 0.0)
        baseline = scrape(url).records
        while True:
            time.sleep(1)
            snap = scrape(url)
            now = time.monotonic()
            speed = (snap.records - last[1]) / (now - last[0])
            last = (now, snap.records)
            print(clear + render(snap, speed), flush=True)
            if not producer.is_alive() and snap.records - baseline >= count:
                break
        print(
            f"\nall {count:,} records ingested; the generator made "
            f"{sum(tally.invalid.values()):,} invalid and "
            f"{sum(tally.duplicates.values()):,} duplicate records."
        )
        print(f"Prometheus: http://127.0.0.1:{settings.prometheus_port}  worker metrics: {url}")
        print("The servers keep running: `make down` (salespulse stack down) stops them.")
        return 0
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
