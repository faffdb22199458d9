"""Vector search: the one room for ranking (statements, the exact/iterative choice, pool growth).

Every search takes one validated `SearchParameters`. Results are products, each once, by its best
image: a candidate pool of images is fetched in distance order and deduplicated by product; when a
full pool yields fewer than k products the pool grows and the search runs again.

Category filter: a category with at most `exact_category_threshold` embedded rows is searched
exactly (every distance of the category, through the category btree: recall 1.0); a bigger one
through HNSW with `iterative_scan = relaxed_order` (re-sorted here). The exact cost grows with the
category's size, the iterative cost with its rarity; the threshold is where the two cross
(docs/BENCHMARKS.md, "Category filter", `scripts/measure_category_filter.py`).

Every search names its model (`ModelRef`, default: the active one, read in the search's own
transaction): the statements join `embeddings` with `e.model_id = <literal>` and order by
`e.embedding::halfvec(D) <=> query`, which is exactly the model's partial HNSW index
(lookalike.store.registry), so a ranking never mixes the vectors of two models. The id is a
literal, not a parameter, so that the planner can prove the partial index applies; the texts
are cached per model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np
import psycopg
from pgvector import HalfVector
from psycopg import sql
from psycopg.rows import TupleRow

from lookalike.ports import ObjectRef
from lookalike.settings import DEFAULT_EF_SEARCH
from lookalike.store.database import Store, active_model
from lookalike.store.rows import (
    CloseNeighbour,
    FloatArray,
    ModelRef,
    Neighbour,
    image_summary,
    to_halfvec,
)


class NoActiveModelError(LookupError):
    """No model is active yet: nothing can be searched (a new deployment before its bootstrap)."""


class ModelNoLongerActiveError(LookupError):
    """The model a search was made for stopped being the active one (a switch happened since the
    process last read it): the caller embeds with the new active model and searches again."""


# The most products one search returns (the API's limit, and the pool's starting point).
MAX_K: Final = 100
# hnsw.ef_search accepts at most 1000; beyond that a query is a scan.
MAX_EF_SEARCH: Final = 1000
EXACT_CATEGORY_THRESHOLD: Final = 5_000

# The candidate pool (rows fetched before one-per-product deduplication) starts at
# POOL_FACTOR * k (at least MIN_POOL), grows POOL_GROWTH-fold while too few distinct products come
# back from a full pool, and is capped at MAX_EF_SEARCH.
POOL_FACTOR: Final = 4
MIN_POOL: Final = 40
POOL_GROWTH: Final = 4


@dataclass(frozen=True, slots=True)
class SearchParameters:
    """What one search asks for; validated once, here."""

    k: int = 10
    category: str | None = None
    min_similarity: float | None = None
    exclude_product_id: str | None = None
    ef_search: int | None = None  # None: the searcher's default

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {self.k}")
        if self.min_similarity is not None and not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be between -1 and 1, got {self.min_similarity}")
        if self.ef_search is not None and not 1 <= self.ef_search <= MAX_EF_SEARCH:
            raise ValueError(f"ef_search must be between 1 and {MAX_EF_SEARCH}, got {self.ef_search}")

    @property
    def max_distance(self) -> float | None:
        return None if self.min_similarity is None else 1.0 - self.min_similarity


class VectorSearch:
    """Nearest-neighbour queries over the store's embeddings."""

    def __init__(
        self,
        store: Store,
        *,
        ef_search: int = DEFAULT_EF_SEARCH,
        exact_category_threshold: int = EXACT_CATEGORY_THRESHOLD,
    ) -> None:
        self.store = store
        self.ef_search = ef_search
        self.exact_category_threshold = exact_category_threshold
        # The active model as this process last read it. Searches made `while_active` check, in
        # their own statement, that it still is (a switch is then noticed on the next query
        # without a registry read per query).
        self._active: ModelRef | None = None

    def nearest(
        self,
        embedding: FloatArray,
        parameters: SearchParameters,
        *,
        model: ModelRef | None = None,
        while_active: bool = False,
    ) -> list[Neighbour]:
        """The k nearest products to an embedding of `model` (default: the active one) by
        cosine distance, each once (by its best image). `while_active`: raise
        `ModelNoLongerActiveError` instead of answering if `model` is no longer the active one
        when the search runs (the answer and the check are one statement)."""

        def run(connection: psycopg.Connection[TupleRow]) -> list[Neighbour]:
            chosen = model or _require_active(connection)
            query = to_halfvec(embedding, chosen.dimension)
            return self._nearest(connection, chosen, query, parameters, while_active=while_active)

        return self.store.run(run)

    def active_model(self) -> ModelRef | None:
        """The active model as this process last read it (read once, then kept until a search
        made `while_active` finds it switched: `forget_active_model()`)."""
        if self._active is None:
            self._active = self.store.run(active_model, vector=False)
        return self._active

    def forget_active_model(self) -> None:
        self._active = None

    def similar_to_product(
        self,
        product_id: str,
        parameters: SearchParameters,
        *,
        model: ModelRef | None = None,
        while_active: bool = False,
    ) -> list[Neighbour] | None:
        """Products like this one (never itself); None if it has no embedded image.

        The query is the normalised mean of the product's embeddings, not its first image: a
        product photographed from several sides is then matched on what its views share, the
        result does not depend on which upload came first, and it costs one search.
        """
        parameters = SearchParameters(
            k=parameters.k,
            category=parameters.category,
            min_similarity=parameters.min_similarity,
            exclude_product_id=product_id,
            ef_search=parameters.ef_search,
        )

        def run(connection: psycopg.Connection[TupleRow]) -> list[Neighbour] | None:
            chosen = model or _require_active(connection)
            embeddings = _product_embeddings(connection, chosen, product_id)
            if len(embeddings) == 0:
                return None
            mean = embeddings.mean(axis=0)
            norm = float(np.linalg.norm(mean))
            # Opposite views could cancel out exactly; the first image is the fallback then.
            query = mean / norm if norm > 1e-6 else embeddings[0]
            vector = to_halfvec(query, chosen.dimension)
            return self._nearest(connection, chosen, vector, parameters, while_active=while_active)

        return self.store.run(run)

    def product_embeddings(self, product_id: str, *, model: ModelRef | None = None) -> FloatArray:
        """[n, dim] float32 (halfvec precision) of `model` (default: the active one), newest
        image first; [0, dim] if unknown."""
        return self.store.run(
            lambda connection: _product_embeddings(
                connection, model or _require_active(connection), product_id
            )
        )

    def close_neighbours(
        self, refs: Sequence[ObjectRef], *, min_similarity: float, parameters: SearchParameters
    ) -> list[CloseNeighbour]:
        """For each embedded image of `refs`, its (at most k) nearest other images with cosine
        similarity >= min_similarity, through the HNSW index: one k-NN search per image, all
        in one statement (a LATERAL join), never a scan of all pairs."""
        if not refs:
            return []
        category = parameters.category

        def read(connection: psycopg.Connection[TupleRow]) -> list[CloseNeighbour]:
            model = _require_active(connection)
            exact = self._exact(connection, category)
            if not exact:
                connection.execute(
                    "SELECT set_config('hnsw.ef_search', %s, true), "
                    "set_config('hnsw.iterative_scan', %s, true)",
                    (
                        str(max(parameters.ef_search or self.ef_search, parameters.k)),
                        "off" if category is None else "relaxed_order",
                    ),
                )
            rows = connection.execute(
                close_neighbours_statement(model, exact=exact, category=category is not None),
                {
                    "buckets": [ref.bucket for ref in refs],
                    "keys": [ref.key for ref in refs],
                    "category": category,
                    "k": parameters.k,
                    "max_distance": 1.0 - min_similarity,
                },
            ).fetchall()
            return [
                CloseNeighbour(ObjectRef(row[0], row[1]), image_summary(row[2:8]), float(row[8]))
                for row in rows
            ]

        return self.store.run(read)

    def _exact(self, connection: psycopg.Connection[TupleRow], category: str | None) -> bool:
        return (
            category is not None
            and _category_size(connection, category, self.exact_category_threshold)
            <= self.exact_category_threshold
        )

    def _nearest(
        self,
        connection: psycopg.Connection[TupleRow],
        model: ModelRef,
        query: HalfVector,
        parameters: SearchParameters,
        *,
        while_active: bool = False,
    ) -> list[Neighbour]:
        exact = self._exact(connection, parameters.category)
        statement = search_statement(
            model,
            exact=exact,
            category=parameters.category is not None,
            exclude=parameters.exclude_product_id is not None,
            while_active=while_active,
        )
        k, max_distance = parameters.k, parameters.max_distance
        pool = min(max(POOL_FACTOR * k, MIN_POOL), MAX_EF_SEARCH)
        while True:
            if not exact:
                # Transaction-local (SET LOCAL semantics): safe on pooled connections. The
                # iterative scan keeps reading the graph until LIMIT rows pass the filters
                # (category, excluded product), where a plain HNSW scan stops at ef_search.
                connection.execute(
                    "SELECT set_config('hnsw.ef_search', %s, true), "
                    "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                    (str(max(parameters.ef_search or self.ef_search, pool)),),
                )
            rows = connection.execute(
                statement,
                {
                    "query": query,
                    "category": parameters.category,
                    "exclude": parameters.exclude_product_id,
                    "limit": pool,
                },
            ).fetchall()
            if while_active and not rows and active_model(connection) != model:
                # The statement's guard emptied it: the model was switched.
                self._active = None
                raise ModelNoLongerActiveError(f"{model.version} is no longer the active model")
            # relaxed_order returns rows slightly out of order: sort (stable, cheap) before
            # keeping each product's best image.
            rows.sort(key=lambda row: row[4])
            best: dict[str, Neighbour] = {}
            for row in rows:
                if max_distance is not None and row[4] > max_distance:
                    break
                if row[0] not in best:
                    best[row[0]] = Neighbour(*row)
                    if len(best) == k:
                        break
            exhausted = len(rows) < pool or (
                max_distance is not None and bool(rows) and rows[-1][4] > max_distance
            )
            if len(best) >= k or exhausted or pool >= MAX_EF_SEARCH:
                return list(best.values())
            pool = min(pool * POOL_GROWTH, MAX_EF_SEARCH)


