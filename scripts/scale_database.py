"""The scratch database of `bench_scale.py`: the embedded server with the asked shared_buffers,
the catalogue's rows, one index configuration built at a time, and which model is active."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import psycopg
from bench_query import log
from psycopg import sql
from scale_configs import IndexConfig
from scale_vectors import Catalogue

from lookalike.store.registry import index_name
from lookalike_aws.runtime import reset_runtime
from lookalike_local.bulk_load import BulkRow
from lookalike_local.embedded_db import EmbeddedPostgres

DATABASE: Final = "lookalike_bench_scale"


def server_url(data_dir: Path, shared_buffers: str) -> str:
    """DATABASE_URL's server, else the embedded one in data_dir with the asked shared_buffers."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    server = EmbeddedPostgres(data_dir / "postgres")
    url = server.start()
    with psycopg.connect(url, autocommit=True) as connection:
        current = connection.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))").fetchone()
        wanted = connection.execute("SELECT pg_size_bytes(%s)", (shared_buffers,)).fetchone()
        if current != wanted:
            connection.execute(
                sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(sql.Literal(shared_buffers))
            )
    if current != wanted:
        server.stop()
        url = server.start()
    return url


def database_url(server: str) -> str:
    with psycopg.connect(server, autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return urlsplit(server)._replace(path=f"/{DATABASE}").geturl()


def bulk_rows(catalogue: Catalogue) -> list[BulkRow]:
    rows = []
    image_number: dict[int, int] = {}
    for product, category in zip(catalogue.product.tolist(), catalogue.category.tolist(), strict=True):
        number = image_number.get(product, 0)
        image_number[product] = number + 1
        name = catalogue.product_name(product)
        rows.append(BulkRow(name, f"k{category:03d}", f"products/{name}/{number}.jpg", 800, 800))
    return rows


def peak_rss_mb(pid: int) -> float | None:
    """The backend's peak resident memory (VmHWM), if this machine runs the server."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def build(
    url: str, config: IndexConfig, model_id: int, dimension: int, maintenance_work_mem: str
) -> dict[str, Any]:
    """Drop the model's index, build config's, and report time, size and the backend's memory."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index_name(model_id))))
        connection.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(f"bq_{model_id}")))
        connection.execute("SELECT set_config('maintenance_work_mem', %s, false)", (maintenance_work_mem,))
        # pgvector says so when the graph outgrows maintenance_work_mem (the build slows down).
        connection.add_notice_handler(lambda notice: log(f"  server: {notice.message_primary}"))
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        started = time.perf_counter()
        connection.execute(config.create_index(model_id, dimension))
        build_s = time.perf_counter() - started
        connection.execute("ANALYZE embeddings")
        return {"build_s": round(build_s, 1), "build_backend_peak_rss_mb": peak_rss_mb(int(row[0]))}


def index_mb(url: str, name: str) -> float:
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT pg_relation_size(to_regclass(%s))", (name,)).fetchone()
    return round(int(row[0]) / 2**20, 1) if row else 0.0


def set_active(url: str, version: str) -> None:
    with psycopg.connect(url) as connection:
        connection.execute(
            "UPDATE models SET state = 'standby' WHERE state = 'active' AND version <> %s", (version,)
        )
        connection.execute(
            "UPDATE models SET state = 'active', activated_at = now() WHERE version = %s", (version,)
        )
    reset_runtime()


def loaded_marker(url: str) -> str | None:
    """What the last load wrote on the images table (rows, seed, source, generator), if any."""
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT obj_description(to_regclass('images'), 'pg_class')").fetchone()
    return None if row is None else row[0]


def model_ids(url: str) -> dict[str, int]:
    with psycopg.connect(url) as connection:
        return {str(v): int(i) for i, v in connection.execute("SELECT id, version FROM models")}
