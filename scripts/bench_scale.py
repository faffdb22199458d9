"""Recall, latency, build time and size of the vector index at millions of rows, index choices
side by side in one run.

    .venv/bin/python scripts/bench_scale.py [--rows 1000000] [--configs hnsw1280_m16_ef64,...]

1. The catalogue (`scale_vectors`: real embeddings, their augmented views and vectors synthesised
   from them; its composition and a realism check are in the report) goes into a scratch
   database (`lookalike_bench_scale`) by binary COPY with the schema's own tables
   (`lookalike_local.bulk_load`); the server is an embedded PostgreSQL in --data-dir with
   shared_buffers = --shared-buffers, unless DATABASE_URL names one.
2. One index configuration at a time (each built, measured, then dropped, so none competes with
   another for memory), in --configs order:
   - `hnsw1280_m16_ef64`: today's index (the registry's definition) on halfvec(1280);
   - `hnsw1280_m<M>_ef<EF>`: the same expression and predicate with other build parameters;
   - `pca256_m<M>_ef<EF>`: a 256-d PCA projection fitted on the catalogue, registered as a second
     model and made the active one while it is measured;
   - `bq1280_m<M>_ef<EF>`: HNSW over `binary_quantize(embedding)` (Hamming distance), the
     candidates re-ranked by cosine on the full halfvec(1280) vectors.
   Per config: build time, index size, the building backend's peak resident memory; per
   ef_search, similar-by-id recall@10 against exact search (numpy, on the 1280-d vectors, one
   row per product, like the store), p50/p99; recall of a category-filtered similar-by-id on a
   ~1 %-selective category; for the 1280-d configs, search-by-photo p50/p99.
   Latency is through the query handler (`bench_query.QueryFunction`: API Gateway v2 events) for
   every config the production store can serve (hnsw, pca); `bq` has no store support, so its
   latency is of the SQL path (the product's vectors read, then one re-ranking statement).
3. Prints a JSON line per config and, last, one JSON line:
   {"rows", "build_s", "index_mb", "recall_at_10", "similar_p50_ms", "similar_p99_ms",
    "filtered_recall_at_10", "config", "configs": [...], "catalogue": {...}, ...}
   where the top-level figures are those of the chosen config at its chosen ef_search: the
   cheapest to build that meets recall@10 >= 0.95, p50 <= 10 ms and filtered recall >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Final

import numpy as np
import psycopg
from bench_query import (
    QueryFunction,
    ef_search_setting,
    log,
    one_megapixel_jpegs,
    percentiles,
    recall,
    timed_calls,
)
from psycopg import sql
from scale_configs import IndexConfig, SqlPath, parse_configs
from scale_database import (
    build,
    bulk_rows,
    database_url,
    index_mb,
    loaded_marker,
    model_ids,
    server_url,
    set_active,
)
from scale_exact import ExactProducts
from scale_vectors import GENERATOR_VERSION, Catalogue, cached_catalogue, realism

from lookalike.images import decode_image
from lookalike.model.embedder import get_embedder
from lookalike.settings import get_settings
from lookalike_aws.runtime import reset_runtime
from lookalike_local.bulk_load import add_model_vectors, reload_images
from lookalike_local.template import load_topology

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
BUCKET: Final = "bench-scale"
PCA_VERSION: Final = "bench-scale/pca256"
K: Final = 10
RECALL_TARGET: Final = 0.95
P50_TARGET_MS: Final = 10.0
DEFAULT_CONFIGS: Final = "hnsw1280_m16_ef64,pca256_m16_ef64,bq1280_m16_ef64,hnsw1280_m16_ef128"


def measure(
    config: IndexConfig,
    function: QueryFunction,
    sql_path: SqlPath | None,
    exact: ExactProducts,
    asked: list[int],
    truth: list[list[str]],
    filtered: list[int],
    filtered_truth: list[list[str]],
    category: str,
    sweep: list[int],
    catalogue: Catalogue,
) -> dict[str, Any]:
    """Recall and latency per ef_search (through the handler, or the SQL path for `bq`)."""
    names = [catalogue.product_name(p) for p in asked]
    filtered_names = [catalogue.product_name(p) for p in filtered]
    entries = []
    for ef_search in sweep:
        with ef_search_setting(ef_search):
            if sql_path is None:
                calls = [partial(function.similar, n) for n in names]
                filtered_calls = [partial(function.similar, n, K, category) for n in filtered_names]
            else:
                calls = [partial(sql_path.similar, n, ef_search) for n in names]
                filtered_calls = [partial(sql_path.similar, n, ef_search, category) for n in filtered_names]
            found, latencies = timed_calls(calls)
            filtered_found, filtered_latencies = timed_calls(filtered_calls, warm_up=5)
        entry = {
            "ef_search": ef_search,
            "recall_at_10": round(recall(found, truth), 4),
            **percentiles(latencies),
            "filtered_recall_at_10": round(recall(filtered_found, filtered_truth), 4),
            "filtered_p50_ms": percentiles(filtered_latencies)["p50_ms"],
        }
        entries.append(entry)
        log(f"  {config.name} ef_search {ef_search}: {entry}")
    return {"path": "handler" if sql_path is None else "sql", "sweep": entries}


def search_by_photo(function: QueryFunction, exact: ExactProducts, requests: int) -> dict[str, Any]:
    """POST /search with ~1 MP JPEGs at the configured ef_search; recall against exact search."""
    with ef_search_setting(None) as ef_search:
        jpegs = one_megapixel_jpegs()
        settings = get_settings()
        limits = {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_image_pixels}
        decoded = [decode_image(jpeg, **limits).image for jpeg in jpegs]
        queries = get_embedder().embed(decoded).vectors
        truth = [exact.top_products_of_vector(q, k=K) for q in queries]
        bodies = [jpegs[i % len(jpegs)] for i in range(max(requests, len(jpegs)))]
        found, latencies = timed_calls([partial(function.search, b) for b in bodies], warm_up=5)
    return {
        "ef_search": ef_search,
        "recall_at_10": round(recall(found[: len(jpegs)], [[exact.name(p) for p in t] for t in truth]), 4),
        "p50_ms": percentiles(latencies)["p50_ms"],
        "p99_ms": percentiles(latencies)["p99_ms"],
    }


def pca_projection(vectors: np.ndarray, dimension: int, rng: np.random.Generator) -> tuple[Any, float]:
    """A PCA fitted on up to 50k catalogue rows: (project(rows) -> unit float16, variance kept)."""
    sample = vectors[rng.choice(len(vectors), size=min(50_000, len(vectors)), replace=False)].astype(
        np.float32
    )
    mean = sample.mean(axis=0)
    _, singular, basis = np.linalg.svd(sample - mean, full_matrices=False)
    components = basis[:dimension].T.astype(np.float32)
    kept = float((singular[:dimension] ** 2).sum() / (singular**2).sum())

    def project(rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), dimension), dtype=np.float16)
        for start in range(0, len(rows), 100_000):
            part = (rows[start : start + 100_000].astype(np.float32) - mean) @ components
            out[start : start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
        return out

    return project, round(kept, 4)


def chosen(configs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The config (and its ef_search) that meets every target and is the cheapest to build;
    else the highest recall."""
    meeting = []
    for config in configs:
        for entry in config["sweep"]:
            if (
                entry["recall_at_10"] >= RECALL_TARGET
                and entry["p50_ms"] <= P50_TARGET_MS
                and entry["filtered_recall_at_10"] >= RECALL_TARGET
            ):
                meeting.append((config, entry))
                break  # the sweep is in rising ef_search: the first is the cheapest
    if meeting:
        config, entry = min(meeting, key=lambda pair: pair[0]["build_s"])
        return config, entry, True
    pairs = [(c, e) for c in configs for e in c["sweep"]]
    config, entry = max(pairs, key=lambda pair: (pair[1]["recall_at_10"], -pair[1]["p50_ms"]))
    return config, entry, False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated, measured in this order")
    parser.add_argument("--ef-search", default="40,100,200,400", help="hnsw.ef_search values per config")
    parser.add_argument("--requests", type=int, default=200, help="similar-by-id queries per ef_search")
    parser.add_argument("--filtered-requests", type=int, default=100)
    parser.add_argument("--photo-requests", type=int, default=50)
    parser.add_argument("--real", choices=["tune-cache", "sample-photos"], default="tune-cache")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".data" / "bench-scale")
    parser.add_argument("--shared-buffers", default="2GB")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the loaded rows if they are this catalogue's (same rows, seed)",
    )
    parser.add_argument("--maintenance-work-mem", default="6GB", help="must hold the graph being built")
    arguments = parser.parse_args(argv)
    configs = parse_configs(arguments.configs)
    sweep = [int(value) for value in arguments.ef_search.split(",") if value.strip()]
    rng = np.random.default_rng(arguments.seed)
    started_run = time.perf_counter()

    topology = load_topology(REPO_ROOT / "template.yaml")
    assert topology.query is not None
    for name, value in topology.query.environment.items():
        os.environ.setdefault(name, value)
    load_average = os.getloadavg()
    log(f"cpus {os.cpu_count()}, load average {load_average[0]:.2f} (other work here skews timings)")

    started = time.perf_counter()
    catalogue = cached_catalogue(
        arguments.rows, arguments.seed, arguments.real, arguments.data_dir / "catalogues", REPO_ROOT
    )
    log(f"catalogue in {time.perf_counter() - started:.0f} s: {catalogue.composition}")
    checks = realism(catalogue, rng)
    log(f"realism: {checks}")

    url = database_url(server_url(arguments.data_dir, arguments.shared_buffers))
    rows = bulk_rows(catalogue)
    order = rng.permutation(len(rows))  # uploads arrive in no particular order
    main_version = get_embedder().model_version
    marker = (
        f"bench_scale rows={arguments.rows} seed={arguments.seed} real={arguments.real} "
        f"generator={GENERATOR_VERSION}"
    )
    load_s: float | None = None
    if arguments.reuse and loaded_marker(url) == marker:
        log(f"reusing the loaded database ({marker})")
    else:
        started = time.perf_counter()
        reload_images(
            url,
            bucket=BUCKET,
            model_version=main_version,
            rows=[rows[i] for i in order],
            vectors=catalogue.vectors[order],
            build_index=False,
        )
        load_s = time.perf_counter() - started
        with psycopg.connect(url) as connection:
            connection.execute(sql.SQL("COMMENT ON TABLE images IS {}").format(sql.Literal(marker)))
        log(f"loaded {len(rows)} rows in {load_s:.0f} s ({len(rows) / load_s:.0f} rows/s)")

    exact = ExactProducts(catalogue.vectors, catalogue.product, catalogue.category, catalogue.product_name)
    products = int(catalogue.product.max()) + 1
    asked = [int(p) for p in rng.choice(products, size=min(arguments.requests, products - 1), replace=False)]
    shares = np.bincount(catalogue.category) / len(catalogue.category)
    category = int(np.argmin(np.abs(shares - 0.01)))
    in_category = np.unique(catalogue.product[catalogue.category == category])
    filtered = [
        int(p)
        for p in rng.choice(
            in_category, size=min(arguments.filtered_requests, len(in_category)), replace=False
        )
    ]
    log(f"filter category k{category:03d}: {shares[category] * 100:.2f} % of rows")
    started = time.perf_counter()
    truth = exact.top_products(asked, k=K)
    filtered_truth = exact.top_products(filtered, k=K, category=category)
    log(f"exact answers in {time.perf_counter() - started:.0f} s")

    os.environ["DATABASE_URL"] = url
    os.environ.pop("DATABASE_SECRET_ARN", None)
    get_settings.cache_clear()
    reset_runtime()
    function = QueryFunction(topology)

    results: list[dict[str, Any]] = []
    pca_kept: float | None = None
    for config in configs:
        if config.kind == "pca" and PCA_VERSION not in model_ids(url):
            project, pca_kept = pca_projection(catalogue.vectors, config.dimension, rng)
            with psycopg.connect(url) as connection:
                add_model_vectors(
                    connection,
                    bucket=BUCKET,
                    version=PCA_VERSION,
                    keys=[rows[i].key for i in order],
                    vectors=project(catalogue.vectors[order]),
                    state="standby",
                    build_index=False,
                )
            log(f"PCA to {config.dimension} keeps {pca_kept:.3f} of the variance")
        version = PCA_VERSION if config.kind == "pca" else main_version
        set_active(url, version)
        model_id = model_ids(url)[version]
        log(f"{config.name}: building")
        built = build(url, config, model_id, config.dimension, arguments.maintenance_work_mem)
        size = index_mb(url, config.index(model_id))
        log(f"{config.name}: built {built}, {size} MB")
        sql_path = SqlPath(url, model_id, config.dimension) if config.kind == "bq" else None
        try:
            measured = measure(
                config,
                function,
                sql_path,
                exact,
                asked,
                truth,
                filtered,
                filtered_truth,
                f"k{category:03d}",
                sweep,
                catalogue,
            )
        finally:
            if sql_path is not None:
                sql_path.close()
        entry: dict[str, Any] = {"config": config.name, **built, "index_mb": size, **measured}
        if config.kind == "hnsw":
            entry["search_by_photo"] = search_by_photo(function, exact, arguments.photo_requests)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(config.index(model_id))))
        results.append(entry)
        log(json.dumps(entry))
    set_active(url, main_version)

    best, best_entry, meets = chosen(results)
    with psycopg.connect(url) as connection:
        table = connection.execute(
            "SELECT pg_total_relation_size('embeddings'), pg_total_relation_size('images')"
        ).fetchone()
        names = [
            "shared_buffers",
            "maintenance_work_mem",
            "max_parallel_maintenance_workers",
            "server_version",
        ]
        settings = dict(
            connection.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)", (names,)
            ).fetchall()
        )
    report = {
        "rows": len(rows),
        "build_s": best["build_s"],
        "index_mb": best["index_mb"],
        "recall_at_10": best_entry["recall_at_10"],
        "similar_p50_ms": best_entry["p50_ms"],
        "similar_p99_ms": best_entry["p99_ms"],
        "filtered_recall_at_10": best_entry["filtered_recall_at_10"],
        "config": {
            "name": best["config"],
            "ef_search": best_entry["ef_search"],
            "meets_targets": meets,
            "path": best["path"],
        },
        "targets": {
            "recall_at_10": RECALL_TARGET,
            "similar_p50_ms": P50_TARGET_MS,
            "filtered_recall_at_10": RECALL_TARGET,
        },
        "configs": results,
        "catalogue": catalogue.composition,
        "realism": checks,
        "filter_category_share": round(float(shares[category]), 4),
        "pca_variance_kept": pca_kept,
        "load_rows_per_s": round(len(rows) / load_s) if load_s else None,
        "table_mb": {
            "embeddings_with_indexes_left": round(table[0] / 2**20),
            "images": round(table[1] / 2**20),
        }
        if table
        else None,
        "server": settings,
        "maintenance_work_mem_for_builds": arguments.maintenance_work_mem,
        "cpus": os.cpu_count(),
        "load_average_at_start": round(load_average[0], 2),
        "total_s": round(time.perf_counter() - started_run),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
