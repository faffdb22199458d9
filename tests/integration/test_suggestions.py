"""Suggested categories through the query function's Lambda entry point (published HTTP API v2
events), on the embedded PostgreSQL with real embeddings of real photos: POST /search answers
`suggested_categories`, GET /uncategorised lists the images without a category with their stored
suggestions, a page at a time."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sample_categories import CATEGORY_OF
from test_query import call, http_event, jpeg, query_handler  # noqa: F401

from lookalike.model.embedder import get_embedder
from lookalike.model_versions import ensure_active_model
from lookalike.ports import EventOrder, ObjectRef
from lookalike.settings import get_settings
from lookalike.store import ImageRecord, Store
from lookalike.store.category_suggestions import refresh_suggestions
from lookalike.suggestions import CONFIDENT_AT
from lookalike_aws.runtime import reset_runtime
from lookalike_local.lambda_runtime import Handler, load_module
from lookalike_local.samples import SamplePhoto

REPO_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "catalogue-photos"


def shopper_photo(image: Image.Image) -> Image.Image:
    """Another photo of a catalogued product: an off-centre crop, turned a little, re-encoded."""
    crop = image.crop((image.width // 6, image.height // 8, image.width, image.height)).rotate(5)
    return Image.open(io.BytesIO(jpeg(crop.resize((crop.width // 2, crop.height // 2)), 55))).convert("RGB")


def request(
    handler: Handler,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    """test_query's published HTTP API event for this request (a JPEG body when given), answered."""
    content_type = None if body is None else "image/jpeg"
    return call(handler, http_event(method, path, query=query, body=body, content_type=content_type))


@pytest.fixture
def catalogue(
    clean_database: str, monkeypatch: pytest.MonkeyPatch, photos: list[SamplePhoto]
) -> Iterator[Store]:
    """Two categorised products per photo (the photo, and a detail crop), and three images
    without a category: new photos of the cup, the rocket and the cat, with their suggestions
    written as the ingest writes them."""
    monkeypatch.setenv("DATABASE_URL", clean_database)
    reset_runtime()
    store = Store(clean_database)
    store.migrate()
    model = ensure_active_model(store, get_settings())
    embedder = get_embedder()
    images: list[tuple[str, str, str | None, Image.Image]] = []
    for photo in photos:
        image = photo.open_rgb()
        detail = image.crop(
            (image.width // 8, image.height // 8, image.width * 7 // 8, image.height * 7 // 8)
        )
        category = CATEGORY_OF[photo.name]
        images += [(photo.name, f"products/{category}/{photo.name}/front.jpg", category, image)]
        images += [
            (f"{photo.name}-detail", f"products/{category}/{photo.name}-detail/a.jpg", category, detail)
        ]
    for name in ("coffee", "rocket", "chelsea"):
        photo = next(p for p in photos if p.name == name)
        images.append((f"new-{name}", f"inbox/new-{name}.jpg", None, shopper_photo(photo.open_rgb())))
    vectors = embedder.embed([image for *_, image in images]).vectors
    now = datetime.now(UTC)
    records = [
        ImageRecord(
            ref=ObjectRef(BUCKET, key),
            order=EventOrder(sequencer=None, event_time=now),
            product_id=product,
            category=category,
            etag=f"etag-{index}",
            size_bytes=10_000,
            width=image.width,
            height=image.height,
            embeddings={model.id: vectors[index]},
        )
        for index, (product, key, category, image) in enumerate(images)
    ]
    assert store.upsert_images(records) == ["applied"] * len(records)
    assert refresh_suggestions(store, [record.ref for record in records]) == 3
    yield store
    store.close()
    reset_runtime()


def check_suggestions(suggestions: list[dict[str, Any]]) -> None:
    confidences = [s["confidence"] for s in suggestions]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 < c <= 1.0 for c in confidences)
    assert sum(confidences) == pytest.approx(1.0, abs=1e-3)
    assert all(s["confident"] == (s["confidence"] >= CONFIDENT_AT) for s in suggestions)