def _require_active(connection: psycopg.Connection[TupleRow]) -> ModelRef:
    model = active_model(connection)
    if model is None:
        raise NoActiveModelError("no model is active: register and activate one (scripts/models.py)")
    return model


def _product_embeddings(
    connection: psycopg.Connection[TupleRow], model: ModelRef, product_id: str
) -> FloatArray:
    rows = connection.execute(
        "SELECT e.embedding FROM images AS i JOIN embeddings AS e ON e.image_id = i.id "
        "WHERE e.model_id = %s AND i.product_id = %s AND i.status = 'embedded' "
        "ORDER BY i.event_time DESC, i.key",
        (model.id, product_id),
    ).fetchall()
    if not rows:
        return np.empty((0, model.dimension), dtype=np.float32)
    return np.stack([row[0].to_numpy() for row in rows]).astype(np.float32)


def _category_size(connection: psycopg.Connection[TupleRow], category: str, threshold: int) -> int:
    """The category's embedded rows, counted up to threshold + 1 (an index-only scan of the
    partial category index; bounded, so a huge category costs no more than a small one)."""
    row = connection.execute(
        "SELECT count(*) FROM (SELECT 1 FROM images WHERE category = %s AND status = 'embedded' "
        "LIMIT %s) AS bounded",
        (category, threshold + 1),
    ).fetchone()
    return int(row[0]) if row is not None else 0


