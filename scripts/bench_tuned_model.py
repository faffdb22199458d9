"""A tuned model against its base on the query function's per-photo work, side by side in one run.

    .venv/bin/python scripts/bench_tuned_model.py --tuned MODEL_DIR [--rounds 9] [--variant int8]

What a search by photo costs before the database is asked: the upload's bytes decoded by the
production decoder (`lookalike.images.decode_image`, the functions' limits) and embedded by the
production `Embedder` (one thread, as INFERENCE_THREADS=1 in the template), batch 1, on the
sample catalogue's real JPEG and PNG photos. Each round times every photo once with each model,
the order of the two models alternating round by round, so that the shared machine's noise lands
on both alike; medians and the tuned/base ratio are reported. A tuned model is the base graph plus
a projection head: the ratio says what the head adds. (The nearest-neighbour statement's cost by
dimension is in docs/SCALING.md.) Prints one JSON line last:
{"base_ms", "tuned_ms", "tuned_over_base", "base_model", "tuned_model", "dimension", "rounds", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from lookalike.images import decode_image
from lookalike.model.card import load_model_card
from lookalike.model.embedder import Embedder
from lookalike.settings import get_settings
from lookalike_local.catalogue import catalogue

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE_MODEL_DIR = REPO_ROOT / "layers" / "model" / "model"


def per_photo_ms(embedder: Embedder, uploads: list[bytes]) -> list[float]:
    settings = get_settings()
    times = []
    for data in uploads:
        started = time.perf_counter()
        image = decode_image(
            data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        ).image
        embedder.embed([image])
        times.append((time.perf_counter() - started) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tuned", type=Path, required=True, help="the tuned model folder")
    parser.add_argument("--base", type=Path, default=BASE_MODEL_DIR, help="default: the base model")
    parser.add_argument("--variant", help="both models' variant (default: each card's own)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--photos", type=int, default=12, help="sample photos per round")
    arguments = parser.parse_args(argv)

    uploads = [obj.body() for obj in catalogue() if obj.filename != "truncated.jpg"][: arguments.photos]
    models = {
        name: Embedder(load_model_card(folder), variant=arguments.variant, threads=1)
        for name, folder in (("base", arguments.base), ("tuned", arguments.tuned))
    }
    for embedder in models.values():
        embedder.warm_up()
    samples: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(arguments.rounds):
        order = list(models) if round_index % 2 == 0 else list(reversed(models))
        for name in order:
            samples[name] += per_photo_ms(models[name], uploads)

    base_ms = statistics.median(samples["base"])
    tuned_ms = statistics.median(samples["tuned"])
    summary = {
        "base_ms": round(base_ms, 2),
        "tuned_ms": round(tuned_ms, 2),
        "tuned_over_base": round(tuned_ms / base_ms, 3),
        "base_p90_ms": round(statistics.quantiles(samples["base"], n=10)[-1], 2),
        "tuned_p90_ms": round(statistics.quantiles(samples["tuned"], n=10)[-1], 2),
        "base_model": models["base"].model_version,
        "tuned_model": models["tuned"].model_version,
        "dimension": {name: embedder.dimension for name, embedder in models.items()},
        "photos": len(uploads),
        "rounds": arguments.rounds,
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }
    print(
        f"decode + embed per photo, median: base {base_ms:.1f} ms, tuned {tuned_ms:.1f} ms "
        f"({summary['tuned_over_base']}x)",
        file=sys.stderr,
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
