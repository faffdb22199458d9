"""Two database facts the schema and the store rely on, measured side by side in one run.

    .venv/bin/python scripts/measure_storage.py [--rows 20000] [--repeats 15]

1. Storage of the 1280-d halfvec column: PostgreSQL's default (EXTENDED: values over ~2 kB are
   compressed or moved out of line, TOAST) against `SET STORAGE PLAIN` (the vector stays in the
   heap page), on two tables filled with the same unit vectors: heap and TOAST sizes, the
   planner's row estimate, the HNSW build's time, and an exact scan (every distance, top 10).
2. What a new database connection costs before its first query: connect, `register_vector`
   (pgvector-python's catalog look-ups), the first query; against a query on a warm connection.

Runs on a scratch database of the embedded PostgreSQL (or DATABASE_URL's server) that it drops
at the end. Prints a table and a JSON last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql

from lookalike_local.embedded_db import EmbeddedPostgres

SCRATCH_DATABASE = "lookalike_measure_storage"
DIMENSION = 1280


def scratch_url(folder: Path) -> tuple[str, str]:
    server = os.environ.get("DATABASE_URL") or EmbeddedPostgres(folder / "postgres").start()
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DATABASE}")
        connection.execute(f"CREATE DATABASE {SCRATCH_DATABASE}")
    return server, urlsplit(server)._replace(path=f"/{SCRATCH_DATABASE}").geturl()


def unit_vectors(rows: int, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    # Non-negative like the model's pooled ReLU features, then unit length.
    vectors = np.abs(np.random.default_rng(seed).standard_normal((rows, DIMENSION))).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def load(connection: psycopg.Connection[Any], table: str, storage: str | None, vectors: np.ndarray) -> None:
    connection.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, embedding halfvec({DIMENSION}))")
    if storage is not None:
        connection.execute(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE {storage}")
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY {table} (id, embedding) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(["bigint", "halfvec"])
        for index, vector in enumerate(vectors):
            copy.write_row((index, HalfVector(vector)))
    connection.execute(f"ANALYZE {table}")
    connection.commit()


def storage_facts(
    connection: psycopg.Connection[Any], table: str, queries: np.ndarray, repeats: int
) -> dict[str, Any]:
    sizes = connection.execute(
        "SELECT pg_relation_size(c.oid), COALESCE(pg_total_relation_size(c.reltoastrelid), 0), "
        "c.reltuples, c.relpages FROM pg_class c WHERE c.relname = %s",
        (table,),
    ).fetchone()
    assert sizes is not None
    scans = []
    for repeat in range(repeats):
        query = HalfVector(queries[repeat % len(queries)])
        started = time.perf_counter()
        connection.execute(
            sql.SQL("SELECT id FROM {} ORDER BY embedding <=> %s LIMIT 10").format(sql.Identifier(table)),
            (query,),
        ).fetchall()
        scans.append((time.perf_counter() - started) * 1000)
    connection.execute("SET maintenance_work_mem = '512MB'")
    started = time.perf_counter()
    connection.execute(
        sql.SQL("CREATE INDEX ON {} USING hnsw (embedding halfvec_cosine_ops)").format(sql.Identifier(table))
    )
    build_s = time.perf_counter() - started
    connection.commit()
    return {
        "heap_mb": round(sizes[0] / 1e6, 1),
        "toast_mb": round(sizes[1] / 1e6, 1),
        "planner_pages": int(sizes[3]),
        "exact_scan_p50_ms": round(statistics.median(scans[1:] or scans), 1),
        "hnsw_build_s": round(build_s, 2),
    }


def connection_costs(url: str, repeats: int) -> dict[str, float]:
    connect, register, first, warm = [], [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        connection = psycopg.connect(url)
        connected = time.perf_counter()
        register_vector(connection)
        registered = time.perf_counter()
        connection.execute("SELECT id FROM plain_storage WHERE id = 1").fetchone()
        queried = time.perf_counter()
        connection.execute("SELECT id FROM plain_storage WHERE id = 2").fetchone()
        warm.append((time.perf_counter() - queried) * 1000)
        connect.append((connected - started) * 1000)
        register.append((registered - connected) * 1000)
        first.append((queried - registered) * 1000)
        connection.close()
    return {
        "connect_ms_p50": round(statistics.median(connect), 2),
        "register_vector_ms_p50": round(statistics.median(register), 2),
        "first_query_ms_p50": round(statistics.median(first), 2),
        "warm_query_ms_p50": round(statistics.median(warm), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=15)
    arguments = parser.parse_args()
    vectors = unit_vectors(arguments.rows, seed=1)
    queries = unit_vectors(16, seed=2)
    with tempfile.TemporaryDirectory(prefix="measure-storage-") as folder:
        server, url = scratch_url(Path(folder))
        try:
            with psycopg.connect(url) as connection:
                connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
                connection.commit()
                register_vector(connection)
                load(connection, "default_storage", None, vectors)
                load(connection, "plain_storage", "PLAIN", vectors)
                default = storage_facts(connection, "default_storage", queries, arguments.repeats)
                plain = storage_facts(connection, "plain_storage", queries, arguments.repeats)
            connections = connection_costs(url, arguments.repeats)
        finally:
            with psycopg.connect(server, autocommit=True) as connection:
                connection.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DATABASE}")
            if not os.environ.get("DATABASE_URL"):
                EmbeddedPostgres(Path(folder) / "postgres").stop()
    print(f"{'':18} {'default (TOAST)':>16} {'PLAIN':>10}")
    for name in default:
        print(f"{name:18} {default[name]:>16} {plain[name]:>10}")
    print("new connection:", connections)
    result = {
        "rows": arguments.rows,
        "default_storage": default,
        "plain_storage": plain,
        "exact_scan_ratio_default_over_plain": round(
            default["exact_scan_p50_ms"] / plain["exact_scan_p50_ms"], 2
        ),
        "connection": connections,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