def _model_distance(model: ModelRef, alias: str, query: str) -> sql.Composed:
    """`alias.embedding::halfvec(D) <=> query`: the expression of the model's partial index."""
    return sql.SQL("{column}::halfvec({dimension}) <=> {query}").format(
        column=sql.Identifier(alias, "embedding"),
        dimension=sql.Literal(model.dimension),
        query=sql.SQL(query),
    )


@lru_cache(maxsize=256)
def search_statement(
    model: ModelRef, *, exact: bool, category: bool, exclude: bool, while_active: bool = False
) -> sql.Composed:
    """One fixed text per model and filter combination (so each can be a prepared statement).
    `while_active` adds a guard: no rows unless the model is still the active one, checked in
    the statement's own snapshot (one primary-key look-up, evaluated once).

    The exact path orders by `distance + 0`: an expression the HNSW index cannot serve, so the
    planner computes every distance of the category (through the category btree) and keeps
    the top rows: recall 1.0. Forcing it this way, not with `enable_indexscan = off`, keeps
    cached plans valid on pooled connections.
    """
    conditions = [sql.SQL("e.model_id = {}").format(sql.Literal(model.id)), sql.SQL("i.status = 'embedded'")]
    if category:
        conditions.append(sql.SQL("i.category = %(category)s"))
    if exclude:
        conditions.append(sql.SQL("i.product_id <> %(exclude)s"))
    if while_active:
        conditions.append(
            sql.SQL("EXISTS (SELECT 1 FROM models WHERE id = {} AND state = 'active')").format(
                sql.Literal(model.id)
            )
        )
    distance = _model_distance(model, "e", "%(query)s")
    order = sql.SQL("({}) + 0").format(distance) if exact else distance
    return sql.SQL(
        "SELECT i.product_id, i.bucket, i.key, i.category, {distance} AS distance, i.width, i.height "
        "FROM embeddings AS e JOIN images AS i ON i.id = e.image_id "
        "WHERE {conditions} ORDER BY {order} LIMIT %(limit)s"
    ).format(distance=distance, conditions=sql.SQL(" AND ").join(conditions), order=order)


