"""Near-duplicate groups on the embedded PostgreSQL, from the real model's embeddings of real
photos and edited copies of them (re-encoded, resized, brightened, mirrored)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from PIL import Image, ImageEnhance, ImageOps

from lookalike.duplicates import (
    DEFAULT_THRESHOLD,
    InvalidCursorError,
    all_duplicate_groups,
    decode_cursor,
    duplicate_groups_page,
    encode_cursor,
)
from lookalike.model.embedder import FloatArray, get_embedder
from lookalike.model_versions import ensure_active_model
from lookalike.ports import EventOrder, ObjectRef
from lookalike.settings import get_settings
from lookalike.store import ImageRecord, Store, VectorSearch
from lookalike_local.samples import SamplePhoto

BUCKET = "photos"
DUPLICATED = 6  # the first photos get edited copies; the others stand alone
CATEGORY_A = 3  # photos 0..2 are in category "a", the rest in "b"


def _edits(image: Image.Image) -> dict[str, Image.Image]:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=40)
    return {
        "jpeg-q40": Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"),
        "half-size": image.resize((image.width // 2, image.height // 2)),
        "brighter": ImageEnhance.Brightness(image).enhance(1.3),
        "mirrored": ImageOps.mirror(image),
    }


@pytest.fixture(scope="module")
def catalogue(photos: list[SamplePhoto]) -> list[tuple[str, str, str, FloatArray]]:
    """(key, product_id, category, embedding) for every original and copy."""
    images: list[tuple[str, str, str, Image.Image]] = []
    for index, photo in enumerate(photos):
        category = "a" if index < CATEGORY_A else "b"
        original = photo.open_rgb()
        images.append((f"{photo.name}/original.jpg", photo.name, category, original))
        if index < DUPLICATED:
            # Copies as a shop gets them: re-uploaded under another product id.
            for edit, copy in _edits(original).items():
                images.append((f"{photo.name}-{edit}/copy.jpg", f"{photo.name}-{edit}", category, copy))
    embeddings = get_embedder().embed([image for *_, image in images]).vectors
    return [(key, product, category, embeddings[i]) for i, (key, product, category, _) in enumerate(images)]


@pytest.fixture
def store(clean_database: str, catalogue: list[tuple[str, str, str, FloatArray]]) -> Iterator[Store]:
    store = Store(clean_database)
    store.migrate()
    model = ensure_active_model(store, get_settings())  # the configured model, as a deployment does
    at = datetime(2026, 1, 1, tzinfo=UTC)
    store.upsert_images(
        [
            ImageRecord(
                ref=ObjectRef(BUCKET, key),
                order=EventOrder(None, at),
                product_id=product,
                category=category,
                etag=key,
                size_bytes=1,
                width=10,
                height=10,
                embeddings={model.id: embedding},
            )
            for key, product, category, embedding in catalogue
        ]
    )
    yield store
    store.close()


def expected_groups(photos: list[SamplePhoto], count: int = DUPLICATED) -> set[frozenset[str]]:
    edits = ("jpeg-q40", "half-size", "brighter", "mirrored")
    return {
        frozenset([f"{photo.name}/original.jpg"] + [f"{photo.name}-{edit}/copy.jpg" for edit in edits])
        for photo in photos[:count]
    }


def keys_of(groups: list[object]) -> list[frozenset[str]]:
    return [frozenset(member.image.ref.key for member in group.members) for group in groups]  # type: ignore[attr-defined]


def test_finds_the_edited_copies_and_nothing_spurious(store: Store, photos: list[SamplePhoto]) -> None:
    groups = list(all_duplicate_groups(VectorSearch(store)))
    assert set(keys_of(groups)) == expected_groups(photos)
    assert len(groups) == DUPLICATED
    for group in groups:
        assert group.min_similarity >= DEFAULT_THRESHOLD
        assert group.anchor.key == min(member.image.ref.key for member in group.members)
        assert len(group.products) == 5
        assert group.as_dict()["size"] == 5


def test_pages_cover_every_group_exactly_once(store: Store, photos: list[SamplePhoto]) -> None:
    seen: list[frozenset[str]] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = duplicate_groups_page(VectorSearch(store), limit=2, cursor=cursor, scan_limit=7)
        assert len(page.groups) <= 2
        assert page.scanned <= 7
        seen += keys_of(page.groups)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == DUPLICATED
    assert set(seen) == expected_groups(photos)
    assert pages >= 4  # short, scan-limited pages with a cursor rather than one long request
    # Stable: the same request gives the same page.
    search = VectorSearch(store)
    first = keys_of(duplicate_groups_page(search, limit=2, scan_limit=7).groups)
    assert first == keys_of(duplicate_groups_page(search, limit=2, scan_limit=7).groups) == seen[: len(first)]


def test_category_filter_and_threshold(store: Store, photos: list[SamplePhoto]) -> None:
    only_a = list(all_duplicate_groups(VectorSearch(store), category="a"))
    assert set(keys_of(only_a)) == expected_groups(photos, CATEGORY_A)
    assert all(member.image.category == "a" for group in only_a for member in group.members)
    assert list(all_duplicate_groups(VectorSearch(store), category="nothing-here")) == []
    # A stricter threshold keeps only the closest copies (a half-size copy: cosine > 0.99); a
    # loose one merges unrelated photos.
    strict = list(all_duplicate_groups(VectorSearch(store), threshold=0.995))
    assert all(len(group.members) < 5 for group in strict)
    loose = list(all_duplicate_groups(VectorSearch(store), threshold=0.2))
    assert max(len(group.members) for group in loose) > 5


def test_uses_the_hnsw_index(store: Store, clean_database: str) -> None:
    """The k-NN inside the LATERAL join is an index scan, not a sort of every distance."""
    from lookalike.store.database import active_model
    from lookalike.store.search import close_neighbours_statement

    model = store.run(active_model)
    assert model is not None
    with psycopg.connect(clean_database) as connection:
        # A 30-row table: without these the planner rightly sorts; at scale it picks the index itself.
        connection.execute("SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off")
        plan = "\n".join(
            row[0]
            for row in connection.execute(
                "EXPLAIN "
                + close_neighbours_statement(model, exact=False, category=False).as_string(connection),
                {"buckets": [BUCKET], "keys": ["x"], "k": 5, "max_distance": 0.1, "category": None},
            )
        )
    assert f"embeddings_hnsw_{model.id}" in plan, plan


def test_cursor_round_trip_and_rejection() -> None:
    ref = ObjectRef("b", "products/é x+y/1.jpg")
    assert decode_cursor(encode_cursor(ref)) == ref
    for bad in ("not-a-cursor", encode_cursor(ref)[:-3] + "!!", "WzFd"):
        with pytest.raises(InvalidCursorError):
            decode_cursor(bad)
