"""The query API's pure parts: the committed OpenAPI document, the error table, search parameters.

Loading the handler builds the ONNX session in this process (as a cold start does); nothing
here needs the database.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lookalike import images
from lookalike.store import MAX_K, SearchParameters
from lookalike_local.lambda_runtime import load_handler

REPO_ROOT = Path(__file__).resolve().parents[2]
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture(scope="module")
def query_app() -> ModuleType:
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("POWERTOOLS_SERVICE_NAME", "lookalike-query")
        environment.setenv("POWERTOOLS_METRICS_NAMESPACE", "LookalikeTest")
        handler = load_handler(REPO_ROOT / "functions" / "query" / "app.py", "lookalike_query_app_unit")
    return sys.modules[handler.__module__]


@pytest.fixture(scope="module")
def document(query_app: ModuleType) -> dict[str, Any]:
    return json.loads(query_app.openapi_document())  # type: ignore[no-any-return]


def _schema(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    return document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]


def test_committed_openapi_document_is_the_generated_one(document: dict[str, Any]) -> None:
    committed = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert committed == document, "stale: run make openapi"


def test_openapi_document_describes_the_issue_routes(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert {"/search", "/products/{product_id}/similar", "/products/{product_id}", "/health"} <= set(paths)
    similar = {p["name"]: p for p in paths["/products/{product_id}/similar"]["get"]["parameters"]}
    assert similar["k"]["schema"]["minimum"] == 1
    assert similar["k"]["schema"]["maximum"] == MAX_K == 100
    assert similar["k"]["schema"]["default"] == 10
    result = document["components"]["schemas"]["SearchResult"]["properties"]
    assert {"product_id", "key", "category", "similarity", "distance", "width", "height"} <= set(result)


def test_search_documents_its_request_body(document: dict[str, Any]) -> None:
    body = document["paths"]["/search"]["post"]["requestBody"]
    assert body["required"] is True
    content = body["content"]
    binary = {"type": "string", "format": "binary"}
    assert content["image/*"]["schema"] == content["application/octet-stream"]["schema"] == binary
    reference = content["application/json"]["schema"]
    assert set(reference["properties"]) == {"image_base64", "s3_key"}
    assert [branch["required"] for branch in reference["oneOf"]] == [["image_base64"], ["s3_key"]]


def test_every_error_status_documents_the_real_error_body(document: dict[str, Any]) -> None:
    error_body = document["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) == set(error_body["properties"]) == {"error", "message"}
    expected = {
        ("/search", "post"): {400, 404, 413, 415, 422, 503},
        ("/products/{product_id}/similar", "get"): {400, 404, 503},
        ("/products/{product_id}", "get"): {400, 404, 503},
        ("/duplicates", "get"): {400, 503},
    }
    for (path, method), statuses in expected.items():
        documented = {int(status) for status in document["paths"][path][method]["responses"]}
        assert documented == {200, *statuses}, path
        assert all(_schema(document, path, method, status) == ERROR_BODY for status in statuses), path
    # Powertools' own validation-error schema is never answered: query and path problems are 400s.
    assert "HTTPValidationError" not in json.dumps(document)


def test_health_is_typed_as_its_json_object(document: dict[str, Any]) -> None:
    health = {"$ref": "#/components/schemas/HealthResponse"}
    assert _schema(document, "/health", "get", 200) == _schema(document, "/health", "get", 503) == health
    properties = document["components"]["schemas"]["HealthResponse"]["properties"]
    assert set(properties) == {"status", "database", "model_loaded", "model_version", "images", "models"}


def _rejection_kinds() -> set[type[images.ImageRejected]]:
    kinds = set()
    pending = list(images.ImageRejected.__subclasses__())
    while pending:
        kind = pending.pop()
        kinds.add(kind)
        pending += kind.__subclasses__()
    return kinds


def test_every_image_rejection_has_a_4xx_answer_named_by_its_reason(query_app: ModuleType) -> None:
    answers = query_app.errors.ANSWERS
    kinds = _rejection_kinds()
    assert kinds <= set(answers)
    assert all(400 <= answers[kind].status < 500 and answers[kind].code == kind.reason for kind in kinds)
    assert {answers[images.ImageTooLarge].status, answers[images.TooManyPixels].status} == {413}
    assert {answers[images.NotAnImage].status, answers[images.UnsupportedFormat].status} == {415}


def test_every_answer_is_documented_where_it_can_occur(
    query_app: ModuleType, document: dict[str, Any]
) -> None:
    statuses = {int(answer.status) for answer in query_app.errors.ANSWERS.values()}
    search = {int(status) for status in document["paths"]["/search"]["post"]["responses"]}
    assert statuses <= search


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


def test_openapi_documents_suggested_categories_and_the_review_listing(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    search = document["paths"]["/search"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert search == {"$ref": "#/components/schemas/PhotoSearchResponse"}
    assert "suggested_categories" in schemas["PhotoSearchResponse"]["required"]
    assert set(schemas["SuggestedCategory"]["properties"]) == {"category", "confidence", "confident"}
    assert "suggested_categories" not in schemas["SearchResponse"]["properties"]  # by product: none
    listing = document["paths"]["/uncategorised"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "cursor"}
    assert {"200", "400", "503"} <= set(listing["responses"])
    assert set(schemas["UncategorisedImageView"]["properties"]) >= {
        "key",
        "product_id",
        "suggested_categories",
    }


def test_openapi_documents_match_levels(document: dict[str, Any]) -> None:
    levels = ["duplicate", "very_similar", "similar", "weak"]
    for path, method in (("/search", "post"), ("/products/{product_id}/similar", "get")):
        parameters = {p["name"]: p for p in document["paths"][path][method]["parameters"]}
        schema = parameters["min_match"]["schema"]
        assert levels in ([option.get("enum") for option in schema.get("anyOf", [schema])]), schema
    schemas = document["components"]["schemas"]
    match = schemas["SearchResult"]["properties"]["match"]
    assert levels in [option.get("enum") for option in match["anyOf"]]
    assert {"type": "null"} in match["anyOf"]
    assert set(schemas["MatchCutoffsView"]["properties"]) == {"duplicate", "very_similar", "similar"}
    assert "match_cutoffs" in schemas["SearchResponse"]["properties"]


def test_an_unknown_match_level_is_a_400_naming_the_levels(query_app: ModuleType) -> None:
    from lookalike_local.lambda_runtime import LambdaContext

    event = json.loads((REPO_ROOT / "events" / "powertools__apiGatewayProxyV2Event.json").read_text())
    event |= {"routeKey": "$default", "rawPath": "/products/coffee/similar"}
    event["rawQueryString"] = "min_match=same"
    event["queryStringParameters"] = {"min_match": "same"}
    event["requestContext"]["stage"] = "$default"
    event["requestContext"]["http"] |= {"method": "GET", "path": "/products/coffee/similar"}
    event["body"], event["isBase64Encoded"] = None, False
    response = query_app.lambda_handler(event, LambdaContext("lookalike-query", 1769, 10))
    body = json.loads(response["body"])
    assert (response["statusCode"], body["error"]) == (400, "invalid_parameter")
    assert "min_match" in body["message"], body
    assert "very_similar" in body["message"], body
