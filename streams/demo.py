"""``salespulse demo``: the whole flow on this machine, with live counts in the terminal."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import urllib.request

from config.reader_access import reader_headers
from config.settings import Settings
from projections.errors import SalespulseError
from simulator.log import SimConfig, simulate
from stack.servers import servers
from streams.kpis_command import show_kpis
from streams.producer import publish
from streams.topics import ensure_topics
from streams.watch import render
from streams.worker_process import WorkerProcess


def run_demo(settings: Settings, *, count: int, rate: float) -> int:
    print("== stack up ==", flush=True)
    for server in servers(settings):
        print(f"{server.name:<11} {server.address:<28} ready in {server.up():.1f}s", flush=True)
    asyncio.run(ensure_topics(settings))
    print("== worker and exporter ==", flush=True)
    worker = WorkerProcess({}, settings.stack_path / "worker.log")
    exporter = None
    try:
        try:
            worker.start(timeout=90)
        except (RuntimeError, TimeoutError) as exc:
            raise SalespulseError(str(exc)) from None
        exporter = _start_exporter(settings)
        wallboard = f"http://127.0.0.1:{settings.exporter_port}/"
        print(f"wallboard: {wallboard}   (open it now: it updates every second)", flush=True)
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
        values = [r.value for r in records]
        producer = threading.Thread(
            target=lambda: asyncio.run(publish(settings, settings.raw_topic, values, rate=rate)),
            daemon=True,
        )
        baseline = worker.metrics().records
        producer.start()
        clear = "\x1b[2J\x1b[H" if sys.stdout.isatty() else "\n"
        last = (time.monotonic(), baseline)
        while True:
            time.sleep(1)
            snap = worker.metrics()
            now = time.monotonic()
            speed = (snap.records - last[1]) / (now - last[0])
            last = (now, snap.records)
            print(clear + render(snap, speed), flush=True)
            if not producer.is_alive() and snap.records - baseline >= count:
                break
        print("\n== KPIs: org, today ==", flush=True)
        deadline = time.monotonic() + 60
        while sum(worker.metrics().projected.values()) < count - sum(tally.invalid.values()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        show_kpis(settings, "org", "", "today", time.time_ns() // 1_000_000, as_json=False)
        print(
            f"\nall {count:,} records ingested; the generator made "
            f"{sum(tally.invalid.values()):,} invalid and "
            f"{sum(tally.duplicates.values()):,} duplicate records."
        )
        print(
            f"Prometheus: http://127.0.0.1:{settings.prometheus_port}  "
            f"worker metrics: {worker.metrics_url}"
        )
        print(f"Wallboard: {wallboard}   API: {wallboard}api/v1/kpis?scope=team&id=emea")
        print("More: salespulse kpis --scope team --id emea --window week   (or --json)")
        print("The servers keep running: `make down` (salespulse stack down) stops them.")
        if sys.stdin.isatty():
            print("The worker and the wallboard run until you press Ctrl-C.", flush=True)
            try:
                while exporter.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                print()
        return 0
    finally:
        worker.stop()
        if exporter is not None:
            exporter.terminate()
            exporter.wait(timeout=30)


def _start_exporter(settings: Settings) -> subprocess.Popen[bytes]:
    """The exporter (metrics, API, wallboard) as a child process; its log in the stack dir."""
    log = (settings.stack_path / "exporter.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "exporter"], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{settings.exporter_port}/api/v1/health"
    health = urllib.request.Request(url, headers=reader_headers(settings))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SalespulseError(
                f"the exporter exited; see {settings.stack_path / 'exporter.log'}"
            )
        try:
            with urllib.request.urlopen(health, timeout=2):
                return process
        except OSError:
            time.sleep(0.25)
    process.terminate()
    raise SalespulseError(f"the exporter did not answer on {url} within 30 s")
