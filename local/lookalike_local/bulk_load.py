"""Benchmark databases: a fresh schema filled by binary COPY, then the schema's own HNSW index.

Loading rows first and building the index once over all of them is what a bulk import does, and
much faster than indexing row by row (pgvector's documentation; the build times this project
measured are in docs/BENCHMARKS.md, "Recall vs ef_search"). The index
definition is the registry's (`create_index_statement`), so a benchmark always measures the index
that production builds, never a copy of its parameters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from lookalike.store import migrate
from lookalike.store.registry import create_index_statement


@dataclass(frozen=True, slots=True)
class BulkRow:
    product_id: str
    category: str
    key: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class LoadTimes:
    copy_s: float
    index_build_s: float


def reload_images(
    url: str,
    *,
    bucket: str,
    model_version: str,
    rows: Sequence[BulkRow],
    vectors: npt.NDArray[np.float32],
    maintenance_work_mem: str = "1GB",
    build_index: bool = True,
) -> LoadTimes:
    """Replace the database's schema with `rows` (embedded images, one vector each of
    `model_version`, registered as the active model)."""
    now = datetime.now(UTC)
    with psycopg.connect(url) as connection:
        with connection.transaction():
            connection.execute("DROP SCHEMA IF EXISTS public CASCADE")
            connection.execute("CREATE SCHEMA public")
        migrate(connection)
        register_vector(connection)
        started = time.perf_counter()
        statement = (
            "COPY images (bucket, key, status, product_id, category, event_time, width, height) "
            "FROM STDIN WITH (FORMAT BINARY)"
        )
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(["text", "text", "text", "text", "text", "timestamptz", "int4", "int4"])
            for row in rows:
                copy.write_row(
                    (bucket, row.key, "embedded", row.product_id, row.category, now, row.width, row.height)
                )
        connection.commit()
        copy_s = time.perf_counter() - started
        keys = [row.key for row in rows]
        added = add_model_vectors(
            connection,
            bucket=bucket,
            version=model_version,
            keys=keys,
            vectors=vectors,
            state="active",
            maintenance_work_mem=maintenance_work_mem,
            build_index=build_index,
        )
        connection.execute("ANALYZE images")
        connection.commit()
    return LoadTimes(copy_s=copy_s + added.copy_s, index_build_s=added.index_build_s)


def add_model_vectors(
    connection: psycopg.Connection[Any],
    *,
    bucket: str,
    version: str,
    keys: Sequence[str],
    vectors: npt.NDArray[np.float32],
    state: str,
    maintenance_work_mem: str = "1GB",
    build_index: bool = True,
) -> LoadTimes:
    """Register a model (`state`) with one vector per key, by COPY, then build its partial HNSW
    index with the registry's own definition (lookalike.store.registry). `maintenance_work_mem`
    should hold the whole graph (about the index's size) for the build to stay in memory.
    `build_index=False`: the caller builds an index of its own (index_build_s is then 0)."""
    dimension = int(vectors.shape[1])
    register_vector(connection)
    started = time.perf_counter()
    row = connection.execute(
        "INSERT INTO models (version, dimension, state, activated_at) "
        "VALUES (%s, %s, %s, CASE WHEN %s = 'active' THEN now() END) RETURNING id",
        (version, dimension, state, state),
    ).fetchone()
    assert row is not None
    model_id = int(row[0])
    connection.execute("CREATE TEMP TABLE loaded (key text, embedding halfvec) ON COMMIT DROP")
    with (
        connection.cursor() as cursor,
        cursor.copy("COPY loaded (key, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy,
    ):
        copy.set_types(["text", "halfvec"])
        for key, vector in zip(keys, vectors, strict=True):
            copy.write_row((key, HalfVector(vector)))
    connection.execute(
        "INSERT INTO embeddings (model_id, image_id, embedding) "
        "SELECT %s, images.id, loaded.embedding FROM loaded "
        "JOIN images ON images.bucket = %s AND images.key = loaded.key",
        (model_id, bucket),
    )
    connection.commit()
    copy_s = time.perf_counter() - started
    if not build_index:
        connection.execute("ANALYZE embeddings")
        connection.commit()
        return LoadTimes(copy_s=copy_s, index_build_s=0.0)
    # pgvector builds HNSW fastest while the graph fits in maintenance_work_mem; beyond it the
    # build spills to disk (pgvector's documentation).
    connection.execute("SELECT set_config('maintenance_work_mem', %s, false)", (maintenance_work_mem,))
    started = time.perf_counter()
    connection.execute(create_index_statement(model_id, dimension, concurrently=False))
    connection.commit()
    index_build_s = time.perf_counter() - started
    connection.execute("ANALYZE embeddings")
    connection.commit()
    return LoadTimes(copy_s=copy_s, index_build_s=index_build_s)
