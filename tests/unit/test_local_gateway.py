"""The local stack's translations: HTTP <-> API Gateway HTTP API v2 events, template -> topology."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lookalike_local.http_api import http_api_event, lambda_result_to_http, match_route
from lookalike_local.template import HttpRoute, NotificationRule, load_topology

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_V2 = json.loads((REPO_ROOT / "events" / "powertools__apiGatewayProxyV2Event.json").read_text())
ROUTES = (
    HttpRoute("POST", "/search"),
    HttpRoute("GET", "/products/{id}/similar"),
    HttpRoute("GET", "/products/{id}"),
    HttpRoute("GET", "/health"),
)


def _event(**overrides: object) -> dict[str, object]:
    arguments: dict[str, object] = {
        "method": "POST",
        "raw_path": "/search",
        "raw_query": "k=5&category=food-drink&k=7",
        "headers": [
            ("Content-Type", "image/jpeg"),
            ("X-Trace", "a"),
            ("x-trace", "b"),
            ("Cookie", "session=1; theme=dark"),
            ("User-Agent", "pytest"),
        ],
        "body": b"\xff\xd8\xff\xe0 not text",
        "source_ip": "127.0.0.1",
        "route": ROUTES[0],
        "path_parameters": {},
        "domain_name": "127.0.0.1",
    }
    arguments.update(overrides)
    return http_api_event(**arguments)  # type: ignore[arg-type]


def test_the_event_has_the_published_v2_shape() -> None:
    event = _event(path_parameters={"id": "p1"})
    assert set(event) <= set(SAMPLE_V2)
    assert set(SAMPLE_V2) - set(event) == {"stageVariables"}  # we have no stage variables
    context = event["requestContext"]
    assert isinstance(context, dict)
    assert set(context["http"]) == set(SAMPLE_V2["requestContext"]["http"])
    assert set(context) == set(SAMPLE_V2["requestContext"]) - {"authentication", "authorizer"}
    assert event["version"] == "2.0"
    assert event["routeKey"] == context["routeKey"] == "POST /search"


def test_headers_query_cookies_and_binary_body_are_translated_like_api_gateway() -> None:
    event = _event()
    assert event["headers"] == {"content-type": "image/jpeg", "x-trace": "a,b", "user-agent": "pytest"}
    assert event["cookies"] == ["session=1", "theme=dark"]
    assert event["queryStringParameters"] == {"k": "5,7", "category": "food-drink"}
    assert event["rawQueryString"] == "k=5&category=food-drink&k=7"
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(str(event["body"])) == b"\xff\xd8\xff\xe0 not text"


def test_text_bodies_stay_text_and_empty_requests_have_no_body() -> None:
    json_event = _event(headers=[("content-type", "application/json; charset=utf-8")], body=b'{"a": 1}')
    assert json_event["body"] == '{"a": 1}'
    assert json_event["isBase64Encoded"] is False
    empty = _event(method="GET", raw_path="/health", raw_query="", headers=[], body=b"", route=ROUTES[3])
    assert "body" not in empty
    assert "queryStringParameters" not in empty
    assert "cookies" not in empty


@pytest.mark.parametrize(
    ("method", "path", "expected", "parameters"),
    [
        ("GET", "/products/p%201/similar", "GET /products/{id}/similar", {"id": "p 1"}),
        ("GET", "/products/p1", "GET /products/{id}", {"id": "p1"}),
        ("POST", "/search", "POST /search", {}),
        ("GET", "/search", None, None),
        ("GET", "/nowhere", None, None),
    ],
)
def test_routes_match_like_api_gateway(
    method: str, path: str, expected: str | None, parameters: dict[str, str] | None
) -> None:
    matched = match_route(ROUTES, method, path)
    if expected is None:
        assert matched is None
    else:
        assert matched is not None
        assert matched[0].route_key == expected
        assert matched[1] == parameters


def test_default_route_catches_everything() -> None:
    matched = match_route((HttpRoute("ANY", "$default"),), "DELETE", "/anything")
    assert matched is not None
    assert matched[0].route_key == "$default"


def test_handler_results_become_http_responses() -> None:
    binary = lambda_result_to_http(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "image/png"},
            "cookies": ["a=1"],
            "body": base64.b64encode(b"\x89PNG").decode(),
            "isBase64Encoded": True,
        }
    )
    assert (binary.status, binary.body) == (201, b"\x89PNG")
    assert ("Set-Cookie", "a=1") in binary.headers
    inferred = lambda_result_to_http({"results": []})  # v2: no statusCode -> 200 JSON
    assert inferred.status == 200
    assert json.loads(inferred.body) == {"results": []}
    assert ("Content-Type", "application/json") in inferred.headers


TEMPLATE = """
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Parameters:
  KeyPrefix: {Type: String, Default: catalogue/}
