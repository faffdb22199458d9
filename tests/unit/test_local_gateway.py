"""The local stack's translations: HTTP <-> API Gateway HTTP API v2 events, template -> topology."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import socket
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import pytest
from PIL import Image

from lookalike_local.http_api import (
    LocalApiGateway,
    LocalHttpServer,
    LocalRequestHandler,
    http_api_event,
    lambda_result_to_http,
    match_route,
)
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


# --- the HTTP server: one write per response, JSON for every method and every bad request ---------


class _PageHelpers:
    """The page's helpers, with real JPEG thumbnails drawn here; records what the gateway asks."""

    def __init__(self) -> None:
        self.thumbnail_sizes: list[int] = []

    def thumbnail(self, key: str, max_side: int) -> bytes | None:
        self.thumbnail_sizes.append(max_side)
        image = Image.new("RGB", (2 * max_side, max_side), (200, 30, 30))
        image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG")
        return buffer.getvalue()

    def upload(self, product_id: str, category: str, filename: str, body: bytes, content_type: str) -> Any:
        raise AssertionError("not under test")

    def object_status(self, key: str) -> Any:
        return {"key": key}

    def status(self) -> Any:
        return {}

    def products(self) -> Any:
        return []


def _function(event: dict[str, Any]) -> dict[str, Any]:
    """The function behind the gateway: answers with the route API Gateway matched."""
    return {"statusCode": 200, "body": json.dumps({"routeKey": event["routeKey"]})}


class _RecordingHandler(LocalRequestHandler):
    nodelay: ClassVar[list[int]] = []

    def setup(self) -> None:
        super().setup()
        _RecordingHandler.nodelay.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[LocalHttpServer, _PageHelpers]]:
    """One server for the module (stopping one waits for serve_forever's poll interval)."""
    helpers = _PageHelpers()
    gateway = LocalApiGateway(_function, ROUTES, helpers)
    started = LocalHttpServer("127.0.0.1", 0, gateway, handler=_RecordingHandler)
    started.start()
    try:
        yield started, helpers
    finally:
        started.stop()


@pytest.fixture
def page(running: tuple[LocalHttpServer, _PageHelpers]) -> _PageHelpers:
    running[1].thumbnail_sizes.clear()
    return running[1]


@pytest.fixture
def server(running: tuple[LocalHttpServer, _PageHelpers], page: _PageHelpers) -> LocalHttpServer:
    return running[0]


def _request(server: LocalHttpServer, method: str, path: str, **kwargs: Any) -> tuple[int, str, bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        connection.request(method, path, **kwargs)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def _read_response(client: socket.socket) -> bytes:
    """One recv: whatever the server's first segment holds."""
    client.settimeout(10)
    return client.recv(1 << 20)


def test_each_keep_alive_response_leaves_in_one_write_without_nagle(server: LocalHttpServer) -> None:
    """http.server wrote the head and the body separately; with Nagle's algorithm the body then
    waited for the client's delayed ACK on every keep-alive request. A response that leaves in
    one write arrives whole in the client's first recv."""
    with socket.create_connection(server.server_address[:2], timeout=10) as client:
        for _ in range(20):
            client.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            first = _read_response(client)
            head, _, body = first.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            assert head.startswith(b"HTTP/1.1 200")
            assert len(body) == length, f"the body came in a later segment: {first!r}"
            assert json.loads(body) == {"routeKey": "GET /health"}
    assert _RecordingHandler.nodelay
    assert all(_RecordingHandler.nodelay), "TCP_NODELAY must be set on accepted connections"


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "CONNECT", "BREW", "DELETE"])
def test_every_method_gets_api_gateways_json_answer(server: LocalHttpServer, method: str) -> None:
    status, content_type, body = _request(server, method, "/health")
    assert (status, content_type) == (404, "application/json")
    assert json.loads(body) == {"message": "Not Found"}


def test_a_method_the_api_routes_reaches_the_function_whatever_http_server_knows() -> None:
    gateway = LocalApiGateway(_function, (HttpRoute("ANY", "$default"),), _PageHelpers())
    with_default = LocalHttpServer("127.0.0.1", 0, gateway)
    with_default.start()
    try:
        status, _, body = _request(with_default, "TRACE", "/anything")
    finally:
        with_default.stop()
    assert status == 200
    assert json.loads(body) == {"routeKey": "$default"}


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NONSENSE\r\n\r\n",  # no path, no version
        b"GET /health HTTP/9.9\r\n\r\n",  # unsupported version
        b"GET /health HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET /health HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
    ],
)
def test_malformed_requests_get_a_json_error(server: LocalHttpServer, request_bytes: bytes) -> None:
    with socket.create_connection(server.server_address[:2], timeout=10) as client:
        client.sendall(request_bytes)
        received = b""
        while chunk := client.recv(65536):  # the server closes after an error
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert 400 <= status < 600, head
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"message": HTTPStatus(status).phrase}


def test_expect_100_continue_is_answered_before_the_body_is_sent(server: LocalHttpServer) -> None:
    body = json.dumps({"k": 1}).encode()
    with socket.create_connection(server.server_address[:2], timeout=10) as client:
        client.sendall(
            b"POST /search HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        client.settimeout(5)
        assert client.recv(1024).startswith(b"HTTP/1.1 100")
        client.sendall(body)
        assert client.recv(65536).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("size", ["0", "-1", "abc", "1.5", "", "1025", "99999999999", "\u0663"])
def test_a_bad_thumbnail_size_is_a_json_400(server: LocalHttpServer, page: _PageHelpers, size: str) -> None:
    status, content_type, body = _request(server, "GET", f"/thumbnails/products/a/b.jpg?size={quote(size)}")
    assert (status, content_type) == (400, "application/json")
    assert json.loads(body) == {"message": "size must be a whole number from 1 to 1024"}
    assert page.thumbnail_sizes == [], "the helper is not asked for an invalid size"


@pytest.mark.parametrize(
    ("query", "side"), [("", 256), ("?size=1", 1), ("?size=64", 64), ("?size=1024", 1024)]
)
def test_valid_thumbnail_sizes_are_served(
    server: LocalHttpServer, page: _PageHelpers, query: str, side: int
) -> None:
    status, content_type, body = _request(server, "GET", f"/thumbnails/products/a/b.jpg{query}")
    assert (status, content_type) == (200, "image/jpeg")
    with Image.open(io.BytesIO(body)) as image:
        assert max(image.size) == side
    assert page.thumbnail_sizes == [side]
