"""Embeddings per model version: query latency, write cost and index size, before vs after.

    .venv/bin/python scripts/bench_model_versions.py --before REV [--after HEAD] [--rows 20000] [--rounds 5]

"before" is a checkout of REV (a temporary git worktree: one embedding column on `images`, one
HNSW index), "after" a checkout of --after (default HEAD: an `embeddings` table, one partial HNSW
index per model); checkouts, so that editing the tree during a run cannot change what is measured. Each
tree gets its own scratch database on one embedded PostgreSQL (`--data-dir`, default
.data/bench-model-versions; or DATABASE_URL's server), filled with the same ROWS synthetic
1280-d vectors (families of 50 around random centres) by the tree's own bulk loader
(`lookalike_local.bulk_load`), its index built afterwards. The after database also holds a second
model side by side (state building, 256-d: the same vectors through a fixed orthogonal
projection, as tests/integration/second_model.py builds one), to show the cost of two models.

Then, interleaved round by round (alternating order, so that both trees share the machine's
noise), a fresh process per tree and round runs, through that tree's own code:
- QUERIES `VectorSearch.nearest(k=10)` with vectors near stored rows (the default ef_search; after:
  as the query function calls it, with the remembered active model checked by the statement),
  timed in the client (`query_ms`: round trips included), then the same queries' search statement
  under EXPLAIN ANALYZE (`query_server_ms`: planning + execution in the server alone);
- WRITES single-image `Store.upsert_images` calls (one transaction each, as an ingest batch of
  one), after: once with the active model's vector only and once with both models' vectors.
Prints medians per tree, the after/before ratios, the index and table sizes, and one JSON line
last. `--reuse --measure-add` instead times `ModelRegistry.add` (its CONCURRENTLY built index) on
the after database while another thread keeps writing, and prints that as the JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from lookalike_local.embedded_db import EmbeddedPostgres

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERATOR_VERSION = 1

# Runs in a fresh interpreter on one tree's code: argv = [mode, url, rows, count, seed, tree].
CHILD = r"""
import json, statistics, sys, time
from datetime import UTC, datetime, timedelta
import numpy as np
import psycopg
from lookalike.ports import EventOrder, ObjectRef
from lookalike.store import ImageRecord, SearchParameters, Store, VectorSearch
import lookalike
mode, url, tree = sys.argv[1], sys.argv[2], sys.argv[6]
rows, count, seed = (int(value) for value in sys.argv[3:6])
assert lookalike.__file__.startswith(tree), lookalike.__file__
new_schema = "embeddings" in ImageRecord.__dataclass_fields__

