"""The local API Gateway: HTTP requests -> HTTP API payload v2 events -> the query handler -> HTTP.

The event has the shape of the published sample `events/powertools__apiGatewayProxyV2Event.json`
(version 2.0, routeKey, rawPath, rawQueryString, cookies, lower-cased headers with repeated
values joined by commas, queryStringParameters, pathParameters, requestContext.http, body
base64-encoded for binary content types). Routes are matched against the template's HttpApi
events like API Gateway does (an unmatched request gets API Gateway's own 404 without invoking
the function); without declared routes every request goes to the function as `$default`.

Besides the API the server has a few local-only routes that are not part of the service:
`/` and `/static/...` (the search page), `/thumbnails/{key}` (a small JPEG of an object in the
local bucket), `POST /upload` (puts a new product image into the bucket) and
`/local/objects?key=` (ingest status of one object), `/local/status` (ingest counts) and
`/local/catalogue` (the products uploaded by the local stack, one image each).

Like API Gateway, the server answers every request with JSON: any HTTP method (an unmatched one
gets the JSON 404 of an unmatched route), and malformed requests get `{"message": ...}` too.
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from lookalike_local.template import LOCAL_ACCOUNT, HttpRoute

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# API Gateway HTTP API: 10 MB request payload; Lambda: 6 MB synchronous invocation payload.
MAX_REQUEST_BYTES = 10 * 1024 * 1024
MAX_EVENT_BYTES = 6 * 1024 * 1024
API_ID = "local"
# Thumbnails of the page: a square of at most this many pixels a side.
MAX_THUMBNAIL_SIDE = 1024
_THUMBNAIL_SIZE = re.compile(r"[0-9]{1,5}")
# Content types API Gateway passes as text; every other body is base64-encoded in the event.
_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(json|.*\+json|xml|.*\+xml|javascript|x-www-form-urlencoded|graphql))$"
)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _is_text(content_type: str | None) -> bool:
    return content_type is not None and bool(_TEXT_TYPES.match(content_type.split(";")[0].strip().lower()))


def match_route(
    routes: Iterable[HttpRoute], method: str, path: str
) -> tuple[HttpRoute, dict[str, str]] | None:
    """The route API Gateway would pick: the most specific path first, then `$default`."""

    def pattern(route_path: str) -> re.Pattern[str]:
        parts = []
        for segment in route_path.strip("/").split("/"):
            greedy = re.fullmatch(r"\{(\w+)\+\}", segment)
            plain = re.fullmatch(r"\{(\w+)\}", segment)
            if greedy:
                parts.append(f"(?P<{greedy.group(1)}>.+)")
            elif plain:
                parts.append(f"(?P<{plain.group(1)}>[^/]+)")
            else:
                parts.append(re.escape(segment))
        return re.compile("/" + "/".join(parts))

    candidates = sorted(
        (route for route in routes if route.path != "$default"),
        key=lambda route: (route.path.count("{"), -len(route.path)),
    )
    for route in candidates:
        if route.method not in {method, "ANY"}:
            continue
        found = pattern(route.path).fullmatch(path)
        if found:
            return route, {name: unquote(value) for name, value in found.groupdict().items()}
    for route in routes:
        if route.path == "$default":
            return route, {}
    return None


def http_api_event(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    source_ip: str,
    route: HttpRoute | None,
    path_parameters: dict[str, str],
    domain_name: str,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2 event for one request."""
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies += [cookie.strip() for cookie in value.split(";") if cookie.strip()]
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    now = datetime.now(UTC)
    route_key = route.route_key if route is not None else "$default"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": merged,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT,
            "apiId": API_ID,
            "domainName": domain_name,
            "domainPrefix": domain_name.split(".")[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = path_parameters
    if body:
        if _is_text(merged.get("content-type")):
            event["body"] = body.decode("utf-8", errors="replace")
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def _json_response(status: int, payload: Any, extra: list[tuple[str, str]] | None = None) -> HttpResponse:
    body = json.dumps(payload).encode()
    return HttpResponse(status, [("Content-Type", "application/json"), *(extra or [])], body)


def lambda_result_to_http(result: Any) -> HttpResponse:
    """Translate the handler's result like API Gateway's payload v2 does."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # v2 infers a 200 JSON response from a result without statusCode.
        if isinstance(result, str):
            return HttpResponse(200, [("Content-Type", "application/json")], result.encode())
        return _json_response(200, result)
    headers = [(str(name), str(value)) for name, value in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers += [(str(name), str(value)) for value in values]
    headers += [("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or []]
    raw = result.get("body")
    if raw is None:
        body = b""
    elif result.get("isBase64Encoded"):
        body = base64.b64decode(str(raw))
    else:
        body = str(raw).encode("utf-8")
    if not any(name.lower() == "content-type" for name, _ in headers) and body:
        headers.append(("Content-Type", "application/json"))
    return HttpResponse(int(result["statusCode"]), headers, body)


class LocalRoutes(Protocol):
    """The local-only routes (the page's helpers); not part of the service's API."""

    def thumbnail(self, key: str, max_side: int) -> bytes | None: ...

    def upload(
        self, product_id: str, category: str, filename: str, body: bytes, content_type: str
    ) -> Any: ...

    def object_status(self, key: str) -> Any: ...

    def status(self) -> Any: ...

    def products(self) -> Any: ...


class LocalApiGateway:
    """Dispatches requests: local routes, static files, else the query function via a v2 event."""

    def __init__(
        self,
        invoke: Callable[[dict[str, Any]], Any],
        routes: tuple[HttpRoute, ...],
        local: LocalRoutes,
        static_dir: Path = STATIC_DIR,
    ) -> None:
        self._invoke = invoke
        self.routes = routes or (HttpRoute("ANY", "$default"),)
        self._local = local
        self._static_dir = static_dir.resolve()
        self.requests = 0

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str, host: str
    ) -> HttpResponse:
        self.requests += 1
        split = urlsplit(target)
        path, query = split.path or "/", split.query
        params = dict(parse_qsl(query, keep_blank_values=True))
        if method in {"GET", "HEAD"} and (path == "/" or path.startswith("/static/")):
            return self._static("index.html" if path == "/" else path.removeprefix("/static/"))
        if method in {"GET", "HEAD"} and path.startswith("/thumbnails/"):
            raw_size = params.get("size", "256")
            size = int(raw_size) if _THUMBNAIL_SIZE.fullmatch(raw_size) else 0
            if not 1 <= size <= MAX_THUMBNAIL_SIDE:
                return _json_response(
                    400, {"message": f"size must be a whole number from 1 to {MAX_THUMBNAIL_SIDE}"}
                )
            thumbnail = self._local.thumbnail(unquote(path.removeprefix("/thumbnails/")), size)
            if thumbnail is None:
                return _json_response(404, {"message": "no such object"})
            return HttpResponse(
                200, [("Content-Type", "image/jpeg"), ("Cache-Control", "max-age=300")], thumbnail
            )
        if method == "POST" and path == "/upload":
            content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
            product_id, category = params.get("product_id", "").strip(), params.get("category", "").strip()
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", product_id) or not re.fullmatch(
                r"[a-z0-9][a-z0-9-]{0,31}", category
            ):
                return _json_response(
                    400,
                    {"message": "product_id and category are required (letters, digits, - _ .)"},
                )
            if not body:
                return _json_response(400, {"message": "empty body: send the image as the request body"})
            filename = params.get("filename") or "upload"
            return _json_response(201, self._local.upload(product_id, category, filename, body, content_type))
        if method == "GET" and path == "/local/objects":
            return _json_response(200, self._local.object_status(params.get("key", "")))
        if method == "GET" and path == "/local/status":
            return _json_response(200, self._local.status())
        if method == "GET" and path == "/local/catalogue":
            return _json_response(200, self._local.products())
        return self._api(method, target, path, query, headers, body, source_ip, host)

    def _static(self, name: str) -> HttpResponse:
        file = (self._static_dir / name).resolve()
        if not file.is_relative_to(self._static_dir) or not file.is_file():
            return _json_response(404, {"message": "Not Found"})
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type == "application/javascript":
            content_type += "; charset=utf-8"
        return HttpResponse(
            200, [("Content-Type", content_type), ("Cache-Control", "no-cache")], file.read_bytes()
        )

    def _api(
        self,
        method: str,
        target: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
        host: str,
    ) -> HttpResponse:
        if len(body) > MAX_REQUEST_BYTES:
            return _json_response(413, {"message": "Request Entity Too Large"})
        matched = match_route(self.routes, method, path)
        if matched is None:
            return _json_response(404, {"message": "Not Found"})  # API Gateway's own answer
        route, path_parameters = matched
        raw_path = target.split("?", 1)[0] or "/"
        event = http_api_event(
            method=method,
            raw_path=raw_path,
            raw_query=query,
            headers=headers,
            body=body,
            source_ip=source_ip,
            route=route,
            path_parameters=path_parameters,
            domain_name=host.split(":")[0] or "localhost",
        )
        if len(json.dumps(event)) > MAX_EVENT_BYTES:
            return _json_response(413, {"message": "Request Entity Too Large"})
        started = time.monotonic()
        try:
            result = self._invoke(event)
        except Exception:
            logger.exception("query handler raised on %s %s", method, path)
            return _json_response(500, {"message": "Internal Server Error"})  # API Gateway's answer
        response = lambda_result_to_http(result)
        logger.info(
            "%s %s -> %d (%.0f ms)", method, path, response.status, (time.monotonic() - started) * 1000
        )
        return response


class LocalRequestHandler(BaseHTTPRequestHandler):
    server: LocalHttpServer
    protocol_version = "HTTP/1.1"
    # Keep-alive clients (the page, the tests, benchmarks) would otherwise wait for a delayed ACK
    # on every response: http.server writes the head and the body separately, and Nagle's
    # algorithm holds the second small write until the first is acknowledged. A buffered writer
    # sends head and body in one write (handle_one_request flushes it after each request), and
    # TCP_NODELAY covers responses larger than the buffer. Measured by
    # scripts/bench_local_gateway.py: docs/LOCAL_GATEWAY.md.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024

    def __getattr__(self, name: str) -> Callable[[], None]:
        # http.server answers a method it has no do_<METHOD> for (TRACE, PROPFIND, ...) with an
        # HTML 501; API Gateway routes every method, so every method is served here too.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def handle_expect_100(self) -> bool:
        accepted = super().handle_expect_100()
        self.wfile.flush()  # the interim 100 Continue must leave now, not with the response
        return accepted

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests (bad request line, too many headers, ...): API Gateway's JSON error
        instead of http.server's HTML page."""
        self.log_error("code %d, message %s", code, message or "")
        # A request line that did not parse leaves http.server's default "HTTP/0.9", for which
        # it writes no status line and no headers: a client could not tell the error from data.
        self.request_version = self.protocol_version
        self._write(_json_response(code, {"message": HTTPStatus(code).phrase}), close=True)

    def _serve(self) -> None:
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not declared.isascii() or not declared.isdigit():
            # Negative or not a number: rfile.read(-1) would wait for the client to close.
            self.send_error(HTTPStatus.BAD_REQUEST)
            return
        length = int(declared)
        if length > MAX_REQUEST_BYTES:
            self._write(_json_response(413, {"message": "Request Entity Too Large"}), close=True)
            return
        body = self.rfile.read(length) if length else b""
        try:
            response = self.server.gateway.handle(
                self.command,
                self.path,
                list(self.headers.items()),
                body,
                self.client_address[0],
                self.headers.get("Host", ""),
            )
        except Exception:
            logger.exception("local gateway failed on %s %s", self.command, self.path)
            response = _json_response(500, {"message": "Internal Server Error"})
        self._write(response)

    def _write(self, response: HttpResponse, *, close: bool = False) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


class LocalHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        gateway: LocalApiGateway,
        *,
        handler: type[LocalRequestHandler] = LocalRequestHandler,
    ) -> None:
        self.gateway = gateway
        super().__init__((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="local-http-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()
