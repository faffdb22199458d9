"""What the API reads and answers, as pydantic models; Powertools validates them and documents
them in the OpenAPI document (the domain -> view conversions are in answers.py)."""

from http import HTTPStatus
from typing import Annotated, Any, Self

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

# isort: split
# The function's own modules: Lambda puts the function's folder on sys.path.
from domain import (
    ALLOWED_FORMATS,
    CONFIDENT_AT,
    MAX_K,
    MatchLevel,
)

# PostgreSQL text cannot hold NUL: such a value is refused here (400), not by the database (500).
NO_NUL = r"^[^\x00]*$"
# Standard base64 with its padding, as `base64.b64decode(..., validate=True)` accepts it.
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


# Query and path parameters (Powertools validates them: a bad one is a 400).
K = Annotated[int, Query(ge=1, le=MAX_K, description="number of products to return")]
Category = Annotated[
    str | None,
    Query(min_length=1, max_length=200, pattern=NO_NUL, description="only this category"),
]
MinSimilarity = Annotated[
    float | None, Query(ge=-1.0, le=1.0, description="drop results below this cosine similarity")
]
MinMatch = Annotated[
    MatchLevel | None,
    Query(
        description="drop results below this match level (duplicate > very_similar > similar > weak); "
        "the answering model's calibrated cut-offs decide (400 match_levels_unavailable when it has none)"
    ),
]
ProductId = Annotated[str, Path(min_length=1, max_length=512, pattern=NO_NUL)]
Threshold = Annotated[float, Query(gt=0.0, le=1.0, description="cosine similarity that makes a duplicate")]
GroupLimit = Annotated[int, Query(ge=1, le=200, description="groups per page at most")]
Cursor = Annotated[
    str | None, Query(min_length=1, max_length=2048, description="next_cursor of the last page")
]
ReviewLimit = Annotated[int, Query(ge=1, le=500, description="images per page at most")]


class ErrorBody(BaseModel):
    """Every 4xx and 503 answer."""

    error: str = Field(description="a stable code: invalid_parameter, product_not_found, too_large, ...")
    message: str = Field(description="what was wrong, for a person")


class SearchResult(BaseModel):
    product_id: str
    key: str
    category: str | None
    similarity: float = Field(description="cosine similarity, 1 - distance")
    distance: float = Field(description="cosine distance")
    width: int
    height: int
    match: MatchLevel | None = Field(
        default=None,
        description="duplicate (the same photo, edited), very_similar (the same kind), similar, or weak, by "
        "the cut-offs calibrated for model_version (match_cutoffs); null when that model has none",
    )


class MatchCutoffsView(BaseModel):
    """The lowest similarity of each level; below `similar` a result is `weak`."""

    duplicate: float
    very_similar: float
    similar: float


class SearchResponse(BaseModel):
    results: list[SearchResult]
    count: int
    model_version: str
    match_cutoffs: MatchCutoffsView | None = Field(
        default=None,
        description="the match levels' cut-offs of model_version (docs/BENCHMARKS.md, Match levels); "
        "null when the model has no calibration, and every result's match is then null",
    )


class SuggestedCategory(BaseModel):
    category: str
    confidence: float = Field(
        description="the category's share of the similarity-weighted vote of the nearest categorised "
        "products, 0..1 (docs/API.md, Suggested categories)"
    )
    confident: bool = Field(
        description=f"confidence >= {CONFIDENT_AT}: at that confidence the top suggestion was right at "
        "least 90 % of the time on held-out labelled data (docs/BENCHMARKS.md, Suggested categories)"
    )


class PhotoSearchResponse(SearchResponse):
    suggested_categories: list[SuggestedCategory] = Field(
        description="categories the photo probably belongs to, best first (empty when no neighbour has "
        "a category); computed over the whole catalogue, whatever the category filter"
    )


class UncategorisedImageView(BaseModel):
    key: str
    product_id: str
    width: int
    height: int
    suggested_categories: list[SuggestedCategory] = Field(
        description="the stored vote, best first; empty when no categorised product could vote"
    )
    model_version: str | None = Field(description="the model whose vectors voted; null without a vote")


class UncategorisedResponse(BaseModel):
    images: list[UncategorisedImageView]
    count: int
    confident_at: float = Field(description="the confidence from which a suggestion is marked confident")
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")


class StoredImageView(BaseModel):
    key: str
    category: str | None
    width: int
    height: int
    size_bytes: int | None
    etag: str | None
    model_versions: list[str] = Field(description="the models that hold a vector of this image")
    updated_at: str


class ProductResponse(BaseModel):
    product_id: str
    category: str | None
    model_versions: list[str]
    images: list[StoredImageView]


