"""Every benchmark script, in a run small enough for the suite, so that none can rot: each must
exit 0 and print its JSON last line with the fields docs/BENCHMARKS.md quotes. The full-size runs
(the figures in docs/BENCHMARKS.md) are too slow for the suite; this is what keeps them runnable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from lookalike_local.embedded_db import EmbeddedPostgres

REPO_ROOT = Path(__file__).resolve().parents[2]


def last_json_line(arguments: list[str], tmp_path: Path, timeout_s: float = 400) -> dict[str, Any]:
    environment = {**os.environ, "LOOKALIKE_DATA_DIR": str(tmp_path / "data")}
    environment.pop("DATABASE_URL", None)  # each script starts or joins its own scratch database
    result = subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, result.stderr[-2000:]
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


@pytest.mark.parametrize(
    ("arguments", "fields"),
    [
        (
            ["scripts/bench_query.py", "--rows", "1500", "--requests", "20", "--ef-search", "64"],
            {"similar_p50_ms", "search_image_p50_ms", "recall_at_10", "sweep"},
        ),
        (
            ["scripts/measure_storage.py", "--rows", "300", "--repeats", "3"],
            {"default_storage", "connection"},
        ),
        (["scripts/measure_category_filter.py", "--rows", "1500", "--queries", "3"], {"results"}),
        (["scripts/bench_cold_start.py", "--rounds", "1"], {"ingest", "query", "migrate"}),
        (
            ["scripts/bench_embed.py", "--rounds", "1", "--cold-starts", "1", "--decode-rounds", "1"],
            {"ort_fp32_ms", "ort_int8_ms", "cold_start_ms"},
        ),
        (["scripts/bench_ingest.py", "--images", "6", "--timeout", "120"], {"images", "model_version"}),
        (["scripts/bench_local_gateway.py", "--requests", "10"], {"variants"}),
        (["scripts/bench_second_model.py", "--rounds", "1"], {"second_total_ms"}),
        (
            ["scripts/bench_suggestions.py", "--rows", "1500", "--rounds", "2"],
            {"categorised_suggest", "uncategorised_suggest", "uncategorised_suggest_over_upsert_p50"},
        ),
        (
            [
                "scripts/bench_scale.py",
                "--rows",
                "2000",
                "--real",
                "sample-photos",
                "--configs",
                "hnsw1280_m16_ef64,pca256_m16_ef64,bq1280_m16_ef64",
                "--ef-search",
                "40",
                "--requests",
                "10",
                "--filtered-requests",
                "5",
                "--photo-requests",
                "10",
                "--shared-buffers",
                "128MB",
                "--maintenance-work-mem",
                "256MB",
            ],
            {
                "rows",
                "build_s",
                "index_mb",
                "recall_at_10",
                "similar_p50_ms",
                "similar_p99_ms",
                "filtered_recall_at_10",
                "config",
                "configs",
                "catalogue",
                "realism",
            },
        ),
        (
            ["scripts/bench_ingest_scaling.py", "--concurrency", "1,2", "--images", "4", "--timeout", "200"],
            {"results", "peak_images_per_s"},
        ),
        (
            [
                "scripts/bench_model_versions.py",
                "--before",
                "6e31b6c",
                "--rows",
                "300",
                "--rounds",
                "1",
                "--queries",
                "5",
                "--writes",
                "2",
            ],
            {"query_p50_ratio_after_before", "write_p50_ratio_after_before"},
        ),
    ],
    ids=lambda value: Path(value[0]).stem if isinstance(value, list) else None,
)
def test_a_small_run_prints_its_json_last_line(
    arguments: list[str], fields: set[str], tmp_path: Path
) -> None:
    scratch = tmp_path
    if Path(arguments[0]).stem == "bench_scale":
        # A short folder of our own, as the embedded_postgres fixture uses: the server's user must
        # reach it and its socket path must stay short.
        scratch = Path(tempfile.mkdtemp(prefix="lookalike-scale-"))
    if "--data-dir" not in arguments and Path(arguments[0]).stem in {
        "bench_query",
        "bench_model_versions",
        "bench_scale",
    }:
        arguments = [*arguments, "--data-dir", str(scratch / "bench")]
    try:
        result = last_json_line(arguments, tmp_path)
    finally:
        # Benchmarks leave their embedded server running for the next run to reuse: not here.
        for pid_file in scratch.rglob("postmaster.pid"):
            EmbeddedPostgres(pid_file.parent).stop()
        if scratch != tmp_path:
            shutil.rmtree(scratch, ignore_errors=True)
    assert fields <= set(result), sorted(result)
    if Path(arguments[0]).stem == "bench_scale":
        # Every config measured, with its recall against exact search, and the set's make-up.
        assert [entry["config"] for entry in result["configs"]] == arguments[
            arguments.index("--configs") + 1
        ].split(",")
        assert all(0.0 <= entry["recall_at_10"] <= 1.0 for c in result["configs"] for entry in c["sweep"])
        assert (
            result["catalogue"]["real_rows"] + result["catalogue"]["synthesised_rows"]
            == result["rows"]
            == 2000
        )
    if Path(arguments[0]).stem == "bench_ingest_scaling":
        assert [entry["workers"] for entry in result["results"]] == [1, 2]
        assert all(entry["peak_connections"] >= 1 for entry in result["results"])


def test_bench_tuned_model_compares_a_second_model_with_the_base(tmp_path: Path) -> None:
    from second_model import build_projected_model

    from lookalike.settings import get_settings

    tuned = build_projected_model(get_settings().model_dir, tmp_path / "projected", dimension=64)
    result = last_json_line(
        ["scripts/bench_tuned_model.py", "--tuned", str(tuned), "--rounds", "1", "--photos", "2"], tmp_path
    )
    assert result["dimension"] == {"base": 1280, "tuned": 64}
    assert result["tuned_over_base"] == pytest.approx(result["tuned_ms"] / result["base_ms"], rel=0.01)
