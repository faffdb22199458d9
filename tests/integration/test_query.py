"""The query function end to end: published HTTP API v2 events in, JSON out, against the
embedded PostgreSQL filled with real embeddings of real photos."""

from __future__ import annotations

import base64
import copy
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pytest
import requests
from PIL import Image
from sample_categories import CATEGORY_OF

from lookalike.model.embedder import get_embedder
from lookalike.model_versions import ensure_active_model
from lookalike.ports import EventOrder, ObjectRef
from lookalike.settings import get_settings
from lookalike.store import ImageRecord, Store
from lookalike_aws.runtime import reset_runtime
from lookalike_aws.s3 import get_s3_client
from lookalike_local.embedded_db import EmbeddedPostgres
from lookalike_local.http_api import LocalApiGateway
from lookalike_local.lambda_runtime import Handler, LambdaContext, LocalFunction, load_handler
from lookalike_local.samples import SamplePhoto
from lookalike_local.template import load_topology

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS = REPO_ROOT / "events"
PUBLISHED_HTTP_EVENTS = [
    "powertools__apiGatewayProxyV2Event.json",
    "powertools__apiGatewayProxyV2IamEvent.json",
    "sam-cli-template__HttpApi.json",
    "sam-generated__httpapi.json",
]
BUCKET = "catalogue-photos"


