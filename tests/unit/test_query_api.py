"""The query API's pure parts: the committed OpenAPI document, error mapping, search parameters.

Loading the handler builds the ONNX session in this process (as a cold start does); nothing
here needs the database.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lookalike import images
from lookalike.search import MAX_K, SearchParameters
from lookalike_local.lambda_runtime import load_handler

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def query_app() -> ModuleType:
    handler = load_handler(REPO_ROOT / "functions" / "query" / "app.py", "lookalike_query_app_unit")
    return sys.modules[handler.__module__]


def test_committed_openapi_document_is_the_generated_one(query_app: ModuleType) -> None:
    committed = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert committed == json.loads(query_app.openapi_document()), "stale: run make openapi"


def test_openapi_document_describes_the_issue_routes(query_app: ModuleType) -> None:
    document = json.loads(query_app.openapi_document())
    paths = document["paths"]
    assert {"/search", "/products/{product_id}/similar", "/products/{product_id}", "/health"} <= set(paths)
    similar = {p["name"]: p for p in paths["/products/{product_id}/similar"]["get"]["parameters"]}
    assert similar["k"]["schema"]["minimum"] == 1
    assert similar["k"]["schema"]["maximum"] == MAX_K == 100
    assert similar["k"]["schema"]["default"] == 10
    result = document["components"]["schemas"]["SearchResult"]["properties"]
    assert {"product_id", "key", "category", "similarity", "distance", "width", "height"} <= set(result)


def _rejection_reasons() -> set[str]:
    reasons = set()
    pending = list(images.ImageRejected.__subclasses__())
    while pending:
        kind = pending.pop()
        reasons.add(kind.reason)
        pending += kind.__subclasses__()
    return reasons


def test_every_image_rejection_has_a_4xx_status(query_app: ModuleType) -> None:
    statuses = query_app._IMAGE_STATUS
    assert set(statuses) == _rejection_reasons()
    assert all(400 <= status < 500 for status in statuses.values())
    assert statuses["too_large"] == statuses["too_many_pixels"] == 413
    assert statuses["not_an_image"] == statuses["unsupported_format"] == 415


@pytest.mark.parametrize(
    "arguments",
    [{"k": 0}, {"k": MAX_K + 1}, {"min_similarity": -1.01}, {"min_similarity": 1.5}],
)
def test_search_parameters_reject_out_of_range_values(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be between"):
        SearchParameters(**arguments)  # type: ignore[arg-type]


def test_search_parameters_defaults() -> None:
    assert SearchParameters() == SearchParameters(k=10, category=None, min_similarity=None)
    assert SearchParameters(k=MAX_K, min_similarity=-1.0).k == MAX_K
