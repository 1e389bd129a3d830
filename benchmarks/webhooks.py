"""Webhook throughput and latency: signed Twilio callbacks posted to `salespulse ingest`.

    python -m benchmarks.webhooks [--count N] [--concurrency C]

Uses the local stack (started if needed) with topics of its own, runs the ingest
service as a child process, posts ``count`` signed Twilio status callbacks from
``concurrency`` clients, and prints deliveries/s and the latency percentiles of
the answers (each answered only after Kafka acknowledged, acks=all). The numbers
are for this machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import aiohttp

from config.rate_limits import Limit
from config.settings import Settings
from stack.servers import servers
from streams.rate_limit import RateLimiter, fingerprint
from streams.topics import ensure_topics

TOKEN = "bench-token-0123456789"


def signed(url: str, params: dict[str, str]) -> dict[str, str]:
    data = url + "".join(k + v for k, v in sorted(params.items()))
    digest = hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()
    return {
        "X-Twilio-Signature": base64.b64encode(digest).decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def callbacks(count: int) -> list[dict[str, str]]:
    """Unstamped: each gets its ``Timestamp`` when sent (the service refuses one more than
    5 minutes old, and a long run outlasts that)."""
    statuses = ["ringing", "completed"]
    return [
        {
            "AccountSid": "AC1",
            "CallSid": f"CA{n // 2:032d}",
            "CallStatus": statuses[n % 2],
            "Direction": "inbound",
            "From": "+4930123",
            "To": "+15550100",
            "CallDuration": "60",
        }
        for n in range(count)
    ]


async def post_all(url: str, bodies: list[dict[str, str]], concurrency: int) -> list[float]:
    latencies: list[float] = []
    queue = list(reversed(bodies))

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            params = {**queue.pop(), "Timestamp": _now_rfc2822()}
            started = time.perf_counter()
            async with session.post(
                url, data=urllib.parse.urlencode(params), headers=signed(url, params)
            ) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"answer {response.status}: {await response.text()}")
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if args.count < 1 or args.concurrency < 1:
        parser.error("--count and --concurrency must be at least 1")

    base = Settings.from_env()
    for server in servers(base):
        server.up()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    folder = base.stack_path / prefix
    folder.mkdir(parents=True, exist_ok=True)
    mappings = folder / "mappings.toml"
    mappings.write_text('[queues]\ntwilio = { "+15550100" = "q-emea" }\n')
    env = {
        **os.environ,
        "SALESPULSE_TOPIC_PREFIX": prefix,
        "SALESPULSE_TWILIO_AUTH_TOKEN": TOKEN,
        "SALESPULSE_MAPPINGS_FILE": str(mappings),
        # The service's ceiling, not its Twilio limit (500/s): buckets checked, never empty.
        "SALESPULSE_INGEST_RATE_LIMITS": "twilio=1000000/s:1000000",
    }
    settings = Settings.from_env(env)
    asyncio.run(ensure_topics(settings))
    base_url = f"http://127.0.0.1:{settings.ingest_port}"
    with (folder / "ingest.log").open("wb") as log:
        service = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "ingest"], env=env, stdout=log, stderr=log
        )
    try:
        _wait(base_url, service, folder / "ingest.log")
        bodies = callbacks(args.count)
        asyncio.run(post_all(f"{base_url}/ingest/v1/twilio/voice", bodies[:200], 8))  # warm-up
        started = time.perf_counter()
        latencies = asyncio.run(
            post_all(f"{base_url}/ingest/v1/twilio/voice", bodies, args.concurrency)
        )
        elapsed = time.perf_counter() - started
    finally:
        service.terminate()
        service.wait(timeout=30)
    cuts = statistics.quantiles(latencies, n=100)
    print(f"deliveries        {len(latencies):>10,}")
    print(f"clients           {args.concurrency:>10}")
    print(f"deliveries/s      {len(latencies) / elapsed:>10,.0f}")
    print(f"latency p50       {cuts[49] * 1000:>9.1f} ms")
    print(f"latency p95       {cuts[94] * 1000:>9.1f} ms")
    print(f"latency p99       {cuts[98] * 1000:>9.1f} ms")
    print(f"rate-limit check  {limiter_cost():>9.2f} µs")


def limiter_cost(checks: int = 200_000) -> float:
    """Microseconds per rate-limit check of a delivery (fingerprint and bucket), in this
    process: the limiter's share of each answer's latency."""
    limiter = RateLimiter({"twilio": Limit(1_000_000, 1_000_000)}, time.monotonic)
    started = time.perf_counter()
    for _ in range(checks):
        limiter.take("twilio", fingerprint(TOKEN))
    return (time.perf_counter() - started) / checks * 1e6


def _now_rfc2822() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())


def _wait(url: str, service: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise SystemExit(f"the ingest service exited; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the ingest service did not answer; see {log}")


if __name__ == "__main__":
    main()
