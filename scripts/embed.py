"""Embed image files with the committed model and print one JSON line per image.

    .venv/bin/python scripts/embed.py IMAGE [IMAGE ...]     (or: make embed ARGS="IMAGE ...")

Each line: {"path", "dim", "norm", "top5" (ImageNet class ids from the logits, best first),
"ms" (decode + preprocess + inference of that image, one at a time)} so that anyone can
sanity-check the model: a cat photo should give ids in 281-285, an espresso 967.
Files that are not acceptable images print {"path", "error", "reason"} and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from lookalike.images import ImageRejected, decode_image
from lookalike.model.embedder import get_embedder
from lookalike.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)

    settings = get_settings()
    embedder = get_embedder()
    embedder.warm_up()  # the session's creation is not part of an image's time
    failures = 0
    for path in args.images:
        started = time.perf_counter()
        try:
            decoded = decode_image(
                path.read_bytes(), max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
            )
        except (ImageRejected, OSError) as error:
            reason = error.reason if isinstance(error, ImageRejected) else "unreadable"
            print(json.dumps({"path": str(path), "error": str(error), "reason": reason}))
            failures += 1
            continue
        result = embedder.embed([decoded.image], logits=True)
        elapsed_ms = (time.perf_counter() - started) * 1000
        assert result.logits is not None  # the base model's classifier
        embedding, logits = result.vectors[0], result.logits[0]
        top5 = [int(i) for i in np.argsort(logits)[::-1][:5]]
        line = {
            "path": str(path),
            "dim": int(embedding.shape[0]),
            "norm": round(float(np.linalg.norm(embedding)), 6),
            "top5": top5,
            "ms": round(elapsed_ms, 2),
        }
        print(json.dumps(line))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
