"""Benchmark databases: a fresh schema filled by binary COPY, then the schema's own HNSW index.

Loading rows first and building the index once over all of them is what a bulk import does, and
much faster than indexing row by row (pgvector's documentation; the build times this project
measured are in docs/BENCHMARKS.md, "Recall vs ef_search"). The index
definition is read back from the migrated schema, so a benchmark always measures the index that
production builds, never a copy of its parameters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql

from lookalike.store import migrate

HNSW_INDEX = "images_embedding_hnsw"


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
) -> LoadTimes:
    """Replace the database's schema with `rows` (embedded images, one vector each)."""
    now = datetime.now(UTC)
    with psycopg.connect(url) as connection:
        with connection.transaction():
            connection.execute("DROP SCHEMA IF EXISTS public CASCADE")
            connection.execute("CREATE SCHEMA public")
        migrate(connection)
        register_vector(connection)
        index_row = connection.execute("SELECT pg_get_indexdef(%s::regclass)", (HNSW_INDEX,)).fetchone()
        assert index_row is not None, "the schema has no HNSW index"
        connection.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(HNSW_INDEX)))
        started = time.perf_counter()
        statement = (
            "COPY images (bucket, key, status, product_id, category, event_time, model_version,"
            " width, height, embedding) FROM STDIN WITH (FORMAT BINARY)"
        )
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(
                ["text", "text", "text", "text", "text", "timestamptz", "text", "int4", "int4", "halfvec"]
            )
            for row, vector in zip(rows, vectors, strict=True):
                copy.write_row(
                    (bucket, row.key, "embedded", row.product_id, row.category, now, model_version,
                     row.width, row.height, HalfVector(vector))
                )  # fmt: skip
        connection.commit()
        copy_s = time.perf_counter() - started
        # pgvector builds HNSW fastest while the graph fits in maintenance_work_mem; beyond it the
        # build spills to disk (pgvector's documentation).
        connection.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        connection.execute(sql.SQL(str(index_row[0])))  # the definition, read from the catalog
        connection.commit()
        index_build_s = time.perf_counter() - started
        connection.execute("ANALYZE images")
        connection.commit()
    return LoadTimes(copy_s=copy_s, index_build_s=index_build_s)