def jpeg(image: Image.Image, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def cropped_copy(image: Image.Image) -> Image.Image:
    """A shopper's photo of a catalogued product: cropped to 80%, shrunk, re-encoded."""
    width, height = image.size
    crop = image.crop((width // 10, height // 10, width - width // 10, height - height // 10))
    crop = crop.resize((crop.width * 3 // 4, crop.height * 3 // 4))
    return Image.open(io.BytesIO(jpeg(crop, quality=50))).convert("RGB")


def http_event(
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: bytes | str | None = None,
    content_type: str | None = None,
    template: str = "powertools__apiGatewayProxyV2Event.json",
) -> dict[str, Any]:
    """A published HTTP API v2 event, rewritten to this request (everything else as published)."""
    event: dict[str, Any] = json.loads((EVENTS / template).read_text())
    event = copy.deepcopy(event)
    event["routeKey"] = "$default"
    # SAM CLI's template leaves {{{placeholders}}}; fill the stage as `sam local generate-event`
    # would with a named stage. Behind a named stage API Gateway puts it in front of rawPath.
    stage = event["requestContext"]["stage"]
    if "{{{" in stage:
        stage = event["requestContext"]["stage"] = "prod"
    event["rawPath"] = path if stage == "$default" else f"/{stage}{path}"
    event["rawQueryString"] = urlencode(query or {})
    event["queryStringParameters"] = query or None
    event["pathParameters"] = None
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    headers = {"accept": "application/json"}
    if content_type is not None:
        headers["content-type"] = content_type
    event["headers"] = headers
    if isinstance(body, bytes):
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        event["body"], event["isBase64Encoded"] = body, False
    return event


@pytest.fixture(scope="module")
def query_handler() -> Handler:
    # Logger() and Metrics() read their service and namespace as on AWS (the template sets them).
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("POWERTOOLS_SERVICE_NAME", "lookalike-query")
        environment.setenv("POWERTOOLS_METRICS_NAMESPACE", "LookalikeTest")
        return load_handler(REPO_ROOT / "functions" / "query" / "app.py", "lookalike_query_app_under_test")


@pytest.fixture
def catalogue(
    clean_database: str, monkeypatch: pytest.MonkeyPatch, photos: list[SamplePhoto]
) -> Iterator[Store]:
    """Every sample photo as a product with its category, plus a 'gallery' category of
    copies turned on their side (10 products) so that category filters have more than k
    candidates. (Mirrored copies would be too close: a symmetric rocket's mirror image is as
    near to a crop of it as the original.)"""
    monkeypatch.setenv("DATABASE_URL", clean_database)
    reset_runtime()
    store = Store(clean_database)
    store.migrate()
    model = ensure_active_model(store, get_settings())  # the configured model, as a deployment does
    embedder = get_embedder()
    originals = [photo.open_rgb() for photo in photos]
    rotated = [image.transpose(Image.Transpose.ROTATE_90) for image in originals]
    embeddings = embedder.embed(originals + rotated).vectors
    now = datetime.now(UTC)
    records = []
    for index, (photo, image) in enumerate(zip(photos + photos, originals + rotated, strict=True)):
        is_copy = index >= len(photos)
        product = f"{photo.name}-rotated" if is_copy else photo.name
        records.append(
            ImageRecord(
                ref=ObjectRef(BUCKET, f"products/{product}/front.jpg"),
                order=EventOrder(sequencer=None, event_time=now),
                product_id=product,
                category="gallery" if is_copy else CATEGORY_OF[photo.name],
                etag=f"etag-{index}",
                size_bytes=100_000,
                width=image.width,
                height=image.height,
                embeddings={model.id: embeddings[index]},
            )
        )
    # A second image of the cat, to show that a product appears once (by its best image).
    second = cropped_copy(originals[0])
    records.append(
        ImageRecord(
            ref=ObjectRef(BUCKET, "products/chelsea/side.jpg"),
            order=EventOrder(sequencer=None, event_time=now),
            product_id="chelsea",
            category="animals",
            etag="etag-side",
            size_bytes=50_000,
            width=second.width,
            height=second.height,
            embeddings={model.id: embedder.embed([second]).vectors[0]},
        )
    )
    assert store.upsert_images(records) == ["applied"] * len(records)
    yield store
    store.close()
    reset_runtime()


def call(handler: Handler, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = handler(event, LambdaContext("lookalike-query", 1769, 10))
    assert response["headers"]["Content-Type"].startswith("application/json")
    return int(response["statusCode"]), json.loads(response["body"])


def photo_of(photos: list[SamplePhoto], name: str) -> Image.Image:
    return next(p for p in photos if p.name == name).open_rgb()


# --- routes ---------------------------------------------------------------------------------


def test_search_by_raw_jpeg_finds_the_original_first(
    query_handler: Handler, catalogue: Store, photos: list[SamplePhoto]
) -> None:
    for name in ["chelsea", "coffee", "rocket", "flower"]:
        body = jpeg(cropped_copy(photo_of(photos, name)), quality=40)
        status, payload = call(
            query_handler, http_event("POST", "/search", body=body, content_type="image/jpeg")
        )
        assert status == 200, payload
        top = payload["results"][0]
        assert top["product_id"] == name
        assert top["similarity"] == pytest.approx(1 - top["distance"], abs=1e-5)
        assert top["similarity"] > 0.7
        assert {"key", "category", "width", "height"} <= top.keys()
        similarities = [r["similarity"] for r in payload["results"]]
        assert similarities == sorted(similarities, reverse=True)


def test_search_returns_each_product_once(
    query_handler: Handler, catalogue: Store, photos: list[SamplePhoto]
) -> None:
    body = jpeg(photo_of(photos, "chelsea"))
    status, payload = call(
        query_handler, http_event("POST", "/search", body=body, content_type="image/jpeg", query={"k": "20"})
    )
    assert status == 200
    products = [r["product_id"] for r in payload["results"]]
    assert len(products) == len(set(products)) == payload["count"] == 20
    assert products[0] == "chelsea"
    assert payload["results"][0]["key"] == "products/chelsea/front.jpg"  # the best of its two images


def test_search_by_json_base64(query_handler: Handler, catalogue: Store, photos: list[SamplePhoto]) -> None:
    body = json.dumps({"image_base64": base64.b64encode(jpeg(photo_of(photos, "coffee"))).decode()})
    status, payload = call(
        query_handler, http_event("POST", "/search", body=body, content_type="application/json")
    )
    assert status == 200
    assert payload["results"][0]["product_id"] == "coffee"


def test_search_by_s3_key(
    query_handler: Handler,
    catalogue: Store,
    photos: list[SamplePhoto],
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUCKET_NAME", s3_bucket)
    # Settings and the S3 client are built once per process, as on AWS: rebuilt from this
    # environment (the bucket, and the moto endpoint the s3_bucket fixture set).
    get_settings.cache_clear()
    get_s3_client.cache_clear()
    client = get_s3_client()
    client.put_object(Bucket=s3_bucket, Key="products/new/rocket.jpg", Body=jpeg(photo_of(photos, "rocket")))
    body = json.dumps({"s3_key": "products/new/rocket.jpg"})
    status, payload = call(
        query_handler, http_event("POST", "/search", body=body, content_type="application/json")
    )
    assert status == 200, payload
    assert payload["results"][0]["product_id"] == "rocket"

    missing = json.dumps({"s3_key": "products/new/nothing-here.jpg"})
    status, payload = call(
        query_handler, http_event("POST", "/search", body=missing, content_type="application/json")
    )
    assert (status, payload["error"]) == (404, "not_found")


def test_category_filter_returns_only_that_category_and_still_k(
    query_handler: Handler, catalogue: Store, photos: list[SamplePhoto]
) -> None:
    body = jpeg(photo_of(photos, "chelsea"))
    status, payload = call(
        query_handler,
        http_event(
            "POST", "/search", body=body, content_type="image/jpeg", query={"k": "7", "category": "gallery"}
        ),
    )
    assert status == 200
    assert len(payload["results"]) == 7
    assert {r["category"] for r in payload["results"]} == {"gallery"}
    assert payload["results"][0]["product_id"] == "chelsea-rotated"


def test_min_similarity_drops_weak_matches(
    query_handler: Handler, catalogue: Store, photos: list[SamplePhoto]
) -> None:
    body = jpeg(photo_of(photos, "coffee"))
    status, payload = call(
        query_handler,
        http_event(
            "POST",
            "/search",
            body=body,
            content_type="image/jpeg",
            query={"k": "20", "min_similarity": "0.6"},
        ),
    )
    assert status == 200
    assert 1 <= len(payload["results"]) < 20
    assert all(r["similarity"] >= 0.6 for r in payload["results"])


def test_similar_products_excludes_the_product_itself(query_handler: Handler, catalogue: Store) -> None:
    status, payload = call(query_handler, http_event("GET", "/products/coffee/similar", query={"k": "5"}))
    assert status == 200
    products = [r["product_id"] for r in payload["results"]]
    assert len(products) == 5
    assert "coffee" not in products
    similarities = [r["similarity"] for r in payload["results"]]
    assert similarities == sorted(similarities, reverse=True)


def test_similar_products_in_a_category(query_handler: Handler, catalogue: Store) -> None:
    query = {"k": "5", "category": "gallery", "min_similarity": "-1"}
    status, payload = call(query_handler, http_event("GET", "/products/coffee/similar", query=query))
    assert status == 200
    assert len(payload["results"]) == 5
    assert {r["category"] for r in payload["results"]} == {"gallery"}
    assert payload["results"][0]["product_id"] == "coffee-rotated"  # its own photo, turned


def test_get_product_and_unknown_product(query_handler: Handler, catalogue: Store) -> None:
    status, payload = call(query_handler, http_event("GET", "/products/chelsea"))
    assert status == 200
    assert payload["product_id"] == "chelsea"
    assert payload["category"] == "animals"
    assert sorted(image["key"] for image in payload["images"]) == [
        "products/chelsea/front.jpg",
        "products/chelsea/side.jpg",
    ]
    assert payload["model_versions"] == [get_embedder().model_version]

    for path in ["/products/no-such-product", "/products/no-such-product/similar"]:
        status, payload = call(query_handler, http_event("GET", path))
        assert (status, payload["error"]) == (404, "product_not_found")


# Product ids a URL must percent-encode: a space and a non-ASCII letter, and a literal "%41" that a
# second decoding would turn into "A".
ENCODED_PRODUCTS = {
    "blue mug ü": "blue%20mug%20%C3%BC",
    "mug %41": "mug%20%2541",
}


def add_products(store: Store, product_ids: list[str], like: Image.Image) -> None:
    model = ensure_active_model(store, get_settings())
    embedding = get_embedder(model.version).embed([like]).vectors[0]
    now = datetime.now(UTC)
    records = [
        ImageRecord(
            ref=ObjectRef(BUCKET, f"products/{product_id}/front.jpg"),
            order=EventOrder(sequencer=None, event_time=now),
            product_id=product_id,
            category="kitchen",
            etag=f"etag-{index}",
            size_bytes=1000,
            width=like.width,
            height=like.height,
            embeddings={model.id: embedding},
        )
        for index, product_id in enumerate(product_ids)
    ]
    assert store.upsert_images(records) == ["applied"] * len(records)


@pytest.mark.parametrize("template", PUBLISHED_HTTP_EVENTS)
@pytest.mark.parametrize(("product_id", "encoded"), ENCODED_PRODUCTS.items())
def test_percent_encoded_product_ids_are_decoded_once(
    query_handler: Handler,
    catalogue: Store,
    photos: list[SamplePhoto],
    template: str,
    product_id: str,
    encoded: str,
) -> None:
    """rawPath keeps the client's encoding. On a `$default` route (no pathParameters) the
    handler decodes the matched text; on a declared route API Gateway's decoded pathParameters
    are the values, and are not decoded again."""
    add_products(catalogue, list(ENCODED_PRODUCTS), photo_of(photos, "coffee"))
    for suffix, route in [
        ("", "GET /products/{product_id}"),
        ("/similar", "GET /products/{product_id}/similar"),
    ]:
        catch_all = http_event("GET", f"/products/{encoded}{suffix}", template=template)
        declared = copy.deepcopy(catch_all)
        declared["routeKey"] = declared["requestContext"]["routeKey"] = route
        declared["pathParameters"] = {"product_id": product_id}
        for event in (catch_all, declared):
            status, payload = call(query_handler, event)
            assert status == 200, payload
            if suffix:
                assert product_id not in [r["product_id"] for r in payload["results"]]
            else:
                assert payload["product_id"] == product_id
                assert [image["key"] for image in payload["images"]] == [f"products/{product_id}/front.jpg"]


class NoPageHelpers:
    """The local gateway's page helpers (thumbnails, uploads): not part of the API under test."""

    def _not_the_api(self, *_: Any) -> Any:
        raise AssertionError("an API request reached a local page helper")

    thumbnail = upload = object_status = status = products = _not_the_api


def test_percent_encoded_product_ids_through_the_local_gateway(
    query_handler: Handler, catalogue: Store, photos: list[SamplePhoto]
) -> None:
    """The local gateway routes by the template, like API Gateway: rawPath as the client sent
    it, pathParameters decoded."""
    add_products(catalogue, list(ENCODED_PRODUCTS), photo_of(photos, "coffee"))
    function = LocalFunction("lookalike-query", query_handler, memory_mb=1769, timeout_s=10)
    routes = load_topology(REPO_ROOT / "template.yaml").routes
    gateway = LocalApiGateway(function.invoke, routes, NoPageHelpers())
    for product_id, encoded in ENCODED_PRODUCTS.items():
        for target in [f"/products/{encoded}", f"/products/{encoded}/similar?k=3"]:
            response = gateway.handle(
                "GET", target, [("Accept", "application/json")], b"", "127.0.0.1", "local"
            )
            payload = json.loads(response.body)
            assert response.status == 200, payload
            if "similar" in target:
                assert product_id not in [r["product_id"] for r in payload["results"]]
            else:
                assert payload["product_id"] == product_id


def test_health_reports_database_model_and_count(query_handler: Handler, catalogue: Store) -> None:
    status, payload = call(query_handler, http_event("GET", "/health"))
    assert status == 200
    assert payload == {
        "status": "ok",
        "database": "ok",
        "model_loaded": True,
        "model_version": get_embedder().model_version,
        "images": 21,
        "models": [
            {
                "version": get_embedder().model_version,
                "dimension": 1280,
                "state": "active",
                "coverage": 1.0,
                "images_embedded": 21,
                "images_stored": 21,
            }
        ],
    }


def test_openapi_document_is_served_and_committed(query_handler: Handler) -> None:
    status, payload = call(query_handler, http_event("GET", "/openapi.json"))
    assert status == 200
    assert {"/search", "/products/{product_id}/similar", "/products/{product_id}", "/health"} <= set(
        payload["paths"]
    )
    committed = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    assert committed == payload, "docs/openapi.json is stale: run make openapi"


@pytest.mark.parametrize("template", PUBLISHED_HTTP_EVENTS)
def test_published_http_api_events_parse(query_handler: Handler, catalogue: Store, template: str) -> None:
    status, payload = call(query_handler, http_event("GET", "/health", template=template))
    assert status == 200
    assert payload["status"] == "ok"


def test_published_event_unchanged_is_a_clean_404(query_handler: Handler) -> None:
    event = json.loads((EVENTS / "sam-cli-template__HttpApi.json").read_text())
    status, payload = call(query_handler, event)
    assert (status, payload["error"]) == (404, "not_found")


# --- errors: every status, never a 500 --------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ({"k": "0"}, "k"),
        ({"k": "101"}, "k"),
        ({"k": "ten"}, "k"),
        ({"min_similarity": "1.5"}, "min_similarity"),
    ],
)
def test_bad_query_parameters_are_400(
    query_handler: Handler, catalogue: Store, query: dict[str, str], problem: str
) -> None:
    status, payload = call(query_handler, http_event("GET", "/products/coffee/similar", query=query))
    assert (status, payload["error"]) == (400, "invalid_parameter")
    assert problem in payload["message"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        ("{not json", "application/json", 400, "malformed_json"),
        (json.dumps({"image_base64": "***not base64***"}), "application/json", 400, "bad_base64"),
        (
            json.dumps({"image_base64": "aGVsbG8=", "s3_key": "products/x.jpg"}),
            "application/json",
            422,
            "validation_error",
        ),
        (json.dumps({}), "application/json", 422, "validation_error"),
        (json.dumps({"image_base64": 12}), "application/json", 422, "validation_error"),
        (b"", "image/jpeg", 400, "empty"),
        (b"GIF89a-but-not-really" * 3, "image/gif", 415, "not_an_image"),
        (b"8BPS\x00\x01" + b"\x00" * 64, "image/vnd.adobe.photoshop", 415, "unsupported_format"),
        ("name,price\nshoe,12\n", "text/csv", 415, "unsupported_media_type"),
        # Bodies `json.loads` cannot finish: RecursionError past ~1000 levels, ValueError past 4300
        # digits (both were 500s).
        (
            '{"image_base64": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "application/json",
            400,
            "malformed_json",
        ),
        ("[" * 5_000, "application/json", 400, "malformed_json"),
        ('{"s3_key": ' + "9" * 5_000 + "}", "application/json", 400, "malformed_json"),
        ("-" + "9" * 5_000, "application/json", 400, "malformed_json"),
    ],
)
def test_bad_search_bodies_get_clear_4xx(
    query_handler: Handler, catalogue: Store, body: bytes | str, content_type: str, status: int, error: str
) -> None:
    got_status, payload = call(
        query_handler, http_event("POST", "/search", body=body, content_type=content_type)
    )
    assert (got_status, payload["error"]) == (status, error), payload
    assert payload["message"]


def test_json_body_flagged_base64_but_not_base64_is_400(query_handler: Handler, catalogue: Store) -> None:
    event = http_event(
        "POST", "/search", body='{"s3_key": "products/x.jpg"}', content_type="application/json"
    )
    event["body"], event["isBase64Encoded"] = "not base64!", True
    status, payload = call(query_handler, event)
    assert (status, payload["error"]) == (400, "bad_base64")


def test_truncated_photo_is_400(query_handler: Handler, catalogue: Store, photos: list[SamplePhoto]) -> None:
    data = jpeg(photo_of(photos, "china"))
    status, payload = call(
        query_handler, http_event("POST", "/search", body=data[: len(data) // 3], content_type="image/jpeg")
    )
    assert (status, payload["error"]) == (400, "truncated")


def test_image_with_too_many_pixels_is_413(
    query_handler: Handler, catalogue: Store, photos: list[SamplePhoto], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "10000")  # the decompression-bomb guard, scaled down
    get_settings.cache_clear()
    data = jpeg(photo_of(photos, "coffee"))
    status, payload = call(query_handler, http_event("POST", "/search", body=data, content_type="image/jpeg"))
    assert (status, payload["error"]) == (413, "too_many_pixels")


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "content_type"),
    [
        ("GET", "/products/a%00b/similar", None, None, None),
        ("GET", "/products/a\x00b", None, None, None),
        ("GET", "/products/coffee/similar", {"category": "food\x00"}, None, None),
        ("GET", "/products/coffee/similar", {"k": "1e2"}, None, None),
        ("GET", "/products/coffee/similar", {"k": "9" * 40}, None, None),
        ("GET", "/products/coffee/similar", {"min_similarity": "nan"}, None, None),
        ("GET", "/products/coffee/similar", {"category": "x" * 5000}, None, None),
        ("GET", "/products/" + "x" * 5000 + "/similar", None, None, None),
        ("GET", "/products/%E2%98%83%20'%3B--/similar", None, None, None),
        ("POST", "/search", None, None, None),
        ("POST", "/search", None, "null", "application/json"),
        ("POST", "/search", None, "[1, 2]", "application/json"),
        ("POST", "/search", None, '"just a string"', "application/json"),
        ("POST", "/search", None, '{"s3_key": "../../etc/passwd"}', "application/json"),
        ("POST", "/search", None, '{"image_base64": ""}', "application/json"),
        ("POST", "/search", None, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png"),
        ("POST", "/search", None, b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        ("POST", "/search", None, b"\xff\xd8\xff" + b"\xa5" * 5000, "image/jpeg"),
        ("POST", "/search", {"k": "-1"}, b"\xff\xd8\xff", "image/jpeg"),
        ("PUT", "/search", None, "{}", "application/json"),
    ],
)
def test_hostile_requests_get_a_json_4xx(
    query_handler: Handler,
    catalogue: Store,
    method: str,
    path: str,
    query: dict[str, str] | None,
    body: bytes | str | None,
    content_type: str | None,
) -> None:
    status, payload = call(
        query_handler, http_event(method, path, query=query, body=body, content_type=content_type)
    )
    assert 400 <= status < 500, payload
    assert set(payload) == {"error", "message"}


def test_image_over_the_limit_is_413(
    query_handler: Handler, catalogue: Store, photos: list[SamplePhoto], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = jpeg(photo_of(photos, "china"))
    monkeypatch.setenv("MAX_IMAGE_BYTES", str(len(data) - 1))
    get_settings.cache_clear()
    status, payload = call(query_handler, http_event("POST", "/search", body=data, content_type="image/jpeg"))
    assert (status, payload["error"]) == (413, "too_large")


def test_unknown_route_and_method_are_404(query_handler: Handler) -> None:
    for method, path in [("GET", "/nothing"), ("DELETE", "/products/coffee"), ("GET", "/search")]:
        status, payload = call(query_handler, http_event(method, path))
        assert (status, payload["error"]) == (404, "not_found")


def test_database_down_is_503_then_recovers(
    query_handler: Handler, catalogue: Store, embedded_postgres: EmbeddedPostgres
) -> None:
    embedded_postgres.stop()
    try:
        status, payload = call(query_handler, http_event("GET", "/products/coffee/similar"))
        assert (status, payload["error"]) == (503, "unavailable")
        status, payload = call(query_handler, http_event("GET", "/health"))
        assert status == 503
        assert payload["database"] == "unreachable"
    finally:
        embedded_postgres.start()
    status, _ = call(query_handler, http_event("GET", "/products/coffee/similar"))
    assert status == 200


def large_photo(photos: list[SamplePhoto], *, min_bytes: int) -> bytes:
    """A real photo as a PNG too large to send in one request (noise keeps it incompressible)."""
    image = photo_of(photos, "rocket").resize((2000, 1500))
    pixels = np.asarray(image, dtype=np.int16)
    noise = np.random.default_rng(3).integers(-24, 25, pixels.shape)
    noisy = np.clip(pixels + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) >= min_bytes, len(data)
    return data


def test_a_photo_too_large_for_a_request_goes_through_an_upload(
    query_handler: Handler,
    catalogue: Store,
    photos: list[SamplePhoto],
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POST /uploads gives a presigned form for the bucket's search-photo prefix; the photo goes
    there as a browser would send it (multipart POST to S3, moto here), then POST /search finds it
    by s3_key. The prefix is outside the catalogue's: the photo is never ingested."""
    monkeypatch.setenv("BUCKET_NAME", s3_bucket)
    get_settings.cache_clear()
    get_s3_client.cache_clear()
    status, upload = call(query_handler, http_event("POST", "/uploads"))
    assert status == 200, upload
    assert upload["s3_key"].startswith("queries/")
    assert not upload["s3_key"].startswith(get_settings().key_layout.prefix)
    assert upload["max_bytes"] == get_settings().max_image_bytes
    photo = large_photo(photos, min_bytes=5_000_000)  # over what a request can carry (6 MB base64)
    stored = requests.post(
        upload["url"], data=upload["fields"], files={"file": ("big.png", photo)}, timeout=60
    )
    assert stored.status_code in (200, 201, 204), stored.text
    body = json.dumps({"s3_key": upload["s3_key"]})
    status, payload = call(
        query_handler, http_event("POST", "/search", body=body, content_type="application/json")
    )
    assert status == 200, payload
    assert payload["results"][0]["product_id"] == "rocket"
    # Keys elsewhere in the bucket stay out of reach.
    elsewhere = json.dumps({"s3_key": "private/notes.jpg"})
    status, payload = call(
        query_handler, http_event("POST", "/search", body=elsewhere, content_type="application/json")
    )
    assert (status, payload["error"]) == (400, "bad_s3_key")
    assert "queries/" in payload["message"]


def test_uploads_are_disabled_when_their_prefix_would_be_ingested(
    query_handler: Handler, monkeypatch: pytest.MonkeyPatch, s3_bucket: str
) -> None:
    monkeypatch.setenv("BUCKET_NAME", s3_bucket)
    monkeypatch.setenv("KEY_PREFIX", "")  # the whole bucket is the catalogue
    get_settings.cache_clear()
    status, payload = call(query_handler, http_event("POST", "/uploads"))
    assert (status, payload["error"]) == (404, "uploads_disabled")
