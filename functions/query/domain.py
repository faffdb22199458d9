"""The query function's one door into the domain package and its AWS adapters.

Every name the function uses from `lookalike` and `lookalike_aws` is imported here and nowhere
else in this folder, so a move inside those packages is followed in this file alone.
"""

from lookalike.duplicates import (
    DEFAULT_THRESHOLD,
    DuplicatePage,
    InvalidCursorError,
    decode_cursor,
    duplicate_groups_page,
    encode_cursor,
)
from lookalike.images import (
    ALLOWED_FORMATS,
    CorruptImage,
    EmptyImage,
    ImageRejected,
    ImageTooLarge,
    NotAnImage,
    TooManyPixels,
    TruncatedImage,
    UnsupportedFormat,
)
from lookalike.matches import MatchCutoffs, MatchLevel, MatchLevelsUnavailableError
from lookalike.model.embedder import get_embedder
from lookalike.ports import FetchedObject, ObjectTooLarge, TransientError
from lookalike.search import ProductNotFoundError, registry_status, search_by_image, similar_products
from lookalike.settings import SettingsError, get_settings
from lookalike.store import MAX_K, Neighbour, NoActiveModelError, SearchParameters, StoredImage
from lookalike.store.category_suggestions import UncategorisedImage, uncategorised_images
from lookalike.store.search import ModelNoLongerActiveError
from lookalike.suggestions import CONFIDENT_AT, CategorySuggestion
from lookalike_aws.runtime import get_search, get_store
from lookalike_aws.s3 import S3ObjectSource, presigned_upload

__all__ = [
    "ALLOWED_FORMATS",
    "CONFIDENT_AT",
    "DEFAULT_THRESHOLD",
    "MAX_K",
    "CategorySuggestion",
    "CorruptImage",
    "DuplicatePage",
    "EmptyImage",
    "FetchedObject",
    "ImageRejected",
    "ImageTooLarge",
    "InvalidCursorError",
    "MatchCutoffs",
    "MatchLevel",
    "MatchLevelsUnavailableError",
    "ModelNoLongerActiveError",
    "Neighbour",
    "NoActiveModelError",
    "NotAnImage",
    "ObjectTooLarge",
    "ProductNotFoundError",
    "S3ObjectSource",
    "SearchParameters",
    "SettingsError",
    "StoredImage",
    "TooManyPixels",
    "TransientError",
    "TruncatedImage",
    "UncategorisedImage",
    "UnsupportedFormat",
    "decode_cursor",
    "duplicate_groups_page",
    "encode_cursor",
    "get_embedder",
    "get_search",
    "get_settings",
    "get_store",
    "presigned_upload",
    "registry_status",
    "search_by_image",
    "similar_products",
    "uncategorised_images",
]
