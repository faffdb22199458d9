"""The frozen trunk of `scripts/tune.py --unfreeze-blocks K`: ONNX Runtime against torch, side by side.

    .venv-export/bin/python scripts/bench_unfreeze_trunk.py [--views 256] [--blocks 2] [--rounds 3]

The unfreeze trainer (scripts/unfreeze_backbone.py) computes the frozen trunk's output for every
training view once, with ONNX Runtime on the trunk's own export. This measures why: both engines
on the same uint8 views (random pixels: convolution cost does not depend on content), in turn
within each round, medians and their ratio; the outputs must agree. The export (once per tune
run) is timed apart. Prints a JSON last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from export_model import export_graph, load_network, session, weights_file
from unfreeze_backbone import TRUNK_CHUNK, Trunk, normalised, run_trunk


def torch_trunk_features(trunk: Trunk, flat_views: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        parts = [
            trunk(normalised(flat_views[start : start + TRUNK_CHUNK]))
            for start in range(0, len(flat_views), TRUNK_CHUNK)
        ]
    return torch.cat(parts).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--views", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    trunk = Trunk(load_network(weights_file()), arguments.blocks).eval()
    views = np.random.default_rng(0).integers(0, 256, (arguments.views, 3, 224, 224), dtype=np.uint8)
    seconds: dict[str, list[float]] = {"onnxruntime": [], "torch": []}
    export_seconds: list[float] = []
    outputs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(arguments.rounds):
            started = time.perf_counter()  # the trainer exports once per run
            export_graph(trunk, normalised(views[:2]), Path(folder) / "trunk.onnx", ["trunk"])
            trunk_session = session(Path(folder) / "trunk.onnx", arguments.threads)
            export_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            outputs["onnxruntime"] = run_trunk(trunk_session, views)
            seconds["onnxruntime"].append(time.perf_counter() - started)
            started = time.perf_counter()
            outputs["torch"] = torch_trunk_features(trunk, views)
            seconds["torch"].append(time.perf_counter() - started)
    medians = {engine: statistics.median(values) for engine, values in seconds.items()}
    result = {
        "views": arguments.views,
        "blocks": arguments.blocks,
        "threads": arguments.threads,
        "rounds": arguments.rounds,
        "export_seconds": round(statistics.median(export_seconds), 1),
        "median_seconds": {engine: round(value, 2) for engine, value in medians.items()},
        "views_per_second": {engine: round(arguments.views / value, 1) for engine, value in medians.items()},
        "torch_over_onnxruntime": round(medians["torch"] / medians["onnxruntime"], 2),
        "max_abs_difference": float(np.max(np.abs(outputs["torch"] - outputs["onnxruntime"]))),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
