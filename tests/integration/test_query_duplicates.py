"""GET /duplicates through the query function's Lambda entry point (published HTTP API v2 event),
on the embedded PostgreSQL with real photos and edited copies."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from PIL import Image, ImageOps

from lookalike.model.embedder import get_embedder
from lookalike.model_versions import ensure_active_model
from lookalike.ports import EventOrder, ObjectRef
from lookalike.settings import get_settings
from lookalike.store import ImageRecord, Store
from lookalike_aws.runtime import reset_runtime
from lookalike_local.lambda_runtime import Handler, LambdaContext, load_handler
from lookalike_local.samples import SamplePhoto

REPO_ROOT = Path(__file__).resolve().parents[2]


def request(handler: Handler, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    event: dict[str, Any] = copy.deepcopy(
        json.loads((REPO_ROOT / "events" / "powertools__apiGatewayProxyV2Event.json").read_text())
    )
    event.update(
        routeKey="$default",
        rawPath="/duplicates",
        rawQueryString=urlencode(query),
        queryStringParameters=query or None,
        pathParameters=None,
        headers={"accept": "application/json"},
        body=None,
        isBase64Encoded=False,
    )
    event["requestContext"]["http"].update(method="GET", path="/duplicates")
    response = handler(event, LambdaContext("lookalike-query", 1769, 10))
    return int(response["statusCode"]), json.loads(response["body"])


@pytest.fixture(scope="module")
def query_handler() -> Handler:
    return load_handler(REPO_ROOT / "functions" / "query" / "app.py", "lookalike_query_app_duplicates")


@pytest.fixture
def store(clean_database: str, monkeypatch: pytest.MonkeyPatch, photos: list[SamplePhoto]) -> Iterator[Store]:
    """Each photo (category "originals" for the first half, "others" after), plus a JPEG
    re-encode and a mirrored copy of the first four: four groups of three."""
    monkeypatch.setenv("DATABASE_URL", clean_database)
    reset_runtime()
    store = Store(clean_database)
    store.migrate()
    model = ensure_active_model(store, get_settings())  # the configured model, as a deployment does
    images: list[tuple[str, str, Image.Image]] = []
    for index, photo in enumerate(photos):
        category = "originals" if index < len(photos) // 2 else "others"
        original = photo.open_rgb()
        images.append((f"products/{category}/{photo.name}/front.jpg", category, original))
        if index < 4:
            buffer = io.BytesIO()
            original.save(buffer, format="JPEG", quality=50)
            reencoded = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
            images.append((f"products/{category}/{photo.name}-copy/front.jpg", category, reencoded))
            images.append(
                (f"products/{category}/{photo.name}-mirror/front.jpg", category, ImageOps.mirror(original))
            )
    embeddings = get_embedder().embed([image for *_, image in images]).vectors
    now = datetime.now(UTC)
    store.upsert_images(
        [
            ImageRecord(
                ref=ObjectRef("photos", key),
                order=EventOrder(None, now),
                product_id=key.split("/")[2],
                category=category,
                etag=key,
                size_bytes=1,
                width=image.width,
                height=image.height,
                embeddings={model.id: embeddings[index]},
            )
            for index, (key, category, image) in enumerate(images)
        ]
    )
    yield store
    store.close()
    reset_runtime()


def test_duplicates_route_pages_through_every_group_once(query_handler: Handler, store: Store) -> None:
    seen: list[frozenset[str]] = []
    query: dict[str, str] = {"limit": "1"}
    while True:
        status, payload = request(query_handler, query)
        assert status == 200, payload
        assert payload["count"] == len(payload["groups"]) <= 1
        assert payload["threshold"] == 0.85
        seen += [frozenset(member["key"] for member in group["members"]) for group in payload["groups"]]
        if payload["next_cursor"] is None:
            break
        query = {"limit": "1", "cursor": payload["next_cursor"]}
    assert len(seen) == len(set(seen)) == 4
    assert all(len(group) == 3 for group in seen)

    status, payload = request(query_handler, {"category": "others"})
    assert status == 200
    assert payload["groups"] == []  # the copies are all in "originals"
    group = request(query_handler, {})[1]["groups"][0]
    assert group["size"] == 3
    assert group["anchor_key"] == group["members"][0]["key"]
    assert {"key", "product_id", "category", "width", "height", "similarity"} == set(group["members"][0])


@pytest.mark.parametrize(
    "query",
    [{"threshold": "0"}, {"threshold": "1.5"}, {"threshold": "x"}, {"limit": "0"}, {"cursor": "garbage"}],
)
def test_bad_parameters_are_400(query_handler: Handler, store: Store, query: dict[str, str]) -> None:
    status, payload = request(query_handler, query)
    assert status == 400, payload
    assert payload["error"] in {"bad_request", "invalid_parameter", "bad_cursor", "validation_error"}, payload
