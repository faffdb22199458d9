"""What the ingest's suggestion step costs per batch, next to the batch's image write.

    .venv/bin/python scripts/bench_suggestions.py [--rows 20000] [--batch 10] [--rounds 30]

A scratch database (on the embedded server, or DATABASE_URL's) gets ROWS synthetic clustered
embeddings in 20 categories (scripts/measure_category_filter.py's generator and bulk loader, with
the schema's HNSW index). Each round writes two batches of BATCH new images near existing ones,
one categorised and one without a category, in alternating order, each as the ingest does:
`Store.upsert_images`, then `refresh_suggestions` (docs/INGEST.md, "Suggested categories").
Then the query side: a search by photo without filters now asks for max(k, 20) products (the
vote's pool; `lookalike.search.search_by_image`) where it asked for k = 10; the two, and the
alternative of a second search, are timed interleaved on the same query vectors (SEARCHES each).
Prints medians and p90 in milliseconds and the ratios; JSON last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.conninfo import make_conninfo

from lookalike.ports import EventOrder, ObjectRef
from lookalike.store import ImageRecord, SearchParameters, Store, VectorSearch
from lookalike.store.category_suggestions import refresh_suggestions
from lookalike.store.database import active_model
from lookalike_local.embedded_db import ensure_database_url

SCRATCH_DATABASE = "lookalike_bench_suggestions"


def scratch(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {SCRATCH_DATABASE}")
    return make_conninfo(url, dbname=SCRATCH_DATABASE)


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument(
        "--batch", type=int, default=10, help="images per batch (the SQS trigger's BatchSize)"
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--seed", type=int, default=3)
    arguments = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from measure_category_filter import load, synthetic_embeddings  # type: ignore[import-not-found]

    rng = np.random.default_rng(arguments.seed)
    vectors = synthetic_embeddings(arguments.rows, rng)
    url = scratch(ensure_database_url())
    load(url, vectors, [f"c{index % 20}" for index in range(arguments.rows)])
    store = Store(url)
    model = store.run(active_model, vector=False)
    assert model is not None
    timings: dict[str, list[float]] = {
        f"{kind}_{step}": [] for kind in ("categorised", "uncategorised") for step in ("upsert", "suggest")
    }
    suggested = 0
    now = datetime.now(UTC)
    try:
        for round_number in range(arguments.rounds):
            kinds = ("categorised", "uncategorised")
            for kind in kinds if round_number % 2 == 0 else kinds[::-1]:
                near = vectors[rng.integers(0, arguments.rows, arguments.batch)]
                noisy = near + 0.05 * rng.standard_normal(near.shape).astype(np.float32)
                noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
                records = [
                    ImageRecord(
                        ref=ObjectRef("bench", f"new/{kind}/{round_number}/{index}"),
                        order=EventOrder(sequencer=None, event_time=now),
                        product_id=f"new-{kind}-{round_number}-{index}",
                        category="c0" if kind == "categorised" else None,
                        etag=None,
                        size_bytes=1,
                        width=1,
                        height=1,
                        embeddings={model.id: noisy[index]},
                    )
                    for index in range(arguments.batch)
                ]
                started = time.perf_counter()
                store.upsert_images(records)
                timings[f"{kind}_upsert"].append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                suggested += refresh_suggestions(store, [record.ref for record in records])
                timings[f"{kind}_suggest"].append((time.perf_counter() - started) * 1000)
        search = VectorSearch(store)
        ten, pool = SearchParameters(k=10), SearchParameters(k=20)
        variants = {
            "search_k10": lambda query: search.nearest(query, ten, model=model),
            "search_k20": lambda query: search.nearest(query, pool, model=model),
            "search_k10_then_k20": lambda query: (
                search.nearest(query, ten, model=model),
                search.nearest(query, pool, model=model),
            ),
        }
        names = list(variants)
        for name in names:
            timings[name] = []
            variants[name](vectors[0])  # warm: plans, pages
        for number in range(arguments.searches):
            query = vectors[rng.integers(0, arguments.rows)] + 0.05 * rng.standard_normal(vectors.shape[1])
            query = (query / np.linalg.norm(query)).astype(np.float32)
            for name in names if number % 2 == 0 else names[::-1]:
                started = time.perf_counter()
                variants[name](query)
                timings[name].append((time.perf_counter() - started) * 1000)
    finally:
        store.close()
    result: dict[str, Any] = {name: quantiles(values) for name, values in timings.items()}
    for name in ("search_k20", "search_k10_then_k20"):
        result[f"{name}_over_k10_p50"] = round(
            statistics.median(timings[name]) / statistics.median(timings["search_k10"]), 2
        )
    for kind in ("categorised", "uncategorised"):
        result[f"{kind}_suggest_over_upsert_p50"] = round(
            statistics.median(timings[f"{kind}_suggest"]) / statistics.median(timings[f"{kind}_upsert"]), 2
        )
    result |= {
        "rows": arguments.rows,
        "batch": arguments.batch,
        "rounds": arguments.rounds,
        "searches": arguments.searches,
        "suggestions_written": suggested,
        "command": " ".join(["scripts/bench_suggestions.py", *sys.argv[1:]]),
        "date": now.strftime("%Y-%m-%d"),
    }
    for name in timings:
        print(f"{name:<24} p50 {result[name]['p50_ms']:8.2f} ms   p90 {result[name]['p90_ms']:8.2f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