@lru_cache(maxsize=64)
def close_neighbours_statement(model: ModelRef, *, exact: bool, category: bool) -> sql.Composed:
    """Per wanted image a k-NN search (the image's own vector of `model` as the query) in a
    LATERAL join; the same exact/iterative choice as `search_statement` when a category filters."""
    condition = sql.SQL(" AND near.category = %(category)s" if category else "")
    distance = _model_distance(model, "near_vector", "wanted_vector.embedding")
    order = sql.SQL("({}) + 0").format(distance) if exact else distance
    return sql.SQL(
        """SELECT wanted.bucket, wanted.key, found.bucket, found.key, found.product_id, found.category,
               found.width, found.height, found.distance
        FROM unnest(%(buckets)s::text[], %(keys)s::text[]) AS asked (bucket, key)
        JOIN images AS wanted
            ON wanted.bucket = asked.bucket AND wanted.key = asked.key AND wanted.status = 'embedded'
        JOIN embeddings AS wanted_vector
            ON wanted_vector.image_id = wanted.id AND wanted_vector.model_id = {model}
        CROSS JOIN LATERAL (
            SELECT near.bucket, near.key, near.product_id, near.category, near.width, near.height,
                   {distance} AS distance
            FROM embeddings AS near_vector JOIN images AS near ON near.id = near_vector.image_id
            WHERE near_vector.model_id = {model} AND near.status = 'embedded'{condition}
            ORDER BY {order}
            LIMIT %(k)s
        ) AS found
        WHERE found.distance <= %(max_distance)s
            AND (found.bucket, found.key) <> (wanted.bucket, wanted.key)
        ORDER BY wanted.bucket, wanted.key, found.distance, found.bucket, found.key"""
    ).format(condition=condition, order=order, distance=distance, model=sql.Literal(model.id))
