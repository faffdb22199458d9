"""The pgvector store against a real PostgreSQL: guarded writes, migrations, search, reconnects.

Embeddings are seeded random unit vectors (the real model is tested elsewhere).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg.conninfo import make_conninfo

from lookalike.ordering import normalise_sequencer
from lookalike.ports import EventOrder, ObjectRef
from lookalike.settings import SettingsError, get_settings
from lookalike.store import (
    EMBEDDING_DIM,
    ImageRecord,
    ModelRef,
    ModelRegistry,
    ModelSpec,
    Rejection,
    SearchParameters,
    Store,
    VectorSearch,
)
from lookalike.store.search import search_statement
from lookalike_aws.runtime import get_search, get_store, reset_runtime
from lookalike_local.bulk_load import BulkRow, reload_images
from lookalike_local.embedded_db import EmbeddedPostgres

FloatArray = npt.NDArray[np.float32]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
BUCKET = "photos"
MODEL_VERSION = "efficientnet-lite0/fp32/squash"
MODEL_ID = 1  # the first model registered in a fresh schema (the `store` fixture checks it)


def unit_vectors(count: int, seed: int) -> FloatArray:
    vectors = np.random.default_rng(seed).standard_normal((count, EMBEDDING_DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def near(vector: FloatArray, noise: float, seed: int) -> FloatArray:
    """A unit vector close to `vector` (cosine ~ 1 / sqrt(1 + noise^2 * dim))."""
    moved = vector + np.random.default_rng(seed).standard_normal(EMBEDDING_DIM).astype(np.float32) * noise
    return (moved / np.linalg.norm(moved)).astype(np.float32)


def record(
    key: str,
    *,
    sequencer: str | None = None,
    at: datetime = T0,
    product_id: str = "p1",
    category: str | None = "shoes",
    etag: str = "etag-1",
    embedding: FloatArray | None = None,
    seed: int = 0,
) -> ImageRecord:
    return ImageRecord(
        ref=ObjectRef(BUCKET, key),
        order=EventOrder(sequencer, at),
        product_id=product_id,
        category=category,
        etag=etag,
        size_bytes=12_345,
        width=640,
        height=480,
        embeddings={MODEL_ID: unit_vectors(1, seed)[0] if embedding is None else embedding},
    )


@pytest.fixture
def store(clean_database: str) -> Iterator[Store]:
    """A migrated store with one active 1280-d model (MODEL_ID)."""
    store = Store(clean_database)
    store.migrate()
    registry = ModelRegistry(store)
    assert registry.add(ModelSpec(MODEL_VERSION, EMBEDDING_DIM, None, None)).id == MODEL_ID
    registry.activate(MODEL_VERSION, force=True)
    yield store
    store.close()


# --- migration -----------------------------------------------------------------------------------


def test_migration_is_idempotent_and_safe_from_two_connections_at_once(clean_database: str) -> None:
    stores = [Store(clean_database) for _ in range(2)]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def migrate_twice(store: Store) -> None:
        try:
            start.wait()
            store.migrate()
            store.migrate()
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=migrate_twice, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    with psycopg.connect(clean_database) as connection:
        versions = connection.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert versions == [(1,), (2,), (3,)]
        storage = connection.execute(
            "SELECT attstorage FROM pg_attribute "
            "WHERE attrelid = 'embeddings'::regclass AND attname = 'embedding'"
        ).fetchone()
        assert storage == ("p",)  # PLAIN: no TOAST (docs/BENCHMARKS.md, "Storage")
        options = connection.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'embeddings'"
        ).fetchone()
        assert options == (["parallel_workers=2"],)
        indexes = {row[0]: row[1] for row in connection.execute("SELECT indexname, indexdef FROM pg_indexes")}
        assert {"images_product", "images_category", "embeddings_image", "models_one_active"} <= set(indexes)
        assert not {"images_embedding_hnsw", "images_model_version"} & set(indexes)  # moved to step 2
        # A new deployment has no model yet: its first process registers the configured one.
        assert connection.execute("SELECT count(*) FROM models").fetchone() == (0,)
    for store in stores:
        assert store.count_images() == 0
        store.close()


# --- writes and ordering -------------------------------------------------------------------------


def test_upsert_then_get_round_trip(store: Store) -> None:
    embedding = unit_vectors(1, seed=1)[0]
    assert store.upsert_images([record("a.jpg", sequencer="0A", embedding=embedding)]) == ["applied"]

    stored = store.get_image(ObjectRef(BUCKET, "a.jpg"))
    assert stored is not None
    assert (stored.bucket, stored.key, stored.product_id, stored.category, stored.etag) == (
        BUCKET,
        "a.jpg",
        "p1",
        "shoes",
        "etag-1",
    )
    assert (stored.size_bytes, stored.width, stored.height) == (12_345, 640, 480)
    assert stored.model_versions == (MODEL_VERSION,)
    assert stored.event_time == T0
    assert stored.created_at == stored.updated_at
    assert store.get_product("p1") == [stored]
    assert store.count_images() == 1
    assert store.get_image(ObjectRef(BUCKET, "other.jpg")) is None
    assert store.get_image(ObjectRef("other-bucket", "a.jpg")) is None

    embeddings = VectorSearch(store).product_embeddings("p1")
    assert embeddings.shape == (1, EMBEDDING_DIM)
    assert embeddings.dtype == np.float32
    cosine = float(embeddings[0] @ embedding / np.linalg.norm(embeddings[0]))
    assert cosine > 0.9999  # halfvec precision
    assert VectorSearch(store).product_embeddings("unknown").shape == (0, EMBEDDING_DIM)


def test_get_product_lists_its_images_newest_first(store: Store) -> None:
    store.upsert_images(
        [
            record("old.jpg", at=T0, seed=1),
            record("new.jpg", at=T0 + timedelta(hours=1), seed=2),
            record("other.jpg", product_id="p2", seed=3),
        ]
    )
    assert [image.key for image in store.get_product("p1")] == ["new.jpg", "old.jpg"]
    assert store.get_product("nobody") == []


@pytest.mark.parametrize("sequencer", ["0055AED6DCD90281E5", None])
def test_a_duplicate_event_changes_nothing(store: Store, sequencer: str | None) -> None:
    first = record("a.jpg", sequencer=sequencer)
    assert store.upsert_images([first]) == ["applied"]
    before = store.get_image(first.ref)
    assert store.upsert_images([first]) == ["stale"]
    assert store.get_image(first.ref) == before  # updated_at included


def test_an_older_sequencer_never_overwrites_a_newer_state(store: Store) -> None:
    newer = record("a.jpg", sequencer="0055AED6DCD90281E6", etag="new", product_id="p-new", seed=2)
    older = record("a.jpg", sequencer="0055AED6DCD90281E5", etag="old", product_id="p-old", seed=1)
    # The older event even carries a later event time: the sequencer decides.
    older = ImageRecord(
        **{**_fields(older), "order": EventOrder("0055AED6DCD90281E5", T0 + timedelta(days=1))}
    )
    assert store.upsert_images([newer]) == ["applied"]
    assert store.upsert_images([older]) == ["stale"]
    stored = store.get_image(newer.ref)
    assert stored is not None
    assert (stored.etag, stored.product_id) == ("new", "p-new")
    assert store.get_product("p-old") == []


def test_a_batch_with_two_events_of_one_key_keeps_the_newer(store: Store) -> None:
    newer = record("a.jpg", sequencer="0B", etag="new")
    older = record("a.jpg", sequencer="0A", etag="old")
    assert store.upsert_images([newer, older]) == ["applied", "stale"]
    assert store.upsert_images([record("b.jpg", sequencer="0A"), record("b.jpg", sequencer="0B")]) == [
        "applied",
        "applied",
    ]
    stored = store.get_image(newer.ref)
    assert stored is not None
    assert stored.etag == "new"


def test_sequencers_of_different_lengths_compare_right_padded(store: Store) -> None:
    short, padded = "0055AED6DCD90281E5", "0055AED6DCD90281E500"
    assert store.upsert_images([record("a.jpg", sequencer=short, etag="1")]) == ["applied"]
    # The same value once padded: a duplicate, not a newer event.
    assert store.upsert_images([record("a.jpg", sequencer=padded, etag="2")]) == ["stale"]
    # Longer but smaller once padded ("...E4FF" < "...E500").
    assert store.upsert_images([record("a.jpg", sequencer="0055AED6DCD90281E4FF", etag="3")]) == ["stale"]
    assert store.upsert_images([record("a.jpg", sequencer="0055AED6DCD90281E501", etag="4")]) == ["applied"]
    # Longer than the stored width (64): compared after padding both to the longer one.
    huge = "0055AED6DCD90281E501" + "0" * 50 + "1"
    assert store.upsert_images([record("a.jpg", sequencer=huge, etag="5")]) == ["applied"]
    assert store.upsert_images([record("a.jpg", sequencer=huge[:-1], etag="6")]) == ["stale"]
    stored = store.get_image(ObjectRef(BUCKET, "a.jpg"))
    assert stored is not None
    assert stored.etag == "5"


def test_a_non_hex_sequencer_falls_back_to_event_time(store: Store) -> None:
    assert normalise_sequencer("Happy Sequencer") is None
    first = record("a.jpg", sequencer="Happy Sequencer", at=T0, etag="1")
    assert store.upsert_images([first]) == ["applied"]
    later = record("a.jpg", sequencer="sequencer", at=T0 + timedelta(seconds=1), etag="2")
    earlier = record("a.jpg", sequencer="", at=T0 - timedelta(seconds=1), etag="0")
    assert store.upsert_images([later, earlier]) == ["applied", "stale"]
    # One side with a sequencer, the other without: event time decides too.
    assert store.upsert_images([record("a.jpg", sequencer="0A", at=T0, etag="3")]) == ["stale"]
    assert store.upsert_images([record("a.jpg", sequencer="0A", at=T0 + timedelta(seconds=2), etag="4")]) == [
        "applied"
    ]
    stored = store.get_image(first.ref)
    assert stored is not None
    assert stored.etag == "4"


def test_concurrent_upserts_of_one_key_keep_the_largest_sequencer(store: Store, clean_database: str) -> None:
    sequencers = [f"{value:016X}" for value in random.Random(5).sample(range(1, 10**12), 24)]
    random.Random(6).shuffle(sequencers)
    stores = [Store(clean_database) for _ in range(6)]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            start.wait()
            for sequencer in sequencers[index :: len(stores)]:
                stores[index].upsert_images([record("race.jpg", sequencer=sequencer, etag=sequencer)])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(index,)) for index in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = stores[0].get_image(ObjectRef(BUCKET, "race.jpg"))
    assert stored is not None
    assert stored.etag == max(sequencers)
    for store in stores:
        store.close()


def test_delete_hides_the_image_from_get_and_search(store: Store) -> None:
    image = record("a.jpg", sequencer="0A", seed=3)
    store.upsert_images([image, record("b.jpg", product_id="p2", seed=4)])
    assert store.delete_image(image.ref, EventOrder("0B", T0)) == "applied"
    assert store.get_image(image.ref) is None
    assert store.get_product("p1") == []
    assert store.count_images() == 1
    assert [
        n.key for n in VectorSearch(store).nearest(image.embeddings[MODEL_ID], SearchParameters(k=5))
    ] == ["b.jpg"]
    assert VectorSearch(store).similar_to_product("p1", SearchParameters(k=5)) is None
    # Redelivered delete: nothing to do.
    assert store.delete_image(image.ref, EventOrder("0B", T0)) == "stale"


def test_delete_then_late_older_create_does_not_resurrect(store: Store) -> None:
    ref = ObjectRef(BUCKET, "never-seen.jpg")
    # A delete of a key the store has never seen leaves a tombstone ...
    assert store.delete_image(ref, EventOrder("0B", T0)) == "applied"
    # ... so the create that happened before it, arriving late, is stale.
    assert store.upsert_images([record("never-seen.jpg", sequencer="0A")]) == ["stale"]
    assert store.get_image(ref) is None
    assert store.count_images() == 0
    # Same without sequencers: event time decides.
    other = ObjectRef(BUCKET, "moto.jpg")
    assert store.delete_image(other, EventOrder(None, T0)) == "applied"
    assert store.upsert_images([record("moto.jpg", at=T0 - timedelta(milliseconds=1))]) == ["stale"]
    assert store.get_image(other) is None


def test_create_after_delete_with_a_newer_sequencer_re_embeds(store: Store) -> None:
    ref = ObjectRef(BUCKET, "a.jpg")
    store.upsert_images([record("a.jpg", sequencer="0A", etag="first")])
    store.delete_image(ref, EventOrder("0B", T0))
    assert store.upsert_images([record("a.jpg", sequencer="0C", etag="again")]) == ["applied"]
    stored = store.get_image(ref)
    assert stored is not None
    assert stored.etag == "again"
    assert stored.updated_at > stored.created_at


def test_rejection_is_logged_once_and_hides_an_older_embedded_image(store: Store) -> None:
    ref = ObjectRef(BUCKET, "a.jpg")
    store.upsert_images([record("a.jpg", sequencer="0A")])
    rejection = Rejection(ref, EventOrder("0B", T0), "truncated", "image file is truncated", 999)
    assert store.record_rejection(rejection) == "applied"
    assert store.get_image(ref) is None  # the object at this key is no longer the embedded image
    assert store.count_images() == 0
    assert store.record_rejection(rejection) == "stale"  # redelivered: no second row
    [row] = store.rejections()
    assert (row.ref, row.reason, row.detail, row.size_bytes) == (
        ref,
        "truncated",
        "image file is truncated",
        999,
    )
    assert row.sequencer == normalise_sequencer("0B")
    assert row.event_time == T0

    # A rejection older than the stored state is still logged, but changes nothing.
    store.upsert_images([record("a.jpg", sequencer="0D", etag="good")])
    stale = Rejection(ref, EventOrder("0C", T0), "corrupt", "broken data", None)
    assert store.record_rejection(stale) == "stale"
    assert store.get_image(ref) is not None
    assert [row.reason for row in store.rejections()] == ["corrupt", "truncated"]  # newest first
    # Without a sequencer, a redelivered rejection is deduplicated as well.
    plain = Rejection(ObjectRef(BUCKET, "b.jpg"), EventOrder(None, T0), "empty", "zero bytes", 0)
    assert store.record_rejection(plain) == "applied"
    assert store.record_rejection(plain) == "stale"
    assert len(store.rejections(limit=10)) == 3
    assert len(store.rejections(limit=1)) == 1


def test_invalid_input_is_refused_before_touching_the_database(store: Store) -> None:
    with pytest.raises(ValueError, match="shape"):
        store.upsert_images([record("a.jpg", embedding=np.ones(3, dtype=np.float32))])
    with pytest.raises(ValueError, match="non-zero"):
        store.upsert_images([record("a.jpg", embedding=np.zeros(EMBEDDING_DIM, dtype=np.float32))])
    with pytest.raises(ValueError, match="timezone"):
        store.delete_image(ObjectRef(BUCKET, "a.jpg"), EventOrder(None, datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="k must be"):
        VectorSearch(store).nearest(unit_vectors(1, 0)[0], SearchParameters(k=0))
    assert store.upsert_images([]) == []
    assert store.count_images() == 0


# --- search --------------------------------------------------------------------------------------


@pytest.fixture
def catalogue(store: Store) -> dict[str, FloatArray]:
    """12 products with 1-3 images each, in two categories; returns the product 'anchors'."""
    anchors = unit_vectors(12, seed=42)
    records = []
    for index, anchor in enumerate(anchors):
        for view in range(1 + index % 3):
            records.append(
                record(
                    f"p{index}/{view}.jpg",
                    product_id=f"p{index}",
                    category="shoes" if index % 2 == 0 else "bags",
                    embedding=near(anchor, 0.02 * (view + 1), seed=100 * index + view),
                )
            )
    assert set(store.upsert_images(records)) == {"applied"}
    return {f"p{index}": anchor for index, anchor in enumerate(anchors)}


def test_search_orders_by_distance_and_returns_each_product_once(
    store: Store, catalogue: dict[str, FloatArray]
) -> None:
    query = near(catalogue["p5"], 0.01, seed=1)
    results = VectorSearch(store).nearest(query, SearchParameters(k=5))
    assert len(results) == 5
    assert results[0].product_id == "p5"
    assert results[0].key == "p5/0.jpg"  # the product's best (least perturbed) image
    assert results[0].similarity > 0.7  # the rest are near-orthogonal random vectors (~0)
    assert [n.distance for n in results] == sorted(n.distance for n in results)
    assert len({n.product_id for n in results}) == 5
    # Exact reference (products' best images, halfvec-rounded) in numpy.
    search = VectorSearch(store)
    expected = sorted(
        catalogue, key=lambda product: -max(float(e @ query) for e in search.product_embeddings(product))
    )
    assert [n.product_id for n in results] == expected[:5]
    assert (results[0].width, results[0].height, results[0].bucket) == (640, 480, BUCKET)
    assert [n.product_id for n in VectorSearch(store).nearest(query, SearchParameters(k=12))] == expected
    assert (
        len(VectorSearch(store).nearest(query, SearchParameters(k=100))) == 12
    )  # fewer products than k: all of them


def test_search_excludes_a_product_and_applies_min_similarity(
    store: Store, catalogue: dict[str, FloatArray]
) -> None:
    query = near(catalogue["p5"], 0.01, seed=1)
    assert "p5" not in {
        n.product_id
        for n in VectorSearch(store).nearest(query, SearchParameters(k=11, exclude_product_id="p5"))
    }
    assert len(VectorSearch(store).nearest(query, SearchParameters(k=11, exclude_product_id="p5"))) == 11
    # Random 1280-d vectors are nearly orthogonal: only p5 is similar to its own neighbourhood.
    close = VectorSearch(store).nearest(query, SearchParameters(k=10, min_similarity=0.5))
    assert [n.product_id for n in close] == ["p5"]
    assert (
        VectorSearch(store).nearest(
            query, SearchParameters(k=10, min_similarity=0.5, exclude_product_id="p5")
        )
        == []
    )
    assert len(VectorSearch(store).nearest(query, SearchParameters(k=10, min_similarity=-1.0))) == 10


def test_category_filter_exact_path(store: Store, catalogue: dict[str, FloatArray]) -> None:
    query = near(catalogue["p5"], 0.01, seed=1)  # p5 is a bag
    shoes = VectorSearch(store).nearest(query, SearchParameters(k=4, category="shoes"))
    assert len(shoes) == 4
    assert {n.category for n in shoes} == {"shoes"}
    all_products = VectorSearch(store).nearest(query, SearchParameters(k=12))
    assert [n.product_id for n in shoes] == [n.product_id for n in all_products if n.category == "shoes"][:4]
    assert len(VectorSearch(store).nearest(query, SearchParameters(k=50, category="shoes"))) == 6
    assert VectorSearch(store).nearest(query, SearchParameters(k=5, category="hats")) == []


def test_similar_to_product_excludes_itself(store: Store, catalogue: dict[str, FloatArray]) -> None:
    similar = VectorSearch(store).similar_to_product("p5", SearchParameters(k=3))
    assert similar is not None
    assert len(similar) == 3
    assert "p5" not in {n.product_id for n in similar}
    # The query is the normalised mean of the product's images.
    mean = VectorSearch(store).product_embeddings("p5").mean(axis=0)
    assert similar == VectorSearch(store).nearest(
        mean / np.linalg.norm(mean), SearchParameters(k=3, exclude_product_id="p5")
    )
    bags = VectorSearch(store).similar_to_product("p5", SearchParameters(k=20, category="bags"))
    assert bags is not None
    assert {n.product_id for n in bags} == {f"p{index}" for index in range(1, 12, 2)} - {"p5"}
    assert VectorSearch(store).similar_to_product("unknown", SearchParameters(k=3)) is None


# --- the HNSW path: a table large enough for the planner to use the index -------------------------


@pytest.fixture(scope="module")
def large_catalogue(postgres_url: str) -> Iterator[tuple[str, FloatArray, npt.NDArray[np.bool_]]]:
    """4000 rows in a database of their own (bulk-loaded: the guarded path is tested above).

    Half the rows are category "half", the rest "other"; product "dup" has 60 near-identical
    images around vector 0. Yields (url, vectors, is_half).
    """
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("DROP DATABASE IF EXISTS lookalike_test_store_hnsw WITH (FORCE)")
        connection.execute("CREATE DATABASE lookalike_test_store_hnsw")
    url = make_conninfo(postgres_url, dbname="lookalike_test_store_hnsw")
    vectors = unit_vectors(4000, seed=9)
    is_half = np.random.default_rng(10).random(4000) < 0.5
    for index in range(60):
        vectors[index] = near(vectors[0], 0.01, seed=index)
    rows = [
        BulkRow(
            "dup" if index < 60 else f"p{index}", "half" if is_half[index] else "other", f"k{index}", 1, 1
        )
        for index in range(4000)
    ]
    reload_images(url, bucket=BUCKET, model_version=MODEL_VERSION, rows=rows, vectors=vectors)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE images")
        connection.execute("VACUUM ANALYZE embeddings")
    yield url, vectors, is_half
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("DROP DATABASE IF EXISTS lookalike_test_store_hnsw WITH (FORCE)")


def _scans(url: str, *, category: bool, exclude: bool, query: FloatArray) -> str:
    """The planner's scan for the store's statement (so the tests below exercise HNSW)."""
    with psycopg.connect(url) as connection:
        register_vector(connection)
        statement = search_statement(
            ModelRef(MODEL_ID, MODEL_VERSION, EMBEDDING_DIM), exact=False, category=category, exclude=exclude
        )
        parameters: dict[str, Any] = {
            "query": HalfVector(query),
            "category": "half",
            "exclude": "x",
            "limit": 40,
        }
        plan = connection.execute(b"EXPLAIN " + statement.as_bytes(connection), parameters).fetchall()
    return " ".join(row[0] for row in plan if "Scan" in row[0])


def test_iterative_scan_fills_k_when_the_nearest_rows_are_filtered_out(
    large_catalogue: tuple[str, FloatArray, npt.NDArray[np.bool_]],
) -> None:
    url, vectors, _ = large_catalogue
    query = near(vectors[0], 0.01, seed=99)
    assert "embeddings_hnsw_1" in _scans(url, category=False, exclude=True, query=query)
    # ef_search 10: a plain HNSW scan would stop at dup's 60 images, all excluded.
    store = Store(url)
    try:
        search = VectorSearch(store, ef_search=10)
        results = search.nearest(query, SearchParameters(k=10, exclude_product_id="dup", ef_search=10))
        assert len(results) == 10
        assert "dup" not in {n.product_id for n in results}
        assert VectorSearch(store).nearest(query, SearchParameters(k=3))[0].product_id == "dup"
        assert (
            len(VectorSearch(store).nearest(query, SearchParameters(k=3))) == 3
        )  # 60 images of dup count once
    finally:
        store.close()


def test_category_filter_iterative_path_returns_k_of_the_category(
    large_catalogue: tuple[str, FloatArray, npt.NDArray[np.bool_]],
) -> None:
    url, vectors, is_half = large_catalogue
    # Queries next to rows of the *other* category: the graph's nearest rows are filtered out.
    others = np.flatnonzero(~is_half)[60:70]
    assert "embeddings_hnsw_1" in _scans(url, category=True, exclude=False, query=vectors[others[0]])
    iterative = VectorSearch(Store(url), exact_category_threshold=0)  # always the HNSW path
    exact = VectorSearch(Store(url))  # 2000 rows: the exact path
    candidates = np.flatnonzero(is_half)
    rounded = vectors[candidates].astype(np.float16).astype(np.float32)
    try:
        recalls = []
        for index in others:
            truth = {f"p{candidates[i]}" for i in np.argsort(-(rounded @ vectors[index]))[:10]}
            found = iterative.nearest(vectors[index], SearchParameters(k=10, category="half"))
            assert len(found) == 10
            assert {n.category for n in found} == {"half"}
            assert [n.distance for n in found] == sorted(n.distance for n in found)  # re-sorted
            recalls.append(len(truth & {n.product_id for n in found}) / 10)
            assert {
                n.product_id for n in exact.nearest(vectors[index], SearchParameters(k=10, category="half"))
            } == truth
        assert np.mean(recalls) >= 0.8
    finally:
        iterative.store.close()
        exact.store.close()


# --- connections -----------------------------------------------------------------------------------


def test_reconnects_after_the_server_restarts(store: Store, embedded_postgres: EmbeddedPostgres) -> None:
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("restarts the embedded server")
    store.upsert_images([record("a.jpg", sequencer="0A")])
    assert store.count_images() == 1
    embedded_postgres.stop()
    try:
        with pytest.raises(psycopg.OperationalError):
            store.count_images()
        with pytest.raises(psycopg.OperationalError):
            store.upsert_images([record("b.jpg", sequencer="0A", seed=2)])
        with pytest.raises(psycopg.OperationalError):
            store.ping()
    finally:
        embedded_postgres.start()
    # A new connection, without reset_store / close.
    store.ping()
    assert store.upsert_images([record("b.jpg", sequencer="0A", seed=2)]) == ["applied"]
    assert store.count_images() == 2
    # The server restarts between two calls: the stale connection is replaced transparently.
    embedded_postgres.stop()
    embedded_postgres.start()
    assert store.count_images() == 2
    assert store.delete_image(ObjectRef(BUCKET, "b.jpg"), EventOrder("0B", T0)) == "applied"


def test_get_store_is_process_wide_and_needs_database_url(
    clean_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Settings insist on a model card; the store does not use the model.
    (tmp_path / "model_card.json").write_text("{}")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    reset_runtime()
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SettingsError, match="DATABASE_URL is not set"):
        get_store()
    monkeypatch.setenv("DATABASE_URL", clean_database)
    monkeypatch.setenv("DB_PREPARE_THRESHOLD", "none")
    monkeypatch.setenv("HNSW_EF_SEARCH", "64")
    get_settings.cache_clear()
    try:
        store = get_store()
        assert get_store() is store
        assert get_search().ef_search == 64
        store.migrate()
        ModelRegistry(store).add(ModelSpec(MODEL_VERSION, EMBEDDING_DIM, None, None))
        ModelRegistry(store).activate(MODEL_VERSION, force=True)
        store.upsert_images([record("a.jpg")])
        assert (
            VectorSearch(store).nearest(unit_vectors(1, 0)[0], SearchParameters(k=1))[0].key == "a.jpg"
        )  # no prepared statements
        reset_runtime()
        assert get_store() is not store
    finally:
        reset_runtime()


def _fields(image: ImageRecord) -> dict[str, Any]:
    return {name: getattr(image, name) for name in ImageRecord.__dataclass_fields__}


def test_a_write_behind_a_held_row_lock_fails_fast_instead_of_waiting(
    store: Store, clean_database: str
) -> None:
    """A batch stuck behind another transaction's row lock must fail (and be retried) after the
    lock timeout, not hold the function until its own timeout."""
    setup = Store(clean_database)
    setup.upsert_images([record("locked.jpg", sequencer="01")])
    setup.close()
    store = Store(clean_database, lock_timeout_ms=200, statement_timeout_ms=5_000)
    outcome: dict[str, BaseException | str] = {}

    def write() -> None:
        try:
            outcome["result"] = store.upsert_images([record("locked.jpg", sequencer="02")])[0]
        except BaseException as error:
            outcome["result"] = error

    with psycopg.connect(clean_database) as holder:
        holder.execute("SELECT 1 FROM images WHERE key = 'locked.jpg' FOR UPDATE")
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=20)  # without the timeout it would wait as long as the lock is held
        assert not writer.is_alive(), "the write waited for the lock instead of failing fast"
        holder.rollback()
    assert isinstance(outcome["result"], psycopg.errors.LockNotAvailable), outcome
    assert isinstance(outcome["result"], psycopg.OperationalError)  # what ingest retries
    assert store.upsert_images([record("locked.jpg", sequencer="02")]) == ["applied"]  # after release
    store.close()
