"""Every failure the API answers, as one table: exception type -> (status, error code).

`register` installs the table on the resolver; each answer is the JSON body `views.ErrorBody`,
`{"error": code, "message": ...}`. A type not in the table (a bug, a missing setting) stays a 500
so that it shows in the function's error metrics instead of passing as a client's mistake.
"""

from http import HTTPStatus
from typing import NamedTuple

import psycopg
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

# isort: split
# The function's own modules: Lambda puts the function's folder on sys.path.
from domain import (
    CorruptImage,
    EmptyImage,
    ImageRejected,
    ImageTooLarge,
    InvalidCursorError,
    MatchLevelsUnavailableError,
    ModelNoLongerActiveError,
    NoActiveModelError,
    NotAnImage,
    ProductNotFoundError,
    TooManyPixels,
    TransientError,
    TruncatedImage,
    UnsupportedFormat,
)
from views import ErrorBody

logger = Logger(child=True)


class ApiError(Exception):
    """A request the API refuses; the table gives each kind its status and code."""


class MalformedJsonError(ApiError):
    """Not JSON, or JSON no parser should be made to read (nested too deep, numbers out of range)."""


class BadBase64Error(ApiError):
    pass


class UnsupportedMediaTypeError(ApiError):
    pass


class BadS3KeyError(ApiError):
    pass


class PhotoNotInBucketError(ApiError):
    pass


class PhotoTooLargeError(ApiError):
    pass


class UploadsDisabledError(ApiError):
    """QUERY_UPLOAD_PREFIX lies inside KEY_PREFIX: an uploaded search photo would be ingested."""


class Answer(NamedTuple):
    status: HTTPStatus
    code: str
    # str.format template over the exception; server-side failures say nothing of their cause.
    message: str = "{error}"


UNAVAILABLE = Answer(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable", "try again shortly")

ANSWERS: dict[type[Exception], Answer] = {
    MalformedJsonError: Answer(HTTPStatus.BAD_REQUEST, "malformed_json"),
    BadBase64Error: Answer(HTTPStatus.BAD_REQUEST, "bad_base64"),
    UnsupportedMediaTypeError: Answer(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
    BadS3KeyError: Answer(HTTPStatus.BAD_REQUEST, "bad_s3_key"),
    PhotoNotInBucketError: Answer(HTTPStatus.NOT_FOUND, "not_found"),
    PhotoTooLargeError: Answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large"),
    UploadsDisabledError: Answer(HTTPStatus.NOT_FOUND, "uploads_disabled"),
    InvalidCursorError: Answer(HTTPStatus.BAD_REQUEST, "bad_cursor"),
    # min_match asked of a model whose card has no calibrated match levels.
    MatchLevelsUnavailableError: Answer(HTTPStatus.BAD_REQUEST, "match_levels_unavailable"),
    ProductNotFoundError: Answer(
        HTTPStatus.NOT_FOUND, "product_not_found", "no images of product {error.args[0]!r}"
    ),
    # Images: the code is the rejection's own reason. Broken image data is a malformed body (400)
    # like malformed JSON; a well-formed file that is not a photo we read is a media type (415).
    EmptyImage: Answer(HTTPStatus.BAD_REQUEST, EmptyImage.reason),
    TruncatedImage: Answer(HTTPStatus.BAD_REQUEST, TruncatedImage.reason),
    CorruptImage: Answer(HTTPStatus.BAD_REQUEST, CorruptImage.reason),
    ImageTooLarge: Answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, ImageTooLarge.reason),
    TooManyPixels: Answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, TooManyPixels.reason),
    NotAnImage: Answer(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, NotAnImage.reason),
    UnsupportedFormat: Answer(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, UnsupportedFormat.reason),
    # A rejection added later without its own entry is still the client's image, not a 500.
    ImageRejected: Answer(HTTPStatus.BAD_REQUEST, ImageRejected.reason),
    psycopg.OperationalError: UNAVAILABLE,
    # A new deployment before its first ingest has registered the model (docs/MODELS.md).
    NoActiveModelError: UNAVAILABLE,
    # Models switched twice during one query (each search retries once with the new one).
    ModelNoLongerActiveError: UNAVAILABLE,
    TransientError: UNAVAILABLE,
}

# Problems in the query string or the path are a malformed request (400); a JSON body that
# parses but does not fit its schema is unprocessable (422).
_PARAMETER_LOCATIONS = {"query", "path"}


def answer_for(error: Exception) -> Answer:
    """The table's answer for this exception: the entry of its nearest class."""
    for kind in type(error).__mro__:
        if kind in ANSWERS:
            return ANSWERS[kind]
    raise LookupError(f"no answer for {type(error).__name__}")


def error_response(status: HTTPStatus, code: str, message: str) -> Response[str]:
    body = ErrorBody(error=code, message=message)
    return Response(status.value, content_types.APPLICATION_JSON, body.model_dump_json())


def register(app: APIGatewayHttpResolver) -> None:
    """Install the table, the validation answers and the JSON 404 on `app`."""

    @app.exception_handler(list(ANSWERS))  # type: ignore[untyped-decorator]
    def handle_listed(error: Exception) -> Response[str]:
        answer = answer_for(error)
        if answer.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.warning("dependency unavailable", extra={"error": str(error)})
        return error_response(answer.status, answer.code, answer.message.format(error=error))

    @app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
    def handle_validation(error: RequestValidationError) -> Response[str]:
        problems = error.errors()
        message = "; ".join(
            f"{'.'.join(str(part) for part in p.get('loc', ()))}: {p.get('msg', 'invalid')}" for p in problems
        )
        if all(str((p.get("loc") or ("body",))[0]) in _PARAMETER_LOCATIONS for p in problems):
            return error_response(HTTPStatus.BAD_REQUEST, "invalid_parameter", message)
        return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, "validation_error", message)

    @app.not_found
    def handle_not_found(_: Exception) -> Response[str]:
        message = f"no route {app.current_event.http_method} {app.current_event.path}"
        return error_response(HTTPStatus.NOT_FOUND, "not_found", message)
