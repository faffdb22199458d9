"""What a function loads at cold start: the query function never imports the ingest or backfill
use cases, and the migration function never loads ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import app
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules(function: str) -> set[str]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT / "functions" / function), str(REPO_ROOT / "layers" / "shared" / "python")]
        ),
        "POWERTOOLS_SERVICE_NAME": f"lookalike-{function}",
        "POWERTOOLS_METRICS_NAMESPACE": "LookalikeTest",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT / "functions" / function,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_query_function_loads_no_ingest_or_backfill_code() -> None:
    modules = loaded_modules("query")
    assert "lookalike.search" in modules  # the probe did load the function
    assert not modules & {"lookalike.ingest", "lookalike.backfill"}, sorted(modules & {"lookalike.ingest"})


@pytest.mark.parametrize("heavy", ["onnxruntime", "lookalike.model.embedder"])
def test_the_migration_function_loads_no_model(heavy: str) -> None:
    modules = loaded_modules("migrate")
    assert "lookalike.store" in modules
    assert heavy not in modules
