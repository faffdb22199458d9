"""Model versions side by side, against a real PostgreSQL: the registry's transitions and
refusals, writes per model, searches that never mix two models' vectors (the migration from the
first release's schema: test_model_migration.py).

Vectors are seeded random unit vectors here (the real models are exercised in
test_model_switch.py); model B's vectors are 256-d, model A's 1280-d.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from lookalike.ports import EventOrder, ObjectRef
from lookalike.search import similar_products
from lookalike.store import (
    ImageRecord,
    ModelRef,
    ModelRegistry,
    ModelSpec,
    RegisteredModel,
    RegistryError,
    SearchParameters,
    Store,
    VectorSearch,
)
from lookalike.store.search import ModelNoLongerActiveError, search_statement

FloatArray = npt.NDArray[np.float32]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
BUCKET = "photos"
A = "base-model/fp32/squash"
B = "tuned-model/fp32/squash"


def unit_vectors(count: int, dimension: int, seed: int) -> FloatArray:
    vectors = np.random.default_rng(seed).standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def image(
    key: str, vectors: dict[int, FloatArray], *, product: str | None = None, category: str = "c"
) -> ImageRecord:
    return ImageRecord(
        ref=ObjectRef(BUCKET, key),
        order=EventOrder(None, T0),
        product_id=product or key,
        category=category,
        etag=f"etag-{key}",
        size_bytes=1,
        width=1,
        height=1,
        embeddings=vectors,
    )


def evaluation(parent: str, before: float, after: float) -> dict[str, Any]:
    return {"evaluation": {"parent": parent, "before": {"recall@10": before}, "after": {"recall@10": after}}}


@pytest.fixture
def store(clean_database: str) -> Iterator[Store]:
    store = Store(clean_database)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def two_models(store: Store) -> tuple[RegisteredModel, RegisteredModel, FloatArray, FloatArray]:
    """A (1280-d, active) and B (256-d, building), 40 images with a vector of each."""
    registry = ModelRegistry(store)
    a = registry.add(ModelSpec(A, 1280, None, {"model_version": "base-model"}))
    registry.activate(A, force=True)
    b = registry.add(ModelSpec(B, 256, "0" * 64, evaluation(A, 0.80, 0.85)))
    vectors_a, vectors_b = unit_vectors(40, 1280, 1), unit_vectors(40, 256, 2)
    records = [image(f"k{i:02d}", {a.id: vectors_a[i], b.id: vectors_b[i]}) for i in range(40)]
    assert set(store.upsert_images(records)) == {"applied"}
    return registry.get(A), registry.get(B), vectors_a, vectors_b


# --- the registry ---------------------------------------------------------------------------------


def _snapshot(store: Store) -> list[RegisteredModel]:
    return ModelRegistry(store).models()


def test_refusals_are_clear_and_change_nothing(store: Store, two_models: Any) -> None:
    registry = ModelRegistry(store)
    before = _snapshot(store)
    with pytest.raises(RegistryError, match="dimension 5000 cannot be indexed"):
        registry.add(ModelSpec("huge/fp32/squash", 5000, None, None))
    with pytest.raises(RegistryError, match="already registered"):
        registry.add(ModelSpec(B, 256, None, None))
    with pytest.raises(RegistryError, match="unknown model version 'nope'"):
        registry.activate("nope")
    with pytest.raises(RegistryError, match="is the active model"):
        registry.retire(A)
    with pytest.raises(RegistryError, match="is already the active model"):
        registry.activate(A)
    with pytest.raises(RegistryError, match="no standby model"):
        registry.rollback()
    assert _snapshot(store) == before


def test_activation_needs_full_coverage_unless_partial_is_allowed(store: Store, two_models: Any) -> None:
    a, _b, vectors_a, _ = two_models
    store.upsert_images([image("only-a", {a.id: vectors_a[0]})])  # an upload before B was added
    registry = ModelRegistry(store)
    before = _snapshot(store)
    with pytest.raises(RegistryError, match=r"covers 40 of 41 images .* photos/only-a"):
        registry.activate(B)
    assert _snapshot(store) == before
    activation = registry.activate(B, allow_partial=True)
    assert (activation.uncovered, activation.uncovered_sample) == (1, [ObjectRef(BUCKET, "only-a")])
    assert (activation.model.state, activation.previous and activation.previous.state) == (
        "active",
        "standby",
    )


def test_activation_compares_held_out_metrics_with_the_active_model(store: Store, two_models: Any) -> None:
    a, b, vectors_a, vectors_b = two_models
    registry = ModelRegistry(store)
    worse = registry.add(ModelSpec("worse/fp32/squash", 256, None, evaluation(A, 0.80, 0.79)))
    unrelated = registry.add(ModelSpec("other/fp32/squash", 256, None, evaluation("someone-else", 0.1, 0.9)))
    silent = registry.add(ModelSpec("silent/fp32/squash", 256, None, None))
    for model in (worse, unrelated, silent):
        store.upsert_images(
            [
                image(f"k{i:02d}", {a.id: vectors_a[i], b.id: vectors_b[i], model.id: vectors_b[i]})
                for i in range(40)
            ]
        )
    before = _snapshot(store)
    with pytest.raises(RegistryError, match=r"worse than the active model's: recall@10 0.79 < 0.8"):
        registry.activate("worse/fp32/squash")
    with pytest.raises(RegistryError, match="measured against 'someone-else'"):
        registry.activate("other/fp32/squash")
    with pytest.raises(RegistryError, match="no held-out metrics"):
        registry.activate("silent/fp32/squash")
    assert _snapshot(store) == before
    assert registry.activate("silent/fp32/squash", force=True).model.state == "active"
    assert registry.get(A).state == "standby"


def test_activate_rollback_and_retire(store: Store, two_models: Any) -> None:
    a, b, _, vectors_b = two_models
    registry = ModelRegistry(store)
    search = VectorSearch(store)
    switched = registry.activate(B)  # its card's metrics beat A's (0.85 >= 0.80)
    assert (switched.model.version, switched.previous and switched.previous.version) == (B, A)
    assert search.active_model() == ModelRef(b.id, B, 256)
    assert search.nearest(vectors_b[7], SearchParameters(k=1))[0].key == "k07"

    # Rollback needs the standby model's vectors complete: one missing refuses it.
    with psycopg.connect(store_url(store)) as connection:
        connection.execute(
            "DELETE FROM embeddings "
            "WHERE model_id = %s AND image_id = (SELECT min(image_id) FROM embeddings)",
            (a.id,),
        )
    with pytest.raises(RegistryError, match="lacks vectors of 1 images"):
        registry.rollback()
    assert search.active_model() == ModelRef(b.id, B, 256)
    vectors_a = unit_vectors(40, 1280, 1)
    store.upsert_images([image(f"k{i:02d}", {a.id: vectors_a[i], b.id: vectors_b[i]}) for i in range(40)])
    back = registry.rollback()
    assert (back.model.version, back.previous and back.previous.state) == (A, "standby")

    retired = registry.retire(B)
    assert (retired.state, retired.images_embedded) == ("retired", 0)
    with psycopg.connect(store_url(store)) as connection:
        assert connection.execute("SELECT to_regclass(%s)", (f"embeddings_hnsw_{b.id}",)).fetchone() == (
            None,
        )
        assert connection.execute(
            "SELECT count(*) FROM embeddings WHERE model_id = %s", (b.id,)
        ).fetchone() == (0,)
    # A write carrying a retired model's vector keeps the others and never revives it.
    assert store.upsert_images([image("late", {a.id: vectors_a[0], b.id: vectors_b[0]})]) == ["applied"]
    assert ModelRegistry(store).get(B).images_embedded == 0
    with pytest.raises(RegistryError, match="retired"):
        registry.activate(B)
    assert [model["version"] for model in registry.status()] == [A]  # /health: not the retired one


def store_url(store: Store) -> str:
    return store._url


# --- searches name their model ----------------------------------------------------------------------


def test_a_search_only_ever_ranks_one_models_vectors(store: Store, two_models: Any) -> None:
    a, b, vectors_a, vectors_b = two_models
    search = VectorSearch(store)
    by_b = search.nearest(vectors_b[3], SearchParameters(k=40), model=b.ref)
    assert by_b[0].key == "k03"
    for neighbour in by_b:  # each distance is the one to the image's vector of model B
        index = int(neighbour.key[1:])
        assert neighbour.similarity == pytest.approx(float(vectors_b[index] @ vectors_b[3]), abs=2e-3)
    by_a = search.nearest(vectors_a[3], SearchParameters(k=40))  # the active model: A
    for neighbour in by_a:
        index = int(neighbour.key[1:])
        assert neighbour.similarity == pytest.approx(float(vectors_a[index] @ vectors_a[3]), abs=2e-3)
    with pytest.raises(ValueError, match=r"shape \(1280,\)"):
        search.nearest(vectors_b[3], SearchParameters(k=5))  # a B vector against the active A
    # The product query averages the product's vectors of the asked model only.
    assert search.product_embeddings("k05", model=b.ref).shape == (1, 256)
    assert search.product_embeddings("k05").shape == (1, 1280)
    # An image whose bytes changed gets exactly the new write's vectors: B's old one is gone.
    newer = ImageRecord(
        **{
            **_fields(image("k05", {a.id: vectors_a[6]})),
            "order": EventOrder(None, T0 + timedelta(hours=1)),
            "etag": "v2",
        }
    )
    assert store.upsert_images([newer]) == ["applied"]
    assert search.product_embeddings("k05", model=b.ref).shape == (0, 256)
    stored = store.get_image(ObjectRef(BUCKET, "k05"))
    assert stored is not None
    assert stored.model_versions == (A,)


def _fields(record: ImageRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in ImageRecord.__dataclass_fields__}


def _plan(store: Store, model: ModelRef, *, exact: bool) -> str:
    statement = search_statement(model, exact=exact, category=exact, exclude=False)
    with psycopg.connect(store_url(store)) as connection:
        register_vector(connection)
        # 40 rows: without these the planner rightly sorts; at scale it picks the index itself
        # (tests/integration/test_store.py, the 4000-row catalogue).
        connection.execute("SET enable_seqscan = off; SET enable_sort = off")
        rows = connection.execute(
            b"EXPLAIN " + statement.as_bytes(connection),
            {"query": HalfVector(np.ones(model.dimension, np.float32)), "category": "c", "limit": 10},
        ).fetchall()
    return "\n".join(row[0] for row in rows)


def test_each_model_is_searched_through_its_own_partial_index(store: Store, two_models: Any) -> None:
    a, b, _, _ = two_models
    assert f"embeddings_hnsw_{b.id}" in _plan(store, b.ref, exact=False)
    assert f"embeddings_hnsw_{a.id}" in _plan(store, a.ref, exact=False)
    exact = _plan(store, b.ref, exact=True)
    assert "embeddings_hnsw" not in exact, exact  # the category path computes every distance


def test_an_image_written_twice_in_one_batch_keeps_the_last_writes_vectors(
    store: Store, two_models: Any
) -> None:
    a, b, vectors_a, vectors_b = two_models
    first = image("twice", {a.id: vectors_a[1], b.id: vectors_b[1]})
    second = ImageRecord(
        **{**_fields(image("twice", {a.id: vectors_a[2]})), "order": EventOrder("0B", T0), "etag": "v2"}
    )
    first = ImageRecord(**{**_fields(first), "order": EventOrder("0A", T0)})
    assert store.upsert_images([first, second]) == ["applied", "applied"]
    search = VectorSearch(store)
    assert search.product_embeddings("twice", model=b.ref).shape == (0, 256)  # not the older bytes' vector
    (kept,) = search.product_embeddings("twice")
    assert float(kept @ vectors_a[2]) > 0.999


def test_concurrent_cold_starts_of_a_new_deployment_agree_on_one_active_model(clean_database: str) -> None:
    from lookalike.model_versions import ensure_active_model
    from lookalike.settings import get_settings

    Store(clean_database).migrate()
    stores = [Store(clean_database) for _ in range(4)]
    start = threading.Barrier(len(stores))
    results: list[ModelRef | BaseException] = []

    def cold_start(store: Store) -> None:
        start.wait()
        try:
            results.append(ensure_active_model(store, get_settings()))
        except BaseException as error:  # reported below, in the test's thread
            results.append(error)

    threads = [threading.Thread(target=cold_start, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1, results
    assert isinstance(results[0], ModelRef)
    assert [model.state for model in ModelRegistry(stores[0]).models()] == ["active"]
    for store in stores:
        store.close()


def test_tombstones_and_rejections_delete_every_models_vectors(store: Store, two_models: Any) -> None:
    from lookalike.store import Rejection

    registry = ModelRegistry(store)
    assert (
        store.delete_image(ObjectRef(BUCKET, "k01"), EventOrder(None, T0 + timedelta(hours=1))) == "applied"
    )
    rejection = Rejection(
        ObjectRef(BUCKET, "k02"), EventOrder(None, T0 + timedelta(hours=1)), "truncated", "x", 1
    )
    assert store.record_rejection(rejection) == "applied"
    assert [model.images_embedded for model in registry.models()] == [38, 38]
    with psycopg.connect(store_url(store)) as connection:
        left = connection.execute(
            "SELECT count(*) FROM embeddings e JOIN images i ON i.id = e.image_id "
            "WHERE i.key IN ('k01', 'k02')"
        ).fetchone()
    assert left == (0,)


def test_a_switch_made_elsewhere_is_noticed_by_the_next_search(store: Store, two_models: Any) -> None:
    """The process keeps the active model it read; a search made `while_active` checks in its own
    statement that the model still is, so a switch by another process (the CLI) is noticed on
    the next query: the old model's search raises, and the use-case retries with the new one."""
    a, b, vectors_a, vectors_b = two_models
    search, follower = VectorSearch(store), VectorSearch(store)
    assert search.active_model() == follower.active_model() == a.ref
    assert search.nearest(vectors_a[2], SearchParameters(k=3), model=a.ref, while_active=True)[0].key == "k02"
    other = Store(store_url(store))
    try:
        ModelRegistry(other).activate(B, force=True)  # another process switches
    finally:
        other.close()
    assert search.active_model() == a.ref  # still the remembered one: no registry read per query
    with pytest.raises(ModelNoLongerActiveError):
        search.nearest(vectors_a[2], SearchParameters(k=3), model=a.ref, while_active=True)
    assert search.active_model() == b.ref  # the failed search made it read the registry again
    # The use case follows the switch by itself (its first try, with A, is refused and it tries
    # again with B): the answer is by B, never by A's vectors.
    result = similar_products("k04", SearchParameters(k=3), search=follower)
    assert result.model == b.ref
    for neighbour in result.neighbours:
        index = int(neighbour.key[1:])
        assert neighbour.similarity == pytest.approx(float(vectors_b[index] @ vectors_b[4]), abs=2e-3)
