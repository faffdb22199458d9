"""The migration function (functions/migrate/app.py) against a real PostgreSQL and a real HTTP
endpoint standing in for CloudFormation's pre-signed response URL: it migrates idempotently and
replies on every path, failures included, so a stack never waits for it."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

from lookalike_aws.runtime import reset_runtime
from lookalike_local.lambda_runtime import load_module

APP = Path(__file__).resolve().parents[2] / "functions" / "migrate" / "app.py"


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that the handler and Powertools read."""

    function_name: str = "lookalike-migrate"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:lookalike-migrate"
    aws_request_id: str = "request-1"
    log_stream_name: str = "2026/11/29/[$LATEST]abc"
    remaining_ms: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture(scope="module")
def migrate_app() -> ModuleType:
    return load_module(APP, "migrate_app")


@pytest.fixture
def response_url() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP endpoint that records the PUT bodies it receives (CloudFormation's side)."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/response?X-Amz-Signature=abc", received
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _fresh_store() -> Iterator[None]:
    reset_runtime()
    yield
    reset_runtime()


def _event(request_type: str, url: str, **extra: str) -> dict[str, Any]:
    return {
        "RequestType": request_type,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/lookalike/0a1b",
        "RequestId": f"{request_type}-1",
        "LogicalResourceId": "SchemaMigration",
        "ResourceType": "Custom::Migration",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:...", "SharedLayer": "arn:layer:1"},
        **extra,
    }


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {str(row[0]) for row in rows}


def test_create_update_delete_migrate_idempotently_and_reply(
    migrate_app: ModuleType,
    clean_database: str,
    response_url: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = response_url
    monkeypatch.setenv("DATABASE_URL", clean_database)
    context = LambdaContext()

    migrate_app.lambda_handler(_event("Create", url), context)
    tables = _tables(clean_database)
    assert tables, "the migration created no table"
    reset_runtime()
    migrate_app.lambda_handler(_event("Update", url, PhysicalResourceId="lookalike-schema"), context)
    assert _tables(clean_database) == tables
    migrate_app.lambda_handler(_event("Delete", url, PhysicalResourceId="lookalike-schema"), context)
    assert _tables(clean_database) == tables, "a deleted stack keeps the data"

    assert [reply["Status"] for reply in received] == ["SUCCESS", "SUCCESS", "SUCCESS"]
    for reply, request_type in zip(received, ["Create", "Update", "Delete"], strict=True):
        assert reply["PhysicalResourceId"] == "lookalike-schema"
        assert reply["RequestId"] == f"{request_type}-1"
        assert reply["LogicalResourceId"] == "SchemaMigration"
        assert reply["StackId"].endswith("stack/lookalike/0a1b")
    assert received[0]["Data"] == {"Images": "0"}


def test_a_failed_migration_is_reported_not_left_hanging(
    migrate_app: ModuleType,
    response_url: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = response_url
    # Nothing listens on port 9 (discard): the connection is refused at once.
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:secret@127.0.0.1:9/none")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_S", "2")
    result = migrate_app.lambda_handler(_event("Create", url), LambdaContext())
    assert result["Status"] == "FAILED"
    (reply,) = received
    assert reply["Status"] == "FAILED"
    assert "OperationalError" in reply["Reason"]
    assert "secret" not in reply["Reason"], "the reply must not echo the password"


def test_a_migration_that_outlives_the_function_is_reported_before_the_timeout(
    migrate_app: ModuleType,
    response_url: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = response_url
    # A TCP server that accepts and never answers: the connection attempt hangs.
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        monkeypatch.setenv("DATABASE_URL", f"postgresql://u:p@127.0.0.1:{port}/db")
        monkeypatch.setenv("DB_CONNECT_TIMEOUT_S", "30")
        context = LambdaContext(remaining_ms=int((migrate_app.REPLY_MARGIN_S + 1.5) * 1000))
        migrate_app.lambda_handler(_event("Create", url), context)
    finally:
        listener.close()
    (reply,) = received
    assert reply["Status"] == "FAILED"
    assert "TimeoutError" in reply["Reason"]


def test_a_direct_invocation_raises_on_failure(
    migrate_app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:secret@127.0.0.1:9/none")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_S", "2")
    with pytest.raises(psycopg.OperationalError):
        migrate_app.lambda_handler({"RequestType": "Create"}, LambdaContext())
