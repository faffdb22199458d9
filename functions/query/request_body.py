"""The photo of POST /search, from whichever body the client sent.

`image/*` or `application/octet-stream`: the photo itself (API Gateway base64-encodes binary
bodies). `application/json`: `{"image_base64": ...}` or `{"s3_key": ...}` (views.SearchByReference).
Anything that cannot be read is the client's 4xx (errors.ANSWERS), never a 500.
"""

import base64
import binascii

from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from pydantic import ValidationError

# isort: split
# The function's own modules: Lambda puts the function's folder on sys.path.
from domain import FetchedObject, ObjectTooLarge, S3ObjectSource, SettingsError, get_settings
from errors import (
    BadBase64Error,
    BadS3KeyError,
    MalformedJsonError,
    PhotoNotInBucketError,
    PhotoTooLargeError,
    UnsupportedMediaTypeError,
)
from views import SearchByReference


def search_photo(event: APIGatewayProxyEventV2) -> bytes:
    """The photo's bytes; raises an `errors.ApiError` or RequestValidationError when there is none."""
    content_type = (event.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        return _body_bytes(event)
    if content_type != "application/json":
        raise UnsupportedMediaTypeError(
            f"send the photo as image/* or JSON with image_base64 or s3_key, not {content_type or 'nothing'}"
        )
    request = _reference(_body_bytes(event))
    if request.image_base64 is not None:
        return _b64decode(request.image_base64, "image_base64 is not valid base64")
    return _bucket_photo(str(request.s3_key))


def _body_bytes(event: APIGatewayProxyEventV2) -> bytes:
    body = event.body or ""
    if event.is_base64_encoded:
        return _b64decode(body, "the body is not valid base64")
    # A text body (API Gateway passes text types as they came): its UTF-8 bytes.
    return body.encode("utf-8", errors="replace")


def _b64decode(text: str, message: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadBase64Error(message) from None


def _reference(raw: bytes) -> SearchByReference:
    # pydantic's JSON parser bounds nesting and number size itself and reports both as
    # invalid JSON, where `json.loads` raises RecursionError or ValueError.
    try:
        return SearchByReference.model_validate_json(raw)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_context=False)
        unreadable = [p for p in problems if p["type"] == "json_invalid"]
        if unreadable:
            raise MalformedJsonError(f"the body is not valid JSON: {unreadable[0]['msg']}") from None
        raise RequestValidationError([{**p, "loc": ("body", *p["loc"])} for p in problems]) from None


def _bucket_photo(key: str) -> bytes:
    # The request is checked before the configuration: a bad key is the client's 400 in any case.
    settings = get_settings()
    prefixes = [settings.key_layout.prefix, settings.query_upload_prefix]
    if not any(prefix is not None and key.startswith(prefix) for prefix in prefixes):
        allowed = " or ".join(repr(prefix) for prefix in prefixes if prefix is not None)
        raise BadS3KeyError(f"s3_key must start with {allowed}")
    if not settings.bucket_name:
        raise SettingsError("BUCKET_NAME is not set: searching by s3_key needs the photo bucket")
    fetched = S3ObjectSource().fetch(settings.bucket_name, key, max_bytes=settings.max_image_bytes)
    if isinstance(fetched, FetchedObject):
        return fetched.data
    if isinstance(fetched, ObjectTooLarge):
        raise PhotoTooLargeError(f"s3_key is {fetched.size} bytes; at most {settings.max_image_bytes}")
    raise PhotoNotInBucketError(f"no object {key!r} in the bucket")
