"""Cold-start cost of a second model in the ingest function: what a `building` (or `standby`) model
adds to a container's first batch.

    .venv/bin/python scripts/bench_second_model.py [--second MODEL_DIR] [--variant fp32] [--rounds 7]

Each round starts a fresh interpreter that, as the ingest function does, builds the default
model's session and runs one inference (`get_embedder().warm_up()`: the init phase), then loads
the second model the way `maintained_embedders` does (its card from MODEL_DIR or a subfolder)
and warms it up too. Reported per round: milliseconds for the default model's session and first
inference, the same for the second model, and the process's resident memory after each (MB).
Default second model: the base model's other variant (fp32 when the default is int8), i.e. what
a model layer with a second variant of the same model costs; `--second` names another folder.
INFERENCE_THREADS=1 as in the template. Prints medians and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, time
started = time.perf_counter()
from lookalike.model.card import load_model_card
from lookalike.model.embedder import Embedder, get_embedder
imported = time.perf_counter()
def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024
default = get_embedder()
default.warm_up()
default_done = time.perf_counter()
default_rss = rss_mb()
from pathlib import Path
second = Embedder(load_model_card(Path(sys.argv[1])), variant=sys.argv[2] or None, threads=1)
second.session
session_done = time.perf_counter()
second.warm_up()
second_done = time.perf_counter()
print(json.dumps({
    "default_session_and_warm_up_ms": (default_done - imported) * 1000,
    "second_session_ms": (session_done - default_done) * 1000,
    "second_first_inference_ms": (second_done - session_done) * 1000,
    "second_total_ms": (second_done - default_done) * 1000,
    "rss_after_default_mb": default_rss,
    "rss_after_second_mb": rss_mb(),
}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--second", type=Path, default=REPO_ROOT / "layers" / "model" / "model")
    parser.add_argument(
        "--variant", default="fp32", help="the second model's variant ('' = its card's default)"
    )
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    environment = {**os.environ, "INFERENCE_THREADS": "1"}
    samples: dict[str, list[float]] = {}
    for _ in range(arguments.rounds):
        completed = subprocess.run(
            [sys.executable, "-c", PROBE, str(arguments.second), arguments.variant],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        )
        for key, value in json.loads(completed.stdout.strip().splitlines()[-1]).items():
            samples.setdefault(key, []).append(value)
    summary: dict[str, object] = {key: round(statistics.median(values), 1) for key, values in samples.items()}
    summary["second_model"] = f"{arguments.second.name or arguments.second}:{arguments.variant or 'default'}"
    summary["rounds"] = arguments.rounds
    summary["load_average"] = [round(value, 2) for value in os.getloadavg()]
    for key, value in summary.items():
        print(f"{key}: {value}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
