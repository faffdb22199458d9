"""Query function: the HTTP API (API Gateway HTTP API, payload v2) over the similarity index.

Routes: POST /search (by photo), GET /products/{product_id}/similar, GET /products/{product_id},
GET /health, GET /openapi.json. The work is in `lookalike.search`; this module maps HTTP to it
and every failure to a JSON error `{"error": code, "message": ...}` with a 4xx status (503 when
the database is unreachable). No input produces a 500.
"""

# No `from __future__ import annotations`: Powertools reads the route signatures' annotations
# at run time to validate parameters and build the OpenAPI document.
import base64
import binascii
import json
import os
from http import HTTPStatus
from typing import Annotated, Any, Self

import psycopg
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field, ValidationError, model_validator

from lookalike.catalogue import get_key_layout
from lookalike.duplicates import DEFAULT_THRESHOLD, InvalidCursorError, duplicate_groups_page
from lookalike.embedder import get_embedder
from lookalike.images import ImageRejected
from lookalike.ingest import FetchedObject, ObjectTooLarge, TransientError
from lookalike.search import MAX_K, ProductNotFoundError, SearchParameters, search_by_image, similar_products
from lookalike.settings import SettingsError, get_settings
from lookalike.store import Neighbour, Store, get_store
from lookalike_aws.s3 import S3ObjectSource
from lookalike_aws.secrets import resolve_database_url

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "lookalike-query"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Lookalike"))
tracer = Tracer()
app = APIGatewayHttpResolver(enable_validation=True)

# Init phase: the ONNX session is built and run once per container, before the first request.
get_embedder().warm_up()

API_TITLE = "Lookalike similarity search API"
API_VERSION = "1.0.0"
# Query-parameter or path problems are the client's malformed request (400); a JSON body that
# parses but does not fit the schema is unprocessable (422).
_PARAMETER_LOCATIONS = {"query", "path"}
# ImageRejected.reason -> HTTP status.
_IMAGE_STATUS = {
    "empty": HTTPStatus.BAD_REQUEST,
    "too_large": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    "too_many_pixels": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    "not_an_image": HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    "unsupported_format": HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    # Broken image data is a malformed body, like malformed JSON or base64 (400).
    "truncated": HTTPStatus.BAD_REQUEST,
    "corrupt": HTTPStatus.BAD_REQUEST,
}

# PostgreSQL text cannot hold NUL: such a value is refused here (400), not by the database (500).
NO_NUL = r"^[^\x00]*$"
K = Annotated[int, Query(ge=1, le=MAX_K, description="number of products to return")]
Category = Annotated[
    str | None, Query(min_length=1, max_length=200, pattern=NO_NUL, description="only this category")
]
MinSimilarity = Annotated[
    float | None, Query(ge=-1.0, le=1.0, description="drop results below this cosine similarity")
]
ProductId = Annotated[str, Path(min_length=1, max_length=512, pattern=NO_NUL)]


class SearchResult(BaseModel):
    product_id: str
    key: str
    category: str | None
    similarity: float = Field(description="cosine similarity, 1 - distance")
    distance: float = Field(description="cosine distance")
    width: int
    height: int


class SearchResponse(BaseModel):
    results: list[SearchResult]
    count: int
    model_version: str


class StoredImageView(BaseModel):
    key: str
    category: str | None
    width: int
    height: int
    size_bytes: int | None
    etag: str | None
    model_version: str
    updated_at: str


class ProductResponse(BaseModel):
    product_id: str
    category: str | None
    model_versions: list[str]
    images: list[StoredImageView]


class HealthResponse(BaseModel):
    status: str
    database: str
    model_loaded: bool
    model_version: str
    images: int | None


class SearchByReference(BaseModel):
    """JSON body of POST /search: exactly one of the two fields."""

    image_base64: str | None = Field(default=None, description="the photo, base64-encoded")
    s3_key: str | None = Field(
        default=None, max_length=1024, pattern=NO_NUL, description="a photo already in the bucket"
    )

    @model_validator(mode="after")
    def exactly_one(self) -> Self:
        if (self.image_base64 is None) == (self.s3_key is None):
            raise ValueError("give exactly one of image_base64 or s3_key")
        return self


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: HTTPStatus, code: str, message: str) -> Response[str]:
    return Response(
        status_code=status.value,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"error": code, "message": message}),
    )


def _response(neighbours: list[Neighbour]) -> SearchResponse:
    results = [
        SearchResult(
            product_id=n.product_id,
            key=n.key,
            category=n.category,
            similarity=round(n.similarity, 6),
            distance=round(n.distance, 6),
            width=n.width,
            height=n.height,
        )
        for n in neighbours
    ]
    return SearchResponse(results=results, count=len(results), model_version=get_embedder().model_version)


