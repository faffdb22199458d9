"""Near-duplicate groups of the catalogue, as CSV or JSON.

    .venv/bin/python scripts/duplicates.py [--threshold 0.9] [--category C] [--format csv|json] [--out FILE]
    .venv/bin/python scripts/duplicates.py --bench 100000        (timing on synthetic data; JSON)

Groups are connected components of "cosine similarity >= threshold", found through the HNSW
index (lookalike.duplicates). DATABASE_URL selects the database (unset: the embedded local one).

--bench ROWS loads ROWS synthetic clustered embeddings (scripts/measure_category_filter.py's
generator and loader, in a scratch database) with 1 % of them given a near-duplicate copy, then
times the full scan and single pages and checks that the planted pairs are found.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.conninfo import make_conninfo

from lookalike.duplicates import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_SCAN_LIMIT,
    DEFAULT_THRESHOLD,
    DUPLICATE_EF_SEARCH,
    DuplicateGroup,
    all_duplicate_groups,
    duplicate_groups_page,
)
from lookalike.store import Store, VectorSearch
from lookalike_aws.runtime import get_search
from lookalike_local.embedded_db import ensure_database_url

BENCH_DATABASE = "lookalike_bench_duplicates"


def to_csv(groups: list[DuplicateGroup]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "anchor_key", "bucket", "key", "product_id", "category", "similarity"])
    for number, group in enumerate(groups, start=1):
        for member in group.members:
            image = member.image
            writer.writerow(
                [
                    number,
                    group.anchor.key,
                    image.ref.bucket,
                    image.ref.key,
                    image.product_id,
                    image.category or "",
                    f"{member.similarity:.4f}",
                ]
            )
    return buffer.getvalue()


def to_json(groups: list[DuplicateGroup], threshold: float, category: str | None) -> str:
    document = {
        "threshold": threshold,
        "category": category,
        "groups": [group.as_dict() for group in groups],
        "images_in_groups": sum(len(group.members) for group in groups),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _row_count(url: str) -> int:
    try:
        with psycopg.connect(url) as connection:
            row = connection.execute("SELECT count(*) FROM images").fetchone()
    except psycopg.Error:
        return -1
    return int(row[0]) if row else -1


def bench(rows: int, seed: int, *, reuse: bool = False, ef_search: int | None = None) -> dict[str, Any]:
    # Reuse the query measurements' synthetic data and bulk loader (same shape, same index).
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from measure_category_filter import load, synthetic_embeddings  # type: ignore[import-not-found]

    rng = np.random.default_rng(seed)
    vectors = synthetic_embeddings(rows, rng)
    # Plant near-duplicates: 1 % of the rows become a lightly perturbed copy of another row
    # (cosine ~0.95, like an edited re-upload of a photo).
    planted = rows // 100
    sources = rng.choice(rows // 2, planted, replace=False)
    targets = rows // 2 + rng.choice(rows - rows // 2, planted, replace=False)
    noise = rng.standard_normal((planted, vectors.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = vectors[sources] + 0.3 * noise
    vectors[targets] = copies / np.linalg.norm(copies, axis=1, keepdims=True)
    planted_similarity = np.sum(vectors[sources] * vectors[targets], axis=1)

    url = ensure_database_url()
    with psycopg.connect(url, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DATABASE,)
        ).fetchone()
        if not exists:
            connection.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    bench_url = make_conninfo(url, dbname=BENCH_DATABASE)
    started = time.perf_counter()
    categories = [f"c{index % 20}" for index in range(rows)]
    build_s: float | None = None
    if not reuse or _row_count(bench_url) != rows:  # same seed, same rows: the load can be reused
        build_s = load(bench_url, vectors, categories)
    load_s = time.perf_counter() - started

    store = Store(bench_url)
    try:
        with psycopg.connect(bench_url) as connection:
            plan = "\n".join(
                row[0]
                for row in connection.execute(
                    "EXPLAIN SELECT found.key FROM images AS wanted CROSS JOIN LATERAL ("
                    "SELECT near.key FROM images AS near WHERE near.status = 'embedded' "
                    "ORDER BY near.embedding <=> wanted.embedding LIMIT 17) AS found "
                    "WHERE wanted.key = 'k/1'"
                )
            )
        page_times = []
        cursor = None
        for _ in range(5):
            started = time.perf_counter()
            page = duplicate_groups_page(VectorSearch(store), cursor=cursor, ef_search=ef_search)
            page_times.append(time.perf_counter() - started)
            cursor = page.next_cursor
        started = time.perf_counter()
        groups = list(all_duplicate_groups(VectorSearch(store), ef_search=ef_search))
        scan_s = time.perf_counter() - started
        category_started = time.perf_counter()
        category_groups = list(all_duplicate_groups(VectorSearch(store), category="c3", ef_search=ef_search))
        category_s = time.perf_counter() - category_started
    finally:
        store.close()
    found_pairs = {
        frozenset(member.image.ref.key for member in group.members)
        for group in groups
        if len(group.members) == 2
    }
    expected = {frozenset((f"k/{s}", f"k/{t}")) for s, t in zip(sources, targets, strict=True)}
    return {
        "rows": rows,
        "planted_pairs": planted,
        "planted_similarity": {
            "min": round(float(planted_similarity.min()), 3),
            "mean": round(float(planted_similarity.mean()), 3),
        },
        "load_and_index_s": round(load_s, 1),
        "index_build_s": None if build_s is None else round(build_s, 1),
        "ef_search": ef_search or DUPLICATE_EF_SEARCH,
        "threshold": DEFAULT_THRESHOLD,
        "full_scan_s": round(scan_s, 1),
        "full_scan_images_per_s": round(rows / scan_s),
        "groups_found": len(groups),
        "planted_pairs_found": len(expected & found_pairs),
        "spurious_groups": len(groups) - len(expected & found_pairs),
        "page": {
            "limit": DEFAULT_PAGE_SIZE,
            "scan_limit": DEFAULT_SCAN_LIMIT,
            "seconds": [round(t, 3) for t in page_times],
            "p50_s": round(statistics.median(page_times), 3),
        },
        "category_scan": {
            "category_rows": rows // 20,
            "groups": len(category_groups),
            "seconds": round(category_s, 1),
        },
        "lateral_knn_uses_hnsw": "images_embedding_hnsw" in plan,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help="cosine similarity, (0, 1]"
    )
    parser.add_argument("--category", help="only images of this category")
    parser.add_argument("--format", choices=("csv", "json"), default="csv")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    parser.add_argument(
        "--bench", type=int, metavar="ROWS", help="time the scan on ROWS synthetic embeddings"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="--bench: keep the scratch database if loaded")
    parser.add_argument("--ef-search", type=int, help=f"HNSW ef_search (default {DUPLICATE_EF_SEARCH})")
    args = parser.parse_args(argv)

    if args.bench:
        print(json.dumps(bench(args.bench, args.seed, reuse=args.reuse, ef_search=args.ef_search), indent=2))
        return 0

    ensure_database_url()
    started = time.perf_counter()
    groups = list(all_duplicate_groups(get_search(), threshold=args.threshold, category=args.category))
    elapsed = time.perf_counter() - started
    text = to_csv(groups) if args.format == "csv" else to_json(groups, args.threshold, args.category)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    members = sum(len(group.members) for group in groups)
    print(
        f"{len(groups)} groups ({members} images) at cosine >= {args.threshold} in {elapsed:.2f} s"
        + (f" -> {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
