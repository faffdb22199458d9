"""The images uploaded without a category, with their suggested categories, for review.

    .venv/bin/python scripts/uncategorised.py [--confident] [--format csv|json] [--out FILE]

What `GET /uncategorised` answers a page at a time, for the whole catalogue at once: per image
its bucket, key, product id, top suggested category, its confidence, whether that is
`confident` (>= lookalike.suggestions.CONFIDENT_AT, docs/BENCHMARKS.md "Suggested categories"),
the runner-up and the model that voted. --confident keeps the confident ones only (the ones a
shop might file in bulk). DATABASE_URL selects the database (unset: the embedded local one).
A summary goes to stderr.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lookalike.store import Store
from lookalike.store.category_suggestions import UncategorisedImage, uncategorised_images
from lookalike.suggestions import CONFIDENT_AT
from lookalike_aws.runtime import get_store
from lookalike_local.embedded_db import ensure_database_url

PAGE = 500
COLUMNS = (
    "bucket",
    "key",
    "product_id",
    "suggested_category",
    "confidence",
    "confident",
    "runner_up",
    "runner_up_confidence",
    "model_version",
)


def all_uncategorised(store: Store) -> Iterator[UncategorisedImage]:
    after = None
    while True:
        page = uncategorised_images(store, after=after, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].ref


def row(image: UncategorisedImage) -> dict[str, Any]:
    top = image.suggestions[0] if image.suggestions else None
    second = image.suggestions[1] if len(image.suggestions) > 1 else None
    return {
        "bucket": image.ref.bucket,
        "key": image.ref.key,
        "product_id": image.product_id,
        "suggested_category": top.category if top else None,
        "confidence": round(top.confidence, 4) if top else None,
        "confident": top is not None and top.confidence >= CONFIDENT_AT,
        "runner_up": second.category if second else None,
        "runner_up_confidence": round(second.confidence, 4) if second else None,
        "model_version": image.model_version,
    }


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in item.items()} for item in rows)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--confident", action="store_true", help=f"only suggestions >= {CONFIDENT_AT}")
    parser.add_argument("--format", choices=("csv", "json"), default="csv")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)

    ensure_database_url()
    rows = [row(image) for image in all_uncategorised(get_store())]
    listed = [item for item in rows if item["confident"]] if args.confident else rows
    text = to_csv(listed) if args.format == "csv" else json.dumps(listed, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    confident = sum(item["confident"] for item in rows)
    without = sum(item["suggested_category"] is None for item in rows)
    print(
        f"{len(rows)} uncategorised images: {confident} with a confident suggestion (>= {CONFIDENT_AT}), "
        f"{without} without any",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
