"""Runs `scripts/demo.py` as a subprocess for the end-to-end tests (smoke path, browser)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "scripts" / "demo.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def demo_environment(data_dir: Path) -> dict[str, str]:
    """The test's environment for the demo: its own data folder, the embedded database."""
    environment = dict(os.environ)
    environment["LOOKALIKE_DATA_DIR"] = str(data_dir)
    environment.pop("DATABASE_URL", None)
    return environment


class DemoProcess:
    """`scripts/demo.py --port N` running until stop(); its output is kept for failure messages."""

    def __init__(self, data_dir: Path, port: int, *extra: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self._process = subprocess.Popen(
            [sys.executable, str(DEMO), "--port", str(port), *extra],
            cwd=REPO_ROOT,
            env=demo_environment(data_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:  # noqa: S310 - 127.0.0.1
            return json.loads(response.read())

    def post_json(self, path: str, body: bytes, content_type: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 - 127.0.0.1
            f"{self.url}{path}", data=body, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - 127.0.0.1
            return json.loads(response.read())

    def wait_until_ingested(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the HTTP server, then until every catalogue object is embedded or rejected."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(f"demo exited with {self._process.returncode}:\n{self.output}")
            if any("open http://" in line for line in self.lines):
                status: dict[str, Any] = self.get_json("/local/status")
                if status["uploaded"] and status["pending"] == 0:
                    return status
            time.sleep(0.5)
        raise AssertionError(f"catalogue not ingested after {timeout_s} s:\n{self.output}")

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM (what Ctrl-C does too) and wait: the demo stops everything it started."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            raise
        self._reader.join(5)
        return code