def test_search_by_photo_suggests_categories(
    query_handler: Handler,  # noqa: F811
    catalogue: Store,
    photos: list[SamplePhoto],
) -> None:
    for name, expected in [("chelsea", "animals"), ("coffee", "food"), ("motorcycle", "vehicles")]:
        photo = shopper_photo(next(p for p in photos if p.name == name).open_rgb())
        status, payload = request(query_handler, "POST", "/search", body=jpeg(photo, 80))
        assert status == 200, payload
        suggestions = payload["suggested_categories"]
        assert suggestions[0]["category"] == expected, suggestions
        check_suggestions(suggestions)


def test_suggestions_ignore_the_category_filter_and_k(
    query_handler: Handler,  # noqa: F811
    catalogue: Store,
    photos: list[SamplePhoto],
) -> None:
    """The vote is over the whole catalogue: a filter narrows the results, not the suggestion."""
    photo = jpeg(shopper_photo(next(p for p in photos if p.name == "coffee").open_rgb()), 80)
    _, unfiltered = request(query_handler, "POST", "/search", body=photo, query={"k": "20"})
    status, filtered = request(
        query_handler, "POST", "/search", body=photo, query={"k": "2", "category": "space"}
    )
    assert status == 200
    assert {r["category"] for r in filtered["results"]} == {"space"}
    assert filtered["suggested_categories"] == unfiltered["suggested_categories"]
    assert filtered["suggested_categories"][0]["category"] == "food"


def test_similar_products_answer_has_no_suggestions(
    query_handler: Handler,  # noqa: F811
    catalogue: Store,
) -> None:
    status, payload = request(query_handler, "GET", "/products/coffee/similar")
    assert status == 200
    assert "suggested_categories" not in payload


def test_uncategorised_lists_images_with_their_suggestions_a_page_at_a_time(
    query_handler: Handler,  # noqa: F811
    catalogue: Store,
) -> None:
    status, payload = request(query_handler, "GET", "/uncategorised")
    assert status == 200, payload
    assert payload["confident_at"] == CONFIDENT_AT
    assert payload["next_cursor"] is None
    top = {image["key"]: image["suggested_categories"][0]["category"] for image in payload["images"]}
    assert top == {
        "inbox/new-chelsea.jpg": "animals",
        "inbox/new-coffee.jpg": "food",
        "inbox/new-rocket.jpg": "vehicles",
    }
    for image in payload["images"]:
        check_suggestions(image["suggested_categories"])
        assert image["model_version"] == get_embedder().model_version
        assert image["product_id"] == image["key"].removeprefix("inbox/").removesuffix(".jpg")

    keys: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        status, page = request(query_handler, "GET", "/uncategorised", query=query)
        assert status == 200
        assert page["count"] == len(page["images"]) <= 2
        keys += [image["key"] for image in page["images"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert keys == sorted(top)


@pytest.mark.parametrize(
    "query", [{"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"cursor": "not-a-cursor"}, {"cursor": ""}]
)
def test_uncategorised_refuses_bad_parameters_with_400(
    query_handler: Handler,  # noqa: F811
    catalogue: Store,
    query: dict[str, str],
) -> None:
    status, payload = request(query_handler, "GET", "/uncategorised", query=query)
    assert status == 400, payload
    assert payload["error"] in {"invalid_parameter", "bad_cursor"}


def test_the_review_command_lists_every_uncategorised_image(
    catalogue: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = load_module(REPO_ROOT / "scripts" / "uncategorised.py", "uncategorised_cli_under_test")
    assert command.main(["--format", "json", "--out", str(tmp_path / "all.json")]) == 0
    rows = json.loads((tmp_path / "all.json").read_text())
    assert {row["key"]: row["suggested_category"] for row in rows} == {
        "inbox/new-chelsea.jpg": "animals",
        "inbox/new-coffee.jpg": "food",
        "inbox/new-rocket.jpg": "vehicles",
    }
    assert all(row["confident"] == (row["confidence"] >= CONFIDENT_AT) for row in rows)
    assert "3 uncategorised images" in capsys.readouterr().err

    assert command.main(["--confident", "--out", str(tmp_path / "confident.csv")]) == 0
    lines = (tmp_path / "confident.csv").read_text().splitlines()
    assert lines[0].startswith("bucket,key,product_id,suggested_category,confidence,confident")
    assert len(lines) - 1 == sum(row["confident"] for row in rows)