def vectors(n, rng):
    centres = rng.standard_normal((max(1, n // 50), 1280)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((n, 1280)).astype(np.float32) * (0.75 / 1280 ** 0.5)
    out = centres[rng.integers(0, len(centres), n)] + noise
    return out / np.linalg.norm(out, axis=1, keepdims=True)

def projected(v):
    q, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((1280, 256)))
    p = v @ q.astype(np.float32)
    return p / np.linalg.norm(p, axis=1, keepdims=True)

data = vectors(rows, np.random.default_rng(seed))
result = {}
if mode == "load":
    from lookalike_local.bulk_load import BulkRow, reload_images
    batch = [BulkRow(f"p{i // 3}", f"c{i % 20}", f"k{i:07d}", 100, 100) for i in range(rows)]
    times = reload_images(url, bucket="bench", model_version="base/fp32/squash", rows=batch, vectors=data)
    result.update(copy_s=times.copy_s, index_build_s=times.index_build_s)
    if new_schema:
        from lookalike_local.bulk_load import add_model_vectors
        with psycopg.connect(url) as connection:
            second = add_model_vectors(connection, bucket="bench", version="second/fp32/squash",
                keys=[row.key for row in batch], vectors=projected(data), state="building")
        result.update(second_copy_s=second.copy_s, second_index_build_s=second.index_build_s)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
        result["sizes_mb"] = {name: size / 2**20 for name, size in connection.execute(
            "SELECT relname, pg_relation_size(oid) FROM pg_class WHERE relname IN ('images', 'embeddings') "
            "OR relname LIKE '%%hnsw%%' ORDER BY relname")}
elif mode == "query":
    search = VectorSearch(Store(url))
    rng = np.random.default_rng(seed + 1000)
    picks = rng.integers(0, rows, count)
    queries = data[picks] + rng.standard_normal((count, 1280)).astype(np.float32) * (0.3 / 1280 ** 0.5)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    # As the query function searches: the new schema's with the process's remembered active
    # model, checked by the statement itself (lookalike.search), the old one's as it was.
    if new_schema:
        def nearest(query):
            model = search.active_model()
            return search.nearest(query, SearchParameters(k=10), model=model, while_active=True)
    else:
        def nearest(query):
            return search.nearest(query, SearchParameters(k=10))
    nearest(queries[0])  # connection, register_vector, the active model
    times, hits = [], 0
    for index, query in zip(picks, queries):
        started = time.perf_counter()
        found = nearest(query)
        times.append((time.perf_counter() - started) * 1000)
        hits += found[0].product_id == f"p{index // 3}"
    result.update(query_ms=times, top1_own_product=hits / count)
    # The statement's execution inside the server alone (EXPLAIN ANALYZE), without round trips.
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector
    from lookalike.store.search import search_statement
    if new_schema:
        from lookalike.store import ModelRef
        with psycopg.connect(url) as connection:
            active = "SELECT id, version, dimension FROM models WHERE state = 'active'"
            model = ModelRef(*connection.execute(active).fetchone())
        statement = search_statement(model, exact=False, category=False, exclude=False, while_active=True)
    else:
        statement = search_statement(exact=False, category=False, exclude=False)
    server = []
    with psycopg.connect(url) as connection:
        register_vector(connection)
        text = b"EXPLAIN (ANALYZE, FORMAT JSON) " + statement.as_bytes(connection)
        for query in queries:
            with connection.transaction():
                connection.execute("SELECT set_config('hnsw.ef_search', '64', true), "
                                   "set_config('hnsw.iterative_scan', 'relaxed_order', true)")
                values = {"query": HalfVector(query), "limit": 40, "category": None, "exclude": None}
                plan = connection.execute(text, values).fetchone()[0][0]
            server.append(plan["Execution Time"] + plan["Planning Time"])
    result["query_server_ms"] = server
elif mode == "write":
    store = Store(url)
    model_ids = []
    if new_schema:
        with psycopg.connect(url) as connection:
            model_ids = [row[0] for row in connection.execute("SELECT id FROM models ORDER BY id")]
    rng = np.random.default_rng()
    fresh = vectors(count, rng)
    at = datetime.now(UTC)
    def record(i, key, both):
        common = dict(ref=ObjectRef("bench", key), order=EventOrder(None, at + timedelta(microseconds=i)),
                      product_id=key, category="c0", etag=key, size_bytes=1, width=1, height=1)
        if not new_schema:
            return ImageRecord(**common, model_version="base/fp32/squash", embedding=fresh[i])
        vectors_of = {model_ids[0]: fresh[i]}
        if both:
            vectors_of[model_ids[1]] = projected(fresh[i:i + 1])[0]
        return ImageRecord(**common, embeddings=vectors_of)
    store.upsert_images([record(0, f"warm-{rng.integers(1 << 60)}", False)])
    for both in ([False, True] if new_schema else [False]):
        times = []
        for i in range(count):
            item = record(i, f"w-{rng.integers(1 << 60)}", both)
            started = time.perf_counter()
            assert store.upsert_images([item]) == ["applied"]
            times.append((time.perf_counter() - started) * 1000)
        result["write_two_models_ms" if both else "write_ms"] = times
elif mode == "add":
    # Registering a model builds its partial index CONCURRENTLY over the whole table: how long
    # it takes, and what single-image writes (another thread) wait meanwhile.
    import threading
    from lookalike.store import ModelRegistry, ModelSpec
    registry, writer = ModelRegistry(Store(url)), Store(url)
    active = registry.active()
    done, writes = threading.Event(), []
    def write():
        rng = np.random.default_rng()
        while not done.is_set():
            key = f"add-{rng.integers(1 << 60)}"
            item = ImageRecord(ref=ObjectRef("bench", key), order=EventOrder(None, datetime.now(UTC)),
                               product_id=key, category="c0", etag=key, size_bytes=1, width=1, height=1,
                               embeddings={active.id: vectors(1, rng)[0]})
            started = time.perf_counter()
            writer.upsert_images([item])
            writes.append((time.perf_counter() - started) * 1000)
    thread = threading.Thread(target=write)
    thread.start()
    time.sleep(1.0)
    before = len(writes)
    started = time.perf_counter()
    registry.add(ModelSpec("third/fp32/squash", 256, None, None))
    result["add_s"] = time.perf_counter() - started
    during = writes[before:]
    started = time.perf_counter()
    registry.retire("third/fp32/squash")
    result["retire_empty_s"] = time.perf_counter() - started
    done.set()
    thread.join()
    result.update(writes_during_add=len(during), write_during_add_max_ms=max(during, default=None),
                  write_during_add_p50_ms=statistics.median(during) if during else None,
                  write_before_add_p50_ms=statistics.median(writes[:before]) if before else None)
print(json.dumps(result))
"""


def child(tree: Path, mode: str, url: str, rows: int, count: int, seed: int) -> dict[str, Any]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree / "layers" / "shared" / "python"), str(tree / "local")]),
        "MODEL_DIR": str(tree / "layers" / "model" / "model"),
    }
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, mode, url, str(rows), str(count), str(seed), str(tree)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{tree.name} {mode} failed:\n{completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--before", required=True, help="the revision with the old schema (e.g. the branch point)"
    )
    parser.add_argument("--after", default="HEAD", help="the revision with the new schema")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=200, help="per tree and round")
    parser.add_argument("--writes", type=int, default=50, help="per tree, round and kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--reuse", action="store_true", help="keep the databases of the last run with these ROWS"
    )
    parser.add_argument(
        "--measure-add",
        action="store_true",
        help="only time registering a model on the after database (--reuse)",
    )
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".data" / "bench-model-versions")
    arguments = parser.parse_args()

    server = None
    base_url = os.environ.get("DATABASE_URL")
    if base_url is None:
        server = EmbeddedPostgres(arguments.data_dir / "pgdata")
        base_url = server.start()
    trees = {}
    for name, revision in (("before", arguments.before), ("after", arguments.after)):
        trees[name] = Path(tempfile.mkdtemp(prefix=f"model-versions-{name}-"))
        subprocess.run(
            ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(trees[name]), revision],
            check=True,
            capture_output=True,
        )
    try:
        import psycopg

        urls = {name: make_conninfo(base_url, dbname=f"lookalike_bench_mv_{name}") for name in trees}
        loaded = arguments.data_dir / f"loads-{arguments.rows}-{arguments.seed}-v{GENERATOR_VERSION}.json"
        if arguments.reuse and loaded.exists():
            loads = json.loads(loaded.read_text())  # the load figures of the run that built them
        else:
            for name in trees:
                with psycopg.connect(base_url, autocommit=True) as connection:
                    connection.execute(f"DROP DATABASE IF EXISTS lookalike_bench_mv_{name} WITH (FORCE)")
                    connection.execute(f"CREATE DATABASE lookalike_bench_mv_{name}")
            loads = {
                name: child(tree, "load", urls[name], arguments.rows, 0, arguments.seed)
                for name, tree in trees.items()
            }
            loaded.write_text(json.dumps(loads))
        for name, load in loads.items():
            print(name, "load", json.dumps(load), file=sys.stderr)
        if arguments.measure_add:
            added = child(trees["after"], "add", urls["after"], arguments.rows, 0, arguments.seed)
            print(json.dumps({"rows": arguments.rows, **added, "load_average": os.getloadavg()}))
            return 0
        samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
        top1: dict[str, list[float]] = {name: [] for name in trees}
        for round_index in range(arguments.rounds):
            order = list(trees) if round_index % 2 == 0 else list(reversed(trees))
            for name in order:
                measured = child(
                    trees[name], "query", urls[name], arguments.rows, arguments.queries, arguments.seed
                )
                measured |= child(
                    trees[name], "write", urls[name], arguments.rows, arguments.writes, arguments.seed
                )
                top1[name].append(measured.pop("top1_own_product"))
                for key, values in measured.items():
                    samples[name].setdefault(key, []).extend(values)
            print(f"round {round_index + 1}/{arguments.rounds} done", file=sys.stderr)
    finally:
        for tree in trees.values():
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
        if server is not None:
            server.stop()

    def p(values: list[float], q: float) -> float:
        return round(statistics.quantiles(values, n=100)[int(q) - 1], 3)

    summary: dict[str, Any] = {
        "rows": arguments.rows,
        "rounds": arguments.rounds,
        "before": arguments.before,
        "after": arguments.after,
    }
    for name in trees:
        for key, values in samples[name].items():
            summary[f"{name}_{key}_p50"] = p(values, 50)
            summary[f"{name}_{key}_p90"] = p(values, 90)
        summary[f"{name}_top1_own_product"] = round(statistics.mean(top1[name]), 4)
        summary[f"{name}_load"] = {
            key: (round(value, 2) if isinstance(value, float) else {k: round(v, 1) for k, v in value.items()})
            for key, value in loads[name].items()
        }
    summary["query_p50_ratio_after_before"] = round(
        summary["after_query_ms_p50"] / summary["before_query_ms_p50"], 3
    )
    summary["query_server_p50_ratio_after_before"] = round(
        summary["after_query_server_ms_p50"] / summary["before_query_server_ms_p50"], 3
    )
    summary["write_p50_ratio_after_before"] = round(
        summary["after_write_ms_p50"] / summary["before_write_ms_p50"], 3
    )
    summary["write_two_models_p50_ratio_after_before"] = round(
        summary["after_write_two_models_ms_p50"] / summary["before_write_ms_p50"], 3
    )
    summary["load_average"] = os.getloadavg()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
