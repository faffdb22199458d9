"""Query function: the HTTP API (API Gateway HTTP API, payload v2) over the similarity index.

Only the routes live here: the views and their OpenAPI description in `views`, reading the photo
of POST /search in `request_body`, every failure's status in the one table of `errors`, the
domain's names in `domain`. No input produces a 500.
"""

# No `from __future__ import annotations`: Powertools reads the route signatures' annotations
# at run time to validate parameters and build the OpenAPI document.
import json
import uuid
from http import HTTPStatus
from typing import Any

import psycopg
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

# isort: split
# The function's own modules: Lambda puts the function's folder on sys.path.
import answers
import errors
import views
from domain import (
    DEFAULT_THRESHOLD,
    ProductNotFoundError,
    SearchParameters,
    SettingsError,
    decode_cursor,
    duplicate_groups_page,
    encode_cursor,
    get_embedder,
    get_search,
    get_settings,
    get_store,
    presigned_upload,
    registry_status,
    search_by_image,
    similar_products,
    uncategorised_images,
)
from request_body import search_photo
from resolver import HttpApiResolver

logger = Logger()
metrics = Metrics()
tracer = Tracer()
app = HttpApiResolver(enable_validation=True)
errors.register(app)

# Init phase: the ONNX session is built and run once per container, before the first request.
get_embedder().warm_up()

API_TITLE = "Lookalike similarity search API"
API_VERSION = "1.0.0"
UPLOAD_URL_SECONDS = 300


@app.post(
    "/search",
    summary="Products that look like a photo",
    description="Body: the photo itself (Content-Type image/jpeg, image/png, image/webp, ...), "
    'or JSON {"image_base64": "..."} or {"s3_key": "products/..."} for a photo in the bucket.',
    openapi_extensions={"requestBody": views.search_request_body()},
    responses=views.responses(
        views.PhotoSearchResponse,
        HTTPStatus.BAD_REQUEST,
        HTTPStatus.NOT_FOUND,
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        HTTPStatus.UNPROCESSABLE_ENTITY,
        HTTPStatus.SERVICE_UNAVAILABLE,
    ),
)
@tracer.capture_method
def search(
    k: views.K = 10,
    category: views.Category = None,
    min_similarity: views.MinSimilarity = None,
    min_match: views.MinMatch = None,
) -> views.PhotoSearchResponse:
    parameters = SearchParameters(k=k, category=category, min_similarity=min_similarity)
    photo = search_photo(app.current_event)
    result = search_by_image(
        photo, parameters, search=get_search(), settings=get_settings(), min_match=min_match
    )
    metrics.add_metric(name="SearchesByImage", unit=MetricUnit.Count, value=1)
    response = answers.search_response(result.neighbours, result.model.version, result.cutoffs)
    return answers.photo_search_response(response, result.suggested_categories)


@app.post(
    "/uploads",
    summary="An upload URL for a search photo too large to send in the request",
    description=f"Photos over {views.MAX_REQUEST_PHOTO_MB} MB do not fit a request (API Gateway and "
    "Lambda take 6 MB, base64 included). POST the photo to `url` with `fields` (an HTML form, the "
    'file last, named "file"), then POST /search {"s3_key": s3_key}. The uploaded photo is never '
    "added to the catalogue.",
    responses=views.responses(views.UploadResponse, HTTPStatus.NOT_FOUND, HTTPStatus.SERVICE_UNAVAILABLE),
)
@tracer.capture_method
def upload() -> views.UploadResponse:
    settings = get_settings()
    if settings.query_upload_prefix is None:
        raise errors.UploadsDisabledError("QUERY_UPLOAD_PREFIX lies inside KEY_PREFIX: uploads are disabled")
    if not settings.bucket_name:
        raise SettingsError("BUCKET_NAME is not set: uploads need the photo bucket")
    key = f"{settings.query_upload_prefix}{uuid.uuid4().hex}"
    presigned = presigned_upload(
        settings.bucket_name, key, max_bytes=settings.max_image_bytes, expires_s=UPLOAD_URL_SECONDS
    )
    return views.UploadResponse(
        url=presigned.url,
        fields=presigned.fields,
        s3_key=key,
        max_bytes=settings.max_image_bytes,
        expires_in=UPLOAD_URL_SECONDS,
    )


