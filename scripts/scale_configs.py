"""The index configurations `bench_scale.py` compares, and the SQL path of the one the store
cannot serve (binary quantisation with re-ranking).

A name says it all: `<kind><dimension>_m<M>_ef<EF_CONSTRUCTION>`, kind one of
- `hnsw`: the store's index (the registry's expression and predicate) with these parameters;
- `pca`: the same on a PCA projection registered as a model of its own;
- `bq`: HNSW over `binary_quantize(embedding::halfvec(D))::bit(D)` (Hamming distance, 1 bit a
  dimension), searched for ef_search candidates that are re-ranked by cosine on the halfvecs.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql

from lookalike.store.registry import create_index_statement, index_name
from lookalike.store.search import MIN_POOL, POOL_FACTOR

NAME = re.compile(r"^(hnsw|pca|bq)(\d+)_m(\d+)_ef(\d+)$")


@dataclass(frozen=True, slots=True)
class IndexConfig:
    name: str
    kind: str
    dimension: int
    m: int
    ef_construction: int

    def index(self, model_id: int) -> str:
        return f"bq_{model_id}" if self.kind == "bq" else index_name(model_id)

    def create_index(self, model_id: int, dimension: int) -> sql.Composed:
        options = f"m = {self.m}, ef_construction = {self.ef_construction}"
        if self.kind != "bq":
            return create_index_statement(model_id, dimension, concurrently=False, options=options)
        return sql.SQL(
            "CREATE INDEX {name} ON embeddings USING hnsw "
            "((binary_quantize(embedding::halfvec({dimension}))::bit({dimension})) bit_hamming_ops) "
            "WITH ({options}) WHERE model_id = {model_id}"
        ).format(
            name=sql.Identifier(self.index(model_id)),
            dimension=sql.Literal(dimension),
            options=sql.SQL(options),
            model_id=sql.Literal(model_id),
        )


def parse_configs(text: str) -> list[IndexConfig]:
    configs = []
    for name in (part.strip() for part in text.split(",") if part.strip()):
        match = NAME.match(name)
        if match is None:
            raise SystemExit(f"--configs: {name!r} is not <hnsw|pca|bq><dimension>_m<M>_ef<EF>")
        kind, dimension, m, ef = match.groups()
        if (kind in {"hnsw", "bq"} and int(dimension) != 1280) or (kind == "pca" and int(dimension) != 256):
            raise SystemExit(f"--configs: {name!r}: hnsw and bq are 1280-d, pca 256-d")
        configs.append(IndexConfig(name, kind, int(dimension), int(m), int(ef)))
    return configs


class SqlPath:
    """Similar-by-id over the binary index, as the store would run it: the product's vectors
    read, their normalised mean as the query, ef_search Hamming candidates re-ranked by cosine
    in the same statement, one result per product (one connection, like a warm Lambda)."""

    def __init__(self, url: str, model_id: int, dimension: int) -> None:
        self.connection = psycopg.connect(url)
        register_vector(self.connection)
        self.model_id = model_id
        self.dimension = dimension

    def statement(self, category: bool) -> sql.Composed:
        return sql.SQL(
            "SELECT product_id, distance FROM ("
            "SELECT i.product_id, e.embedding::halfvec({d}) <=> %(query)s AS distance "
            "FROM embeddings AS e JOIN images AS i ON i.id = e.image_id "
            "WHERE e.model_id = {model} AND i.status = 'embedded' AND i.product_id <> %(exclude)s{category} "
            "ORDER BY binary_quantize(e.embedding::halfvec({d}))::bit({d}) <~> binary_quantize(%(query)s) "
            "LIMIT %(candidates)s) AS candidates ORDER BY distance LIMIT %(pool)s"
        ).format(
            d=sql.Literal(self.dimension),
            model=sql.Literal(self.model_id),
            category=sql.SQL(" AND i.category = %(category)s" if category else ""),
        )

    def similar(
        self, product_id: str, ef_search: int, category: str | None = None, k: int = 10
    ) -> tuple[list[str], float]:
        pool = max(POOL_FACTOR * k, MIN_POOL)
        started = time.perf_counter()
        with self.connection.transaction():
            self.connection.execute(
                "SELECT set_config('hnsw.ef_search', %s, true), "
                "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                (str(max(ef_search, pool)),),
            )
            rows = self.connection.execute(
                "SELECT e.embedding FROM images AS i JOIN embeddings AS e ON e.image_id = i.id "
                "WHERE e.model_id = %s AND i.product_id = %s AND i.status = 'embedded'",
                (self.model_id, product_id),
            ).fetchall()
            mean = np.stack([row[0].to_numpy() for row in rows]).astype(np.float32).mean(axis=0)
            query = HalfVector(mean / np.linalg.norm(mean))
            found = self.connection.execute(
                self.statement(category is not None),
                {
                    "query": query,
                    "exclude": product_id,
                    "category": category,
                    "candidates": max(ef_search, pool),
                    "pool": pool,
                },
            ).fetchall()
        products: list[str] = []
        for product, _ in found:
            if product not in products:
                products.append(product)
                if len(products) == k:
                    break
        return products, (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self.connection.close()
