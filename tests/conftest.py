"""Shared fixtures: a real embedded PostgreSQL + pgvector, the real model, real photos.

Tests in tests/unit/ are marked `unit`, tests in tests/integration/ `integration`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lookalike.settings import get_settings
from lookalike_aws.s3 import get_s3_client
from lookalike_local.embedded_db import EmbeddedPostgres
from lookalike_local.samples import SamplePhoto, sample_photos

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = REPO_ROOT / "events"
TEST_OUTPUT = REPO_ROOT / "test-output"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).relative_to(REPO_ROOT / "tests").parts[0]
        if tier in {"unit", "integration"}:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings are cached per process: every test starts from the real environment."""
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """A throwaway embedded server for the whole test session. Its folder is our own, not
    pytest's tmp_path (pytest prunes old basetemps, which breaks a server another run still
    uses) and short (Unix socket paths are limited to ~100 characters)."""
    folder = Path(tempfile.mkdtemp(prefix="lookalike-pg-"))
    server = EmbeddedPostgres(folder / "data")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(embedded_postgres: EmbeddedPostgres) -> str:
    """DATABASE_URL of a real PostgreSQL with pgvector: $TEST_DATABASE_URL or the embedded one."""
    return os.environ.get("TEST_DATABASE_URL") or embedded_postgres.start()


@pytest.fixture
def clean_database(postgres_url: str) -> str:
    """The database URL, with every Lookalike table dropped (each test migrates afresh)."""
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("DROP SCHEMA IF EXISTS public CASCADE")
        connection.execute("CREATE SCHEMA public")
    return postgres_url


# Fake credentials for moto: boto3 signs requests, moto accepts any signature.
MOTO_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server mode on 127.0.0.1 (a free port) for the whole session: S3, SQS, Secrets
    Manager over real HTTP. Yields the endpoint URL; the fake credentials stay set meanwhile."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as session_environment:
        for name, value in MOTO_ENVIRONMENT.items():
            session_environment.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket in moto for this test; S3_ENDPOINT_URL points at moto."""
    import re
    import uuid

    import boto3

    monkeypatch.setenv("S3_ENDPOINT_URL", moto_server)
    get_settings.cache_clear()  # the S3 client and settings were built for the old endpoint
    get_s3_client.cache_clear()
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:30].strip("-")
    bucket = f"test-{slug}-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="session")
def photos() -> list[SamplePhoto]:
    return sample_photos()


@pytest.fixture(scope="session")
def test_output() -> Path:
    TEST_OUTPUT.mkdir(exist_ok=True)
    return TEST_OUTPUT