@app.get(
    "/products/<product_id>/similar",
    summary="Products that look like a catalogued product",
    responses=views.responses(
        views.SearchResponse, HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND, HTTPStatus.SERVICE_UNAVAILABLE
    ),
)
@tracer.capture_method
def similar(
    product_id: views.ProductId,
    k: views.K = 10,
    category: views.Category = None,
    min_similarity: views.MinSimilarity = None,
    min_match: views.MinMatch = None,
) -> views.SearchResponse:
    parameters = SearchParameters(k=k, category=category, min_similarity=min_similarity)
    result = similar_products(product_id, parameters, search=get_search(), min_match=min_match)
    metrics.add_metric(name="SearchesByProduct", unit=MetricUnit.Count, value=1)
    return answers.search_response(result.neighbours, result.model.version, result.cutoffs)


@app.get(
    "/products/<product_id>",
    summary="What is stored for a product",
    responses=views.responses(
        views.ProductResponse, HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND, HTTPStatus.SERVICE_UNAVAILABLE
    ),
)
@tracer.capture_method
def product(product_id: views.ProductId) -> views.ProductResponse:
    images = get_store().get_product(product_id)
    if not images:
        raise ProductNotFoundError(product_id)
    return answers.product_response(product_id, images)


@app.get(
    "/health",
    summary="Database reachable, model loaded, number of images",
    responses={
        200: {"description": "OK", "content": {"application/json": {"model": views.HealthResponse}}},
        503: {
            "description": "the database is unreachable",
            "content": {"application/json": {"model": views.HealthResponse}},
        },
    },
)
def health() -> Response[views.HealthResponse]:
    embedder = get_embedder()
    models: list[views.ModelStatusView] = []
    try:
        count: int | None = get_store().count_images()
        models = [views.ModelStatusView.model_validate(status) for status in registry_status(get_search())]
        database = "ok"
    except psycopg.Error as error:
        logger.warning("health: database unreachable", extra={"error": str(error)})
        count, database = None, "unreachable"
    body = views.HealthResponse(
        status="ok" if database == "ok" else "degraded",
        database=database,
        model_loaded=embedder.loaded,
        model_version=embedder.model_version,
        images=count,
        models=models,
    )
    status = HTTPStatus.OK if database == "ok" else HTTPStatus.SERVICE_UNAVAILABLE
    return Response(status.value, content_types.APPLICATION_JSON, body)


@app.get(
    "/duplicates",
    summary="Groups of near-duplicate images, a page at a time",
    responses=views.responses(
        views.DuplicatesResponse, HTTPStatus.BAD_REQUEST, HTTPStatus.SERVICE_UNAVAILABLE
    ),
)
@tracer.capture_method
def duplicates(
    threshold: views.Threshold = DEFAULT_THRESHOLD,
    category: views.Category = None,
    limit: views.GroupLimit = 50,
    cursor: views.Cursor = None,
) -> views.DuplicatesResponse:
    page = duplicate_groups_page(
        get_search(), threshold=threshold, category=category, limit=limit, cursor=cursor
    )
    return answers.duplicates_response(page, threshold=threshold, category=category)


@app.get(
    "/uncategorised",
    summary="Images without a category, with their suggested categories, for review",
    description="Embedded images uploaded without a category, in key order, each with the stored vote of "
    "its nearest categorised products (written at ingest). A given category is never overwritten: "
    "set one by uploading the image again under the key layout or with x-amz-meta-category.",
    responses=views.responses(
        views.UncategorisedResponse, HTTPStatus.BAD_REQUEST, HTTPStatus.SERVICE_UNAVAILABLE
    ),
)
@tracer.capture_method
def uncategorised(limit: views.ReviewLimit = 50, cursor: views.Cursor = None) -> views.UncategorisedResponse:
    after = decode_cursor(cursor) if cursor else None
    images = uncategorised_images(get_store(), after=after, limit=limit)
    next_cursor = encode_cursor(images[-1].ref) if len(images) == limit else None
    return answers.uncategorised_response(images, next_cursor)


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    return Response(200, content_types.APPLICATION_JSON, openapi_document())


def openapi_document() -> str:
    document = json.loads(app.get_openapi_json_schema(title=API_TITLE, version=API_VERSION))
    return json.dumps(views.without_unused_defaults(document))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
