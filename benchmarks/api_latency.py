"""Query API latency: p50 and p99 of /api/v1/kpis for one team and window, 20 clients at once.

    python -m benchmarks.api_latency [--partitions 12,48] [--reps 1000] [--clients 20]
                                     [--seconds 15] [--window today]

For each partition count: projects a day of ``--reps`` reps in 20 teams (as
benchmarks.scrape does), starts ``salespulse exporter`` as a process of its own on a
free port, then ``--clients`` clients each ask for every KPI of one team (a different
team per client) and window, one request after the other, for ``--seconds``. Prints
requests/s and the latency percentiles seen by the clients, and the exporter's CPU
per request. Uses the local stack's Redis (started if needed); cleans up after itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import urllib.request
from pathlib import Path

import aiohttp

from benchmarks import numbers, positive
from benchmarks.scrape import TEAMS, projected, redis_up
from benchmarks.soak import Child, free_port, wait_until
from benchmarks.throughput import worker_environment
from config.settings import Settings
from projections.windows import WINDOWS


async def _clients(port: int, clients: int, seconds: float, window: str) -> list[float]:
    """Every request's latency (s) of ``clients`` clients asking one after the other."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        url = f"http://127.0.0.1:{port}/api/v1/kpis?scope=team&id=team-{n % TEAMS}&window={window}"
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"{url}: HTTP {response.status}")
            latencies.append(time.perf_counter() - started)

    limit = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=limit) as session:
        await asyncio.gather(*(client(n, session) for n in range(clients)))
    return latencies


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(
    base: Settings, partitions: int, reps: int, clients: int, seconds: float, window: str
) -> tuple[int, float, float, float, float]:
    async with projected(base, reps, partitions) as settings:
        port = free_port()
        env = {**worker_environment(settings), "SALESPULSE_EXPORTER_PORT": str(port)}
        log = Path(settings.stack_dir) / f"{settings.topic_prefix}-exporter.log"
        exporter = Child("exporter", env, log)
        exporter.start()
        try:
            health = f"http://127.0.0.1:{port}/api/v1/health"
            wait_until(
                lambda: urllib.request.urlopen(health, timeout=5).status == 200,
                60,
                "the exporter",
                exporter,
            )
            await _clients(port, clients, 2.0, window)  # warm: connections, the directory
            cpu = _cpu_seconds(exporter.pid)
            latencies = await _clients(port, clients, seconds, window)
            cpu = _cpu_seconds(exporter.pid) - cpu
        finally:
            exporter.stop()
    cuts = statistics.quantiles(latencies, n=100)
    return len(latencies), len(latencies) / seconds, cuts[49], cuts[98], cpu / len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=numbers, default=[12, 48])
    parser.add_argument("--reps", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=positive, default=15.0)
    parser.add_argument("--window", choices=WINDOWS, default="today")
    args = parser.parse_args()
    base = Settings.from_env()
    redis_up(base)
    print(
        f"/api/v1/kpis?scope=team&window={args.window}: {args.clients} clients, "
        f"{args.reps:,} reps in {TEAMS} teams, {args.seconds:.0f} s each"
    )
    print(f"{'partitions':>10}{'requests':>10}{'req/s':>8}{'p50':>11}{'p99':>11}{'CPU/req':>11}")
    for partitions in args.partitions:
        count, rate, p50, p99, cpu = asyncio.run(
            _measure(base, partitions, args.reps, args.clients, args.seconds, args.window)
        )
        print(
            f"{partitions:>10}{count:>10,}{rate:>8,.0f}{p50 * 1000:>8,.1f} ms"
            f"{p99 * 1000:>8,.1f} ms{cpu * 1000:>8,.2f} ms"
        )


if __name__ == "__main__":
    main()