def _parameters(k: int, category: str | None, min_similarity: float | None) -> SearchParameters:
    return SearchParameters(k=k, category=category, min_similarity=min_similarity)


def _store() -> Store:
    resolve_database_url()  # DATABASE_SECRET_ARN -> DATABASE_URL, once per container
    return get_store()


def _request_image() -> bytes:
    """The photo of POST /search: a raw image body, or JSON with image_base64 / s3_key."""
    event = app.current_event
    content_type = (event.headers.get("content-type") or "").split(";")[0].strip().lower()
    body = event.body or ""
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        if not event.is_base64_encoded:  # API Gateway base64-encodes binary bodies; text passes as is
            return body.encode("latin-1", errors="replace")
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_base64", "the body is not valid base64") from None
    if content_type != "application/json":
        raise ApiError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            f"send the photo as image/* or JSON with image_base64 or s3_key, not {content_type or 'nothing'}",
        )
    text = base64.b64decode(body).decode("utf-8", errors="replace") if event.is_base64_encoded else body
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        message = f"the body is not valid JSON: {error}"
        raise ApiError(HTTPStatus.BAD_REQUEST, "malformed_json", message) from None
    try:
        request = SearchByReference.model_validate(raw)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_context=False)
        raise RequestValidationError([{**p, "loc": ("body", *p["loc"])} for p in problems]) from None
    if request.image_base64 is not None:
        try:
            return base64.b64decode(request.image_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_base64", "image_base64 is not valid base64") from None
    return _read_bucket_object(str(request.s3_key))


def _read_bucket_object(key: str) -> bytes:
    # The request is checked before the configuration: a bad key is the client's 400 in any case.
    prefix = get_key_layout().prefix
    if not key.startswith(prefix):
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_s3_key", f"s3_key must start with {prefix!r}")
    bucket = os.environ.get("BUCKET_NAME", "").strip()
    if not bucket:
        raise SettingsError("BUCKET_NAME is not set: searching by s3_key needs the photo bucket")
    fetched = S3ObjectSource().fetch(bucket, key, max_bytes=get_settings().max_image_bytes)
    if isinstance(fetched, FetchedObject):
        return fetched.data
    if isinstance(fetched, ObjectTooLarge):
        raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large", f"s3_key is {fetched.size} bytes")
    raise ApiError(HTTPStatus.NOT_FOUND, "not_found", f"no object {key!r} in the bucket")


@app.post(
    "/search",
    summary="Products that look like a photo",
    description="Body: the photo itself (Content-Type image/jpeg, image/png, image/webp, ...), "
    'or JSON {"image_base64": "..."} or {"s3_key": "products/..."} for a photo in the bucket.',
)
@tracer.capture_method
def search(k: K = 10, category: Category = None, min_similarity: MinSimilarity = None) -> SearchResponse:
    parameters = _parameters(k, category, min_similarity)
    data = _request_image()
    neighbours = search_by_image(
        data, parameters, embedder=get_embedder(), store=_store(), settings=get_settings()
    )
    metrics.add_metric(name="SearchesByImage", unit=MetricUnit.Count, value=1)
    return _response(neighbours)


@app.get("/products/<product_id>/similar", summary="Products that look like a catalogued product")
@tracer.capture_method
def similar(
    product_id: ProductId, k: K = 10, category: Category = None, min_similarity: MinSimilarity = None
) -> SearchResponse:
    neighbours = similar_products(product_id, _parameters(k, category, min_similarity), store=_store())
    metrics.add_metric(name="SearchesByProduct", unit=MetricUnit.Count, value=1)
    return _response(neighbours)


@app.get("/products/<product_id>", summary="What is stored for a product")
@tracer.capture_method
def product(product_id: ProductId) -> ProductResponse:
    images = _store().get_product(product_id)
    if not images:
        raise ProductNotFoundError(product_id)
    return ProductResponse(
        product_id=product_id,
        category=images[0].category,
        model_versions=sorted({image.model_version for image in images}),
        images=[
            StoredImageView(
                key=image.key,
                category=image.category,
                width=image.width,
                height=image.height,
                size_bytes=image.size_bytes,
                etag=image.etag,
                model_version=image.model_version,
                updated_at=image.updated_at.isoformat(),
            )
            for image in images
        ],
    )


@app.get("/health", summary="Database reachable, model loaded, number of images")
def health() -> Response[str]:
    embedder = get_embedder()
    try:
        count: int | None = _store().count_images()
        database = "ok"
    except psycopg.Error as error:
        logger.warning("health: database unreachable", extra={"error": str(error)})
        count, database = None, "unreachable"
    body = HealthResponse(
        status="ok" if database == "ok" else "degraded",
        database=database,
        model_loaded="session" in vars(embedder),
        model_version=embedder.model_version,
        images=count,
    )
    status = HTTPStatus.OK if database == "ok" else HTTPStatus.SERVICE_UNAVAILABLE
    return Response(status.value, content_types.APPLICATION_JSON, body.model_dump_json())


class DuplicateMemberView(BaseModel):
    key: str
    product_id: str
    category: str | None
    width: int
    height: int
    similarity: float = Field(description="the best similarity linking this image into the group")


class DuplicateGroupView(BaseModel):
    anchor_key: str = Field(description="the group's first key: where the pages report it")
    size: int
    products: list[str]
    max_similarity: float
    min_similarity: float
    members: list[DuplicateMemberView]


class DuplicatesResponse(BaseModel):
    groups: list[DuplicateGroupView]
    count: int
    threshold: float
    category: str | None
    scanned: int = Field(description="images scanned for this page")
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")


Threshold = Annotated[float, Query(gt=0.0, le=1.0, description="cosine similarity that makes a duplicate")]
GroupLimit = Annotated[int, Query(ge=1, le=200, description="groups per page at most")]
Cursor = Annotated[
    str | None, Query(min_length=1, max_length=2048, description="next_cursor of the last page")
]


@app.get("/duplicates", summary="Groups of near-duplicate images, a page at a time")
@tracer.capture_method
def duplicates(
    threshold: Threshold = DEFAULT_THRESHOLD,
    category: Category = None,
    limit: GroupLimit = 50,
    cursor: Cursor = None,
) -> DuplicatesResponse:
    try:
        page = duplicate_groups_page(
            _store(), threshold=threshold, category=category, limit=limit, cursor=cursor
        )
    except InvalidCursorError as error:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_cursor", str(error)) from None
    groups = [
        DuplicateGroupView(
            anchor_key=group.anchor.key,
            size=len(group.members),
            products=group.products,
            max_similarity=round(group.max_similarity, 4),
            min_similarity=round(group.min_similarity, 4),
            members=[
                DuplicateMemberView(
                    key=member.image.ref.key,
                    product_id=member.image.product_id,
                    category=member.image.category,
                    width=member.image.width,
                    height=member.image.height,
                    similarity=round(member.similarity, 4),
                )
                for member in group.members
            ],
        )
        for group in page.groups
    ]
    return DuplicatesResponse(
        groups=groups,
        count=len(groups),
        threshold=threshold,
        category=category,
        scanned=page.scanned,
        next_cursor=page.next_cursor,
    )


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    return Response(200, content_types.APPLICATION_JSON, openapi_document())


def openapi_document() -> str:
    return app.get_openapi_json_schema(title=API_TITLE, version=API_VERSION)


@app.exception_handler(ApiError)  # type: ignore[untyped-decorator]
def handle_api_error(error: ApiError) -> Response[str]:
    return error_response(error.status, error.code, error.message)


@app.exception_handler(ImageRejected)  # type: ignore[untyped-decorator]
def handle_rejected_image(error: ImageRejected) -> Response[str]:
    status = _IMAGE_STATUS.get(error.reason, HTTPStatus.BAD_REQUEST)
    return error_response(status, error.reason, error.message)


@app.exception_handler(ProductNotFoundError)  # type: ignore[untyped-decorator]
def handle_unknown_product(error: ProductNotFoundError) -> Response[str]:
    message = f"no images of product {error.args[0]!r}"
    return error_response(HTTPStatus.NOT_FOUND, "product_not_found", message)


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
def handle_validation(error: RequestValidationError) -> Response[str]:
    problems = error.errors()
    in_parameters = all(str((p.get("loc") or ("body",))[0]) in _PARAMETER_LOCATIONS for p in problems)
    message = "; ".join(
        f"{'.'.join(str(part) for part in p.get('loc', ()))}: {p.get('msg', 'invalid')}" for p in problems
    )
    if in_parameters:
        return error_response(HTTPStatus.BAD_REQUEST, "invalid_parameter", message)
    return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, "validation_error", message)


@app.exception_handler([psycopg.OperationalError, TransientError])  # type: ignore[untyped-decorator]
def handle_unavailable(error: Exception) -> Response[str]:
    logger.warning("dependency unavailable", extra={"error": str(error)})
    return error_response(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable", "try again shortly")


@app.not_found
def handle_not_found(_: Exception) -> Response[str]:
    message = f"no route {app.current_event.http_method} {app.current_event.path}"
    return error_response(HTTPStatus.NOT_FOUND, "not_found", message)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