Globals:
  Function:
    Timeout: 25
    MemorySize: 2048
    Environment:
      Variables: {POWERTOOLS_SERVICE_NAME: lookalike, MODEL_DIR: /opt/model, HNSW_EF_SEARCH: 80}
Resources:
  Photos:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub "${AWS::StackName}-photos"
      NotificationConfiguration:
        QueueConfigurations:
          - Event: s3:ObjectCreated:*
            Queue: !GetAtt Queue.Arn
            Filter: {S3Key: {Rules: [{Name: prefix, Value: !Ref KeyPrefix}, {Name: suffix, Value: .jpg}]}}
          - Event: s3:ObjectRemoved:*
            Queue: !GetAtt Queue.Arn
  DeadLetters: {Type: AWS::SQS::Queue}
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 150
      RedrivePolicy: {deadLetterTargetArn: !GetAtt DeadLetters.Arn, maxReceiveCount: 4}
  Ingest:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/ingest/
      Handler: app.lambda_handler
      Environment: {Variables: {PHOTOS_BUCKET: !Ref Photos}}
      Events:
        FromQueue:
          Type: SQS
          Properties:
            Queue: !GetAtt Queue.Arn
            BatchSize: 16
            MaximumBatchingWindowInSeconds: 2
            FunctionResponseTypes: [ReportBatchItemFailures]
  Query:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/query/
      Handler: app.lambda_handler
      Timeout: 10
      Events:
        Search: {Type: HttpApi, Properties: {Path: /search, Method: post}}
        Similar: {Type: HttpApi, Properties: {Path: "/products/{id}/similar", Method: get}}
"""


def test_the_topology_is_read_from_the_template(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(TEMPLATE)
    topology = load_topology(template)
    assert topology.defaults_used == ()
    assert topology.notifications == (
        NotificationRule("s3:ObjectCreated:*", prefix="catalogue/", suffix=".jpg"),
        NotificationRule("s3:ObjectRemoved:*"),
    )
    assert (topology.visibility_timeout_s, topology.max_receive_count) == (150, 4)
    assert (topology.batch_size, topology.batching_window_s, topology.report_batch_item_failures) == (
        16,
        2.0,
        True,
    )
    assert topology.ingest is not None
    assert topology.query is not None
    assert topology.ingest.handler_file == tmp_path / "functions" / "ingest" / "app.py"
    assert (topology.ingest.timeout_s, topology.ingest.memory_mb) == (25, 2048)
    assert topology.query.timeout_s == 10
    # Plain values and local names are copied; what only makes sense in Lambda is not.
    assert topology.ingest.environment == {
        "POWERTOOLS_SERVICE_NAME": "lookalike",
        "HNSW_EF_SEARCH": "80",
        "PHOTOS_BUCKET": topology.bucket,
    }
    assert [route.route_key for route in topology.routes] == ["POST /search", "GET /products/{id}/similar"]


def test_without_a_template_the_defaults_are_named(tmp_path: Path) -> None:
    topology = load_topology(tmp_path / "missing.yaml")
    assert topology.defaults_used
    assert topology.ingest is None


@pytest.mark.skipif(not (REPO_ROOT / "template.yaml").exists(), reason="template.yaml not written yet")
def test_the_repository_template_gives_the_whole_local_topology() -> None:
    topology = load_topology(REPO_ROOT / "template.yaml")
    assert topology.defaults_used == (), "the local stack cannot copy these from template.yaml"
    assert topology.ingest is not None
    assert topology.ingest.handler_file.is_file()
    assert topology.query is not None
    assert topology.query.handler_file.is_file()
