"""Stored category suggestions (schema step 3): writing them for freshly ingested images, and
the review listing of uncategorised images.

`refresh_suggestions` recomputes from what the store holds NOW, never from the event: for each
asked object whose row is embedded and has no category, the vote (`lookalike.suggestions.vote`) of
its nearest categorised products by the active model's vectors; for each asked object that has a
category, its suggestion is deleted (a given category always wins, and is never written here).
So it is idempotent: running it again after a redelivery, a retry or a stale event gives the same
rows, and it can run after the images' own transaction (their categorised neighbours of the same
batch are then visible and vote).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from lookalike.ports import ObjectRef
from lookalike.store.database import Store, active_model
from lookalike.store.rows import ModelRef
from lookalike.suggestions import VOTE_K, CategorySuggestion, vote

# Images fetched per uncategorised image before one-per-product deduplication (products with
# several photos near the query would otherwise leave fewer than VOTE_K voters).
POOL_FACTOR: Final = 4


@dataclass(frozen=True, slots=True)
class UncategorisedImage:
    """An embedded image without a category, with its stored suggestion (if any)."""

    ref: ObjectRef
    product_id: str
    width: int
    height: int
    suggestions: list[CategorySuggestion]  # best first; empty when none is stored
    model_version: str | None  # the model whose vectors voted


@lru_cache(maxsize=64)
def _neighbours_statement(model: ModelRef) -> sql.Composed:
    """Per asked uncategorised image: its nearest categorised images by `model`'s vectors (the
    model's partial HNSW index, iterative scan: the category filter is applied while scanning)."""
    distance = sql.SQL("near_vector.embedding::halfvec({dimension}) <=> wanted_vector.embedding").format(
        dimension=sql.Literal(model.dimension)
    )
    return sql.SQL(
        """SELECT wanted.id, found.product_id, found.category, found.distance
        FROM unnest(%(buckets)s::text[], %(keys)s::text[]) AS asked (bucket, key)
        JOIN images AS wanted ON wanted.bucket = asked.bucket AND wanted.key = asked.key
            AND wanted.status = 'embedded' AND wanted.category IS NULL
        JOIN embeddings AS wanted_vector
            ON wanted_vector.image_id = wanted.id AND wanted_vector.model_id = {model}
        CROSS JOIN LATERAL (
            SELECT near.product_id, near.category, {distance} AS distance
            FROM embeddings AS near_vector JOIN images AS near ON near.id = near_vector.image_id
            WHERE near_vector.model_id = {model} AND near.status = 'embedded'
                AND near.category IS NOT NULL
            ORDER BY {distance}
            LIMIT %(pool)s
        ) AS found
        ORDER BY wanted.id, found.distance"""
    ).format(model=sql.Literal(model.id), distance=distance)


_ASKED_IDS: Final = sql.SQL(
    """SELECT images.id FROM unnest(%(buckets)s::text[], %(keys)s::text[]) AS asked (bucket, key)
    JOIN images ON images.bucket = asked.bucket AND images.key = asked.key"""
)
_DELETE_OTHERS: Final = sql.SQL(
    "DELETE FROM category_suggestions WHERE image_id = ANY(%(asked)s) AND NOT (image_id = ANY(%(kept)s))"
)
_UPSERT: Final = sql.SQL(
    """INSERT INTO category_suggestions AS current (image_id, model_id, category, confidence, ranked)
    VALUES (%(image_id)s, %(model_id)s, %(category)s, %(confidence)s, %(ranked)s)
    ON CONFLICT (image_id) DO UPDATE SET model_id = excluded.model_id, category = excluded.category,
        confidence = excluded.confidence, ranked = excluded.ranked, updated_at = now()
    WHERE (current.model_id, current.category, current.confidence, current.ranked)
        IS DISTINCT FROM (excluded.model_id, excluded.category, excluded.confidence, excluded.ranked)"""
)


