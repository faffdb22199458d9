"""Cold start of each Lambda function: the init phase (importing the handler module) in a fresh
interpreter, as Lambda's "Init Duration" measures it.

    .venv/bin/python scripts/bench_cold_start.py [--before REV] [--rounds 7]

Each round starts one new Python process per function and tree, imports the function's `app.py`
exactly as Lambda does (its folder and the shared layer's folder on sys.path, MODEL_DIR set), and
reports the milliseconds the import took and the process's peak memory. With `--before REV` the
same is measured, interleaved round by round, on a checkout of REV (a temporary git worktree), so
that both trees share the machine's noise: medians per function and the ratio after / before.
The database is never contacted (the handlers open it lazily). Prints a JSON last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ("ingest", "query", "migrate")

# Runs in the fresh interpreter: time the import of the handler module, check it came from the tree.
PROBE = """
import json, resource, sys, time
started = time.perf_counter()
import app
elapsed = (time.perf_counter() - started) * 1000
import lookalike
assert lookalike.__file__.startswith(sys.argv[1]), lookalike.__file__
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"init_ms": elapsed, "peak_mb": peak_mb}))
"""


def measure(tree: Path, function: str) -> dict[str, float]:
    shared = tree / "layers" / "shared" / "python"
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree / "functions" / function), str(shared)]),
        "MODEL_DIR": str(tree / "layers" / "model" / "model"),
        "POWERTOOLS_SERVICE_NAME": f"lookalike-{function}",
        "POWERTOOLS_METRICS_NAMESPACE": "LookalikeColdStart",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "INFERENCE_THREADS": "1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DATABASE_URL": "postgresql://cold-start@127.0.0.1:9/none",  # never connected at init
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(shared)],
        cwd=tree / "functions" / function,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{tree} {function}: {result.stderr[-2000:]}")
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", metavar="REV", help="also measure this git revision, interleaved")
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()

    trees = {"after": REPO_ROOT}
    worktree: Path | None = None
    if arguments.before:
        worktree = Path(tempfile.mkdtemp(prefix="cold-start-before-"))
        subprocess.run(
            ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(worktree), arguments.before],
            check=True,
            capture_output=True,
        )
        trees = {"before": worktree, "after": REPO_ROOT}
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {function: [] for function in FUNCTIONS} for name in trees
    }
    try:
        for round_index in range(arguments.rounds):
            for function in FUNCTIONS:
                for name, tree in trees.items():
                    samples[name][function].append(measure(tree, function))
            print(f"round {round_index + 1}/{arguments.rounds} done", file=sys.stderr, flush=True)
    finally:
        if worktree is not None:
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(worktree)],
                check=False,
                capture_output=True,
            )

    result: dict[str, Any] = {"rounds": arguments.rounds, "before": arguments.before}
    for function in FUNCTIONS:
        row: dict[str, float] = {}
        for name in trees:
            runs = samples[name][function]
            row[f"{name}_init_ms_p50"] = round(statistics.median(run["init_ms"] for run in runs), 1)
            row[f"{name}_peak_mb_p50"] = round(statistics.median(run["peak_mb"] for run in runs), 1)
        if "before" in trees:
            row["init_ratio_after_before"] = round(row["after_init_ms_p50"] / row["before_init_ms_p50"], 3)
        result[function] = row
        print(f"{function:8} " + "  ".join(f"{key} {value}" for key, value in row.items()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
