"""The local stack end to end: `scripts/demo.py --smoke` as a user runs it (make demo ARGS=--smoke)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_stack_process import DEMO, REPO_ROOT, DemoProcess, demo_environment, free_port

from lookalike_local.catalogue import catalogue

pytestmark = pytest.mark.timeout(600)


def _postgres_running(data_dir: Path) -> bool:
    return (data_dir / "postgres" / "postmaster.pid").exists()


def test_smoke_path_ingests_the_catalogue_and_searches_over_http(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir = tmp_path_factory.mktemp("demo")  # short path: the database's socket lives in it
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(DEMO), "--smoke", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=demo_environment(data_dir),
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-6000:]}"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    objects = catalogue()
    assert summary["uploaded"] == len(objects)
    assert summary["rejected"] == 1  # the deliberately truncated JPEG
    assert summary["embedded"] == len(objects) - 1
    assert summary["pending"] == 0
    assert summary["search_ok"] is True, summary
    assert summary["search_top"][0] == "tabby-cat"
    assert 0 < summary["seconds"] <= seconds
    # Everything the demo started has stopped, the data folder stays for the next run.
    assert not _postgres_running(data_dir)
    assert (data_dir / "postgres" / "PG_VERSION").is_file()


def test_a_second_run_reuses_the_data_folder_and_sigterm_stops_everything(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir = tmp_path_factory.mktemp("demo2")
    first = DemoProcess(data_dir, free_port())
    try:
        status = first.wait_until_ingested(timeout_s=300)
    finally:
        assert first.stop() == 0, first.output
    assert status["embedded"] == len(catalogue()) - 1
    assert not _postgres_running(data_dir), "SIGTERM must stop the embedded PostgreSQL the demo started"

    second = DemoProcess(data_dir, free_port())
    try:
        second.wait_until_ingested(timeout_s=300)
    finally:
        assert second.stop() == 0, second.output
    # Everything embedded before was put back into the (in-memory) bucket without re-ingesting.
    banner = next(line for line in second.lines if "catalogue objects" in line)
    assert f"({len(catalogue()) - 1} already embedded)" in banner, second.output