def refresh_suggestions(store: Store, refs: Sequence[ObjectRef], *, ef_search: int = 64) -> int:
    """Recompute the stored suggestions of these objects (see the module docstring), in one
    transaction; returns how many of them now hold a suggestion. Nothing is suggested before a
    model is active."""
    if not refs:
        return 0
    parameters: dict[str, Any] = {
        "buckets": [ref.bucket for ref in refs],
        "keys": [ref.key for ref in refs],
        "pool": POOL_FACTOR * VOTE_K,
    }

    def write(connection: psycopg.Connection[TupleRow]) -> int:
        model = active_model(connection)
        if model is None:  # a new deployment before its bootstrap: nothing to vote with
            return 0
        asked = [int(row[0]) for row in connection.execute(_ASKED_IDS, parameters).fetchall()]
        connection.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), "
            "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
            (str(max(ef_search, POOL_FACTOR * VOTE_K)),),
        )
        voters: dict[int, list[tuple[str, str, float]]] = {}
        for image_id, product_id, category, distance in connection.execute(
            _neighbours_statement(model), parameters
        ).fetchall():
            voters.setdefault(int(image_id), []).append((product_id, category, float(distance)))
        rows = []
        for image_id, found in voters.items():
            ranked = vote(_best_per_product(found))
            if ranked:
                rows.append(
                    {
                        "image_id": image_id,
                        "model_id": model.id,
                        "category": ranked[0].category,
                        "confidence": ranked[0].confidence,
                        "ranked": Jsonb(
                            [{"category": s.category, "confidence": round(s.confidence, 4)} for s in ranked]
                        ),
                    }
                )
        kept = [row["image_id"] for row in rows]
        connection.execute(_DELETE_OTHERS, {"asked": asked, "kept": kept})
        if rows:
            with connection.cursor() as cursor:
                cursor.executemany(_UPSERT, rows)
        return len(rows)

    return store.run(write, write=True)


def _best_per_product(found: list[tuple[str, str, float]]) -> list[tuple[str | None, float]]:
    """(category, similarity) of each product by its nearest image, nearest first (relaxed_order
    returns rows slightly out of order: sorted here)."""
    seen: set[str] = set()
    voters: list[tuple[str | None, float]] = []
    for product_id, category, distance in sorted(found, key=lambda row: row[2]):
        if product_id not in seen:
            seen.add(product_id)
            voters.append((category, 1.0 - distance))
    return voters


def uncategorised_images(store: Store, *, after: ObjectRef | None, limit: int) -> list[UncategorisedImage]:
    """Embedded images without a category, with their suggestions, in (bucket, key) byte order
    after `after` (keyset pagination, as `Store.images_after`)."""
    statement = sql.SQL(
        """SELECT i.bucket, i.key, i.product_id, i.width, i.height, s.ranked, m.version
        FROM images AS i
        LEFT JOIN category_suggestions AS s ON s.image_id = i.id
        LEFT JOIN models AS m ON m.id = s.model_id
        WHERE i.status = 'embedded' AND i.category IS NULL{after}
        ORDER BY i.bucket COLLATE "C", i.key COLLATE "C"
        LIMIT %(limit)s"""
    ).format(
        after=sql.SQL(
            ' AND (i.bucket COLLATE "C", i.key COLLATE "C") > (%(bucket)s, %(key)s)' if after else ""
        )
    )
    parameters = {
        "bucket": after.bucket if after else None,
        "key": after.key if after else None,
        "limit": limit,
    }

    def read(connection: psycopg.Connection[TupleRow]) -> list[UncategorisedImage]:
        return [
            UncategorisedImage(
                ref=ObjectRef(row[0], row[1]),
                product_id=row[2],
                width=row[3],
                height=row[4],
                suggestions=[
                    CategorySuggestion(str(item["category"]), float(item["confidence"]))
                    for item in row[5] or []
                ],
                model_version=row[6],
            )
            for row in connection.execute(statement, parameters).fetchall()
        ]

    return store.run(read, vector=False)