class ModelStatusView(BaseModel):
    version: str
    dimension: int
    state: str = Field(description="building, active (exactly one) or standby")
    coverage: float = Field(description="images_embedded / images_stored")
    images_embedded: int
    images_stored: int


class HealthResponse(BaseModel):
    status: str = Field(description="ok, or degraded when the database is unreachable (503)")
    database: str = Field(description="ok or unreachable")
    model_loaded: bool
    model_version: str = Field(description="the model this container loaded at start")
    images: int | None = Field(description="images in the index; null when the database is unreachable")
    models: list[ModelStatusView] = Field(
        description="every model not retired: its state and how much of the catalogue it covers"
    )


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


# API Gateway and Lambda accept at most 6 MB per synchronous request, the photo base64-encoded
# (4/3 of its size) included: photos larger than this go through POST /uploads.
MAX_REQUEST_PHOTO_MB = 4.5


class UploadResponse(BaseModel):
    """A presigned S3 POST for one search photo: send `fields` and the file as `file` to `url`,
    then search with {"s3_key": s3_key}."""

    url: str
    fields: dict[str, str]
    s3_key: str
    max_bytes: int = Field(description="S3 refuses a larger file")
    expires_in: int = Field(description="seconds the upload URL stays valid")


class SearchByReference(BaseModel):
    """JSON body of POST /search: exactly one of the two fields is a string."""

    # The documented schema says what `exactly_one` checks; a field that is null counts as absent.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"properties": {"image_base64": {"type": "string"}}, "required": ["image_base64"]},
                {"properties": {"s3_key": {"type": "string"}}, "required": ["s3_key"]},
            ]
        }
    )

    # Documented, not validated here: the handler decodes it and answers 400 bad_base64.
    image_base64: str | None = Field(
        default=None,
        description="the photo, base64-encoded (standard alphabet, padded)",
        json_schema_extra={"pattern": BASE64},
    )
    s3_key: str | None = Field(
        default=None,
        max_length=1024,
        pattern=NO_NUL,
        description="a photo in the bucket: under the key prefix, or from POST /uploads",
    )

    @model_validator(mode="after")
    def exactly_one(self) -> Self:
        if (self.image_base64 is None) == (self.s3_key is None):
            raise ValueError("give exactly one of image_base64 or s3_key")
        return self


def search_request_body() -> dict[str, Any]:
    """The OpenAPI requestBody of POST /search: the photo itself, or JSON naming it."""
    photo = {"schema": {"type": "string", "format": "binary"}}
    return {
        "required": True,
        "description": f"the photo ({', '.join(ALLOWED_FORMATS)}), or JSON with image_base64 or s3_key. "
        f"A photo sent in the request may have at most {MAX_REQUEST_PHOTO_MB} MB (API Gateway and "
        "Lambda take 6 MB per request, base64 included); upload a larger one with POST /uploads and "
        "search by its s3_key.",
        "content": {
            "image/*": photo,
            "application/octet-stream": photo,
            "application/json": {"schema": SearchByReference.model_json_schema()},
        },
    }


_ERROR_DESCRIPTIONS = {
    HTTPStatus.BAD_REQUEST: "a query or path parameter out of range, or a body that cannot be read",
    HTTPStatus.NOT_FOUND: "no such product, no such object in the bucket, or uploads are disabled",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "the photo has more bytes or pixels than allowed",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "a body that is no photo in a format read here, or of another type",
    HTTPStatus.UNPROCESSABLE_ENTITY: "a JSON body that does not fit its schema",
    HTTPStatus.SERVICE_UNAVAILABLE: "the database or the bucket cannot be reached; try again",
}


def responses(ok: type[BaseModel], *errors: HTTPStatus) -> dict[int, OpenAPIResponse]:
    """The OpenAPI responses of a route: `ok` for 200, ErrorBody for each listed error status."""
    documented: dict[int, OpenAPIResponse] = {
        200: {"description": "OK", "content": {"application/json": {"model": ok}}}
    }
    for status in errors:
        documented[status.value] = {
            "description": _ERROR_DESCRIPTIONS[status],
            "content": {"application/json": {"model": ErrorBody}},
        }
    return documented


def without_unused_defaults(document: dict[str, Any]) -> dict[str, Any]:
    """The generated document less what Powertools adds to every route: a 422 with its own
    validation-error schema (the handler answers parameter problems with 400 and ErrorBody, and
    only POST /search, which documents its own 422, reads a body) and the unused schemas."""
    for operation in (op for path in document["paths"].values() for op in path.values()):
        if operation["responses"].get("422", {}).get("content", {}).get("application/json", {}).get(
            "schema"
        ) == {"$ref": "#/components/schemas/HTTPValidationError"}:
            del operation["responses"]["422"]
    schemas = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(name, None)
    return document
