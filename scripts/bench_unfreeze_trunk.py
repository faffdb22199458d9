"""The frozen trunk of `scripts/tune.py --unfreeze-blocks K`: ONNX Runtime against torch, side by side.

    .venv-export/bin/python scripts/bench_unfreeze_trunk.py [--views 256] [--blocks 2] [--rounds 3]

The unfreeze trainer (scripts/unfreeze_backbone.py) computes the frozen trunk's output for every
training view once, with ONNX Runtime on the trunk's own export. This measures why: both engines
on the same uint8 views (random pixels: convolution cost does not depend on content), alternating
round by round, medians and their ratio; the outputs must agree. The one-time export is timed
apart. Prints a JSON last line.
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
from export_model import MEAN, STD, export_graph, load_network, weights_file
from unfreeze_backbone import TRUNK_CHUNK, Trunk, trunk_features


def torch_trunk_features(trunk: Trunk, views: np.ndarray) -> np.ndarray:
    flat = views.reshape(-1, *views.shape[2:])
    with torch.inference_mode():
        parts = [
            trunk((torch.from_numpy(flat[start : start + TRUNK_CHUNK]).float() - MEAN) / STD)
            for start in range(0, len(flat), TRUNK_CHUNK)
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
    views = np.random.default_rng(0).integers(0, 256, (arguments.views, 1, 3, 224, 224), dtype=np.uint8)
    seconds: dict[str, list[float]] = {"onnxruntime": [], "torch": []}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(arguments.rounds):
        for engine in ("onnxruntime", "torch"):
            started = time.perf_counter()
            if engine == "torch":
                outputs[engine] = torch_trunk_features(trunk, views)
            else:
                outputs[engine] = trunk_features(trunk, views, arguments.threads).flatten(0, 1).numpy()
            seconds[engine].append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as folder:  # the export alone: each ORT round includes one
        started = time.perf_counter()
        export_graph(trunk, torch.zeros(2, 3, 224, 224), Path(folder) / "trunk.onnx", ["trunk"])
        export_seconds = time.perf_counter() - started
    medians = {engine: statistics.median(values) for engine, values in seconds.items()}
    result = {
        "views": arguments.views,
        "blocks": arguments.blocks,
        "threads": arguments.threads,
        "rounds": arguments.rounds,
        "export_seconds": round(export_seconds, 1),
        "median_seconds": {engine: round(value, 2) for engine, value in medians.items()},
        "views_per_second": {engine: round(arguments.views / value, 1) for engine, value in medians.items()},
        "torch_over_onnxruntime": round(medians["torch"] / medians["onnxruntime"], 2),
        "max_abs_difference": float(np.max(np.abs(outputs["torch"] - outputs["onnxruntime"]))),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
