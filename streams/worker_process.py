"""Run `salespulse worker` as a child process, as a user starts it (demo, tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from config.reader_access import reader_headers
from config.settings import Settings
from streams.watch import Snapshot, scrape


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, cwd: Path | None = None) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.cwd = cwd  # the checkout whose code runs (benchmarks.compare): this one if None
        self.process: subprocess.Popen[bytes] | None = None
        port = self.env.get("SALESPULSE_WORKER_METRICS_PORT", "9466")
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"

    def start(self, timeout: float = 60.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Readiness is judged on what this run writes, not on an earlier run's lines.
        since = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the worker exited with code {self.process.returncode}; see {self.log_path}"
                )
            try:
                if self.metrics().agent_starts >= 1 and b"[^Worker]: Ready" in self.log()[since:]:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the worker was not ready after {timeout:.0f}s; see {self.log_path}")

    def metrics(self) -> Snapshot:
        token = self.env.get("SALESPULSE_READER_TOKEN_FILE")
        if not token:
            return scrape(self.metrics_url)
        headers = reader_headers(Settings(reader_token_file=token))
        return scrape(urllib.request.Request(self.metrics_url, headers=headers))

    def peak_rss_bytes(self) -> int:
        """The worker's peak resident memory (VmHWM), read from /proc."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def log(self) -> bytes:
        return self.log_path.read_bytes()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, as in a crash or an OOM kill."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
