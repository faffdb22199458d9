"""Migration 0002 on a database created by the first release's schema (step 1 only) with rows
written in its columns: nothing lost (every vector bit for bit, statuses, tombstones), the models
registered, and a deployment that never switched models ranking exactly as before."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from lookalike.store import ModelRegistry, SearchParameters, Store, VectorSearch, migrations

FloatArray = npt.NDArray[np.float32]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
BUCKET = "photos"
A = "base-model/fp32/squash"
B = "tuned-model/fp32/squash"


def unit_vectors(count: int, dimension: int, seed: int) -> FloatArray:
    vectors = np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --- the migration from the first release ---------------------------------------------------------


def _first_release_database(url: str, rows: list[tuple[str, str, str | None, FloatArray | None]]) -> None:
    """Schema step 1 only (what the current release deploys), rows written with its columns."""
    with psycopg.connect(url) as connection:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
            migrations.migrate(connection)
        register_vector(connection)
        for key, status, version, vector in rows:
            connection.execute(
                "INSERT INTO images (bucket, key, status, product_id, category, etag, event_time, "
                "model_version, embedding, width, height) VALUES (%s, %s, %s, %s, 'c', %s, %s, %s, %s, 1, 1)",
                (
                    BUCKET,
                    key,
                    status,
                    f"p-{key}",
                    f"e-{key}",
                    T0,
                    version,
                    None if vector is None else HalfVector(vector),
                ),
            )


def _first_release_search(url: str, query: FloatArray, limit: int) -> list[tuple[str, float]]:
    """The first release's search statement (status filter, one embedding column)."""
    with psycopg.connect(url) as connection:
        register_vector(connection)
        rows = connection.execute(
            "SELECT key, embedding <=> %(q)s FROM images WHERE status = 'embedded' "
            "ORDER BY embedding <=> %(q)s LIMIT %(limit)s",
            {"q": HalfVector(query), "limit": limit},
        ).fetchall()
    return [(str(row[0]), float(row[1])) for row in rows]


def test_migration_from_the_first_release_keeps_every_vector(clean_database: str) -> None:
    vectors = unit_vectors(60, 1280, 3)
    rows: list[tuple[str, str, str | None, FloatArray | None]] = [
        (f"a{i:02d}", "embedded", A, vectors[i]) for i in range(45)
    ]
    rows += [(f"b{i:02d}", "embedded", B, vectors[45 + i]) for i in range(10)]  # a backfill half done
    rows += [("gone", "deleted", None, None), ("bad", "rejected", None, None)]
    _first_release_database(clean_database, rows)

    store = Store(clean_database)
    store.migrate()
    with psycopg.connect(clean_database) as connection:
        register_vector(connection)
        moved = {
            (row[0], row[1]): row[2].to_numpy()
            for row in connection.execute(
                "SELECT i.key, m.version, e.embedding FROM embeddings e "
                "JOIN images i ON i.id = e.image_id JOIN models m ON m.id = e.model_id"
            )
        }
        columns = {
            row[0]
            for row in connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'images'"
            )
        }
        statuses = dict(connection.execute("SELECT key, status FROM images").fetchall())
    expected = {(key, version): vector for key, _, version, vector in rows if vector is not None}
    assert set(moved) == set(expected)
    for name, vector in expected.items():  # bit for bit: halfvec in, halfvec out
        assert np.array_equal(moved[name], vector.astype(np.float16).astype(np.float32)), name
    assert statuses == {key: status for key, status, _, _ in rows}
    assert not {"embedding", "model_version"} & columns
    states = {
        model.version: (model.state, model.dimension, model.images_embedded)
        for model in ModelRegistry(store).models()
    }
    assert states == {A: ("active", 1280, 45), B: ("building", 1280, 10)}
    store.close()


def test_a_deployment_that_never_switched_models_searches_exactly_as_before(clean_database: str) -> None:
    vectors = unit_vectors(300, 1280, 4)
    _first_release_database(clean_database, [(f"k{i:03d}", "embedded", A, vectors[i]) for i in range(300)])
    queries = unit_vectors(5, 1280, 5)
    before = [_first_release_search(clean_database, query, 20) for query in queries]
    store = Store(clean_database)
    store.migrate()
    search = VectorSearch(store)
    for query, old in zip(queries, before, strict=True):
        new = search.nearest(query, SearchParameters(k=20))
        assert [n.key for n in new] == [key for key, _ in old]
        assert [n.distance for n in new] == pytest.approx([distance for _, distance in old], abs=1e-6)
    store.close()
