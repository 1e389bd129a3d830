"""Run `salespulse worker` as a real child process, the way a user starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.watch import Snapshot, scrape


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        port = self.env.get("SALESPULSE_WORKER_METRICS_PORT", "9466")
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if self.metrics().agent_starts >= 1 and b"[^Worker]: Ready" in self.log():
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log()[-3000:]!r}")

    def metrics(self) -> Snapshot:
        return scrape(self.metrics_url)

    def log(self) -> bytes:
        return self.log_path.read_bytes()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

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
