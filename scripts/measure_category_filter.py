"""Category-filtered search: exact (btree) path vs HNSW iterative scan; prints JSON.

Justifies lookalike.store.search.EXACT_CATEGORY_THRESHOLD. For each table size it loads synthetic
clustered, ReLU-like, L2-normalised 1280-d vectors (the shape of CNN embeddings) into a scratch
database, builds the HNSW index as the schema defines it, and times `VectorSearch.nearest`
with the path forced either way, against exact numpy results (recall@k).

Categories are assigned at random, independent of the clusters: the hardest case for a
filtered HNSW scan (real categories follow the visual clusters and do better).

    .venv/bin/python scripts/measure_category_filter.py --rows 10000,100000 --queries 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg.conninfo import make_conninfo

from lookalike.store import EMBEDDING_DIM, SearchParameters, Store, VectorSearch
from lookalike.store.database import active_model
from lookalike.store.search import search_statement
from lookalike_local.bulk_load import BulkRow, reload_images
from lookalike_local.embedded_db import ensure_database_url

SCRATCH_DATABASE = "lookalike_measure_category"
CATEGORY_SIZES = (500, 2_000, 5_000, 10_000, 20_000, 40_000)


def synthetic_embeddings(rows: int, rng: np.random.Generator, clusters: int = 200) -> npt.NDArray[np.float32]:
    centres = np.maximum(rng.standard_normal((clusters, EMBEDDING_DIM)), 0).astype(np.float32)
    vectors = np.empty((rows, EMBEDDING_DIM), dtype=np.float32)
    for start in range(0, rows, 10_000):
        size = min(10_000, rows - start)
        noise = rng.standard_normal((size, EMBEDDING_DIM)).astype(np.float32) * 0.8
        vectors[start : start + size] = np.maximum(centres[rng.integers(0, clusters, size)] + noise, 0)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def scratch_url(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {SCRATCH_DATABASE}")
    return make_conninfo(url, dbname=SCRATCH_DATABASE)


def load(url: str, vectors: npt.NDArray[np.float32], categories: list[str]) -> float:
    """COPY the rows, then build the schema's HNSW index (what a bulk import does); returns
    the index build's seconds."""
    rows = [BulkRow(f"p{index}", category, f"k/{index}", 1, 1) for index, category in enumerate(categories)]
    return reload_images(url, bucket="bench", model_version="m", rows=rows, vectors=vectors).index_build_s


def measure(
    search: VectorSearch,
    vectors: npt.NDArray[np.float32],
    members: npt.NDArray[np.int64],
    category: str,
    queries: npt.NDArray[np.float32],
    k: int,
) -> dict[str, Any]:
    candidates = vectors[members].astype(np.float16).astype(np.float32)
    latencies: list[float] = []
    recalls: list[float] = []
    out_of_category = 0
    short = 0
    for query in queries:
        truth = {f"p{members[i]}" for i in np.argsort(-(candidates @ query))[:k]}
        started = time.perf_counter()
        found = search.nearest(query, SearchParameters(k=k, category=category))
        latencies.append((time.perf_counter() - started) * 1000)
        out_of_category += sum(neighbour.category != category for neighbour in found)
        short += len(found) < k
        recalls.append(len(truth & {neighbour.product_id for neighbour in found}) / k)
    latencies.sort()
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
        "recall": round(statistics.mean(recalls), 3),
        "min_recall": round(min(recalls), 2),
        "short_results": short,
        "out_of_category": out_of_category,
    }


def plan(url: str, query: npt.NDArray[np.float32], category: str, *, exact: bool) -> str:
    """The scan nodes the planner picks for the store's statement (what a path really does)."""
    with psycopg.connect(url) as connection:
        register_vector(connection)
        connection.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        model = active_model(connection)
        assert model is not None, "the bulk loader registers the model it loads"
        statement = search_statement(model, exact=exact, category=True, exclude=False)
        rows = connection.execute(
            b"EXPLAIN (FORMAT JSON) " + statement.as_bytes(connection),
            {"query": HalfVector(query), "category": category, "exclude": None, "limit": 40},
        ).fetchone()
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Scan" in node["Node Type"]:
            nodes.append(f"{node['Node Type']}" + (f" {node['Index Name']}" if "Index Name" in node else ""))
        for child in node.get("Plans", []):
            walk(child)

    assert rows is not None
    walk(rows[0][0]["Plan"])
    return ", ".join(nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000", help="table sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--url", help="server to use (default: DATABASE_URL, else the embedded one)")
    arguments = parser.parse_args()

    url = scratch_url(arguments.url or ensure_database_url())
    results: list[dict[str, Any]] = []
    for rows in (int(value) for value in arguments.rows.split(",")):
        rng = np.random.default_rng(arguments.seed)
        vectors = synthetic_embeddings(rows, rng)
        sizes = [size for size in CATEGORY_SIZES if size <= rows // 2]
        labels = np.full(rows, "rest", dtype=object)
        order = rng.permutation(rows)
        start = 0
        for size in sizes:
            labels[order[start : start + size]] = f"c{size}"
            start += size
        build_s = load(url, vectors, [str(label) for label in labels])
        exact = VectorSearch(Store(url), exact_category_threshold=10**9)
        iterative = VectorSearch(Store(url), exact_category_threshold=0)
        for size in sizes:
            category = f"c{size}"
            members = np.flatnonzero(labels == category)
            # Queries near members of the category (what "more like this, same category" asks).
            picks = vectors[rng.choice(members, arguments.queries, replace=False)]
            queries = picks + rng.standard_normal(picks.shape).astype(np.float32) * 0.01
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            for search in (exact, iterative):  # warm both connections and caches
                search.nearest(queries[0], SearchParameters(k=arguments.k, category=category))
            results.append(
                {
                    "rows": rows,
                    "category_rows": size,
                    "exact_plan": plan(url, queries[0], category, exact=True),
                    "iterative_plan": plan(url, queries[0], category, exact=False),
                    "exact": measure(exact, vectors, members, category, queries, arguments.k),
                    "iterative": measure(iterative, vectors, members, category, queries, arguments.k),
                }
            )
            print(json.dumps(results[-1]), flush=True)
        exact.store.close()
        iterative.store.close()
        results.append({"rows": rows, "hnsw_build_s": round(build_s, 1)})
    print(json.dumps({"k": arguments.k, "queries": arguments.queries, "results": results}))


if __name__ == "__main__":
    main()
