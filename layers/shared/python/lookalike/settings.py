"""One typed settings model for every environment variable of the domain and the AWS adapters.

Read once (`get_settings()`), validated as a whole when first loaded, so a misconfigured function
fails at cold start with a message that names the variable, not later on the first image. Defaults
exist only where a wrong value cannot lose or corrupt data; each is written down here and in
docs/CONFIGURATION.md. Local-only settings (the embedded database's folder) live with the
local stack, not here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lookalike.catalogue import DEFAULT_KEY_LAYOUT, DEFAULT_KEY_PREFIX, KeyLayout
from lookalike.model.card import RESIZE_MODES, ResizeMode

# In the repository the model layer's folder sits beside the shared layer's; in Lambda the model
# layer is mounted at /opt/model and the template sets MODEL_DIR.
_REPOSITORY_MODEL_DIR = Path(__file__).resolve().parents[3] / "model" / "model"

# The HNSW_EF_SEARCH default: recall and latency per value in docs/BENCHMARKS.md, "Recall vs ef_search".
DEFAULT_EF_SEARCH = 64
MODEL_VARIANTS = ("fp32", "int8")
# libpq's modes that encrypt; the template requires verify-full (docs/DEPLOYMENT.md, "Database TLS").
SSL_MODES = ("require", "verify-ca", "verify-full")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    # Database: any PostgreSQL with pgvector. Either a URL, or an RDS secret (Lambda) whose host
    # DATABASE_HOST may replace (RDS Proxy's endpoint). Neither: local runs start the embedded one.
    database_url: str | None
    database_secret_arn: str | None
    database_host: str | None
    # Behind RDS Proxy server-side prepared statements pin sessions: None disables them.
    db_prepare_threshold: int | None
    db_connect_timeout_s: int
    # A write transaction stuck behind a lock fails (and is retried) after this, not at the
    # function's timeout.
    db_lock_timeout_ms: int
    db_statement_timeout_ms: int
    # TLS to the database (libpq sslmode and its CA file); None: the connection string decides.
    db_sslmode: str | None
    db_sslrootcert: Path | None

    model_dir: Path
    model_variant: str | None  # None: the model card's default variant
    resize_mode: ResizeMode | None  # None: the model card's default resize mode
    inference_threads: int

    max_image_bytes: int
    max_image_pixels: int
    key_layout: KeyLayout  # KEY_PREFIX + KEY_LAYOUT: which product and category a key names

    hnsw_ef_search: int

    # AWS adapters
    s3_endpoint_url: str | None  # any S3-compatible endpoint (moto, MinIO); None: AWS
    bucket_name: str | None  # the photo bucket (the query function reads `s3_key` photos from it)
    # Where search photos too large for a request are uploaded (POST /uploads); never ingested.
    query_upload_prefix: str | None


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _choice[T: str](env: Mapping[str, str], name: str, choices: tuple[T, ...]) -> T | None:
    raw = _get(env, name)
    if raw is None:
        return None
    for choice in choices:
        if raw == choice:
            return choice
    raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")


def _prepare_threshold(env: Mapping[str, str]) -> int | None:
    raw = _get(env, "DB_PREPARE_THRESHOLD")
    if raw is not None and raw.lower() in {"none", "off", "disabled"}:
        return None
    return _int(env, "DB_PREPARE_THRESHOLD", 5, minimum=0, maximum=1000)  # 5: psycopg's default


def _model_dir(env: Mapping[str, str]) -> Path:
    raw = _get(env, "MODEL_DIR")
    path = Path(raw) if raw is not None else _REPOSITORY_MODEL_DIR
    if not (path / "model_card.json").is_file():
        origin = "MODEL_DIR" if raw is not None else f"MODEL_DIR (unset; looked in {path})"
        raise SettingsError(f"{origin}: no model_card.json in {path}")
    return path


def _tls(env: Mapping[str, str]) -> tuple[str | None, Path | None]:
    mode = _choice(env, "DB_SSLMODE", SSL_MODES)
    raw_root = _get(env, "DB_SSLROOTCERT")
    root = Path(raw_root) if raw_root is not None else None
    if mode is not None and mode.startswith("verify-"):
        if root is None:
            raise SettingsError(f"DB_SSLROOTCERT must name the CA bundle when DB_SSLMODE is {mode}")
        if not root.is_file():
            raise SettingsError(f"DB_SSLROOTCERT: no CA bundle at {root}")
    return mode, root


def _key_layout(env: Mapping[str, str]) -> KeyLayout:
    """KEY_PREFIX ('' allowed: the layout starts at the bucket root) and KEY_LAYOUT."""
    prefix = env.get("KEY_PREFIX", DEFAULT_KEY_PREFIX).strip()
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    layout = _get(env, "KEY_LAYOUT") or DEFAULT_KEY_LAYOUT
    try:
        return KeyLayout.parse(prefix.lstrip("/"), layout)
    except ValueError as error:
        raise SettingsError(str(error)) from None


def _query_upload_prefix(env: Mapping[str, str], layout: KeyLayout) -> str | None:
    """QUERY_UPLOAD_PREFIX (default `queries/`); None when it lies inside KEY_PREFIX (an empty
    KEY_PREFIX ingests the whole bucket): search photos must never become products."""
    prefix = (_get(env, "QUERY_UPLOAD_PREFIX") or "queries/").lstrip("/")
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    if prefix.startswith(layout.prefix) or layout.prefix.startswith(prefix):
        return None
    return prefix


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Parse settings from a mapping; raises SettingsError naming the bad variable."""
    database_url = _get(env, "DATABASE_URL")
    if database_url is not None and not database_url.startswith(("postgresql://", "postgres://")):
        raise SettingsError("DATABASE_URL must be a postgresql:// URL")
    cpu_count = os.cpu_count() or 1
    sslmode, sslrootcert = _tls(env)
    layout = _key_layout(env)
    return Settings(
        database_url=database_url,
        database_secret_arn=_get(env, "DATABASE_SECRET_ARN"),
        database_host=_get(env, "DATABASE_HOST"),
        db_prepare_threshold=_prepare_threshold(env),
        db_connect_timeout_s=_int(env, "DB_CONNECT_TIMEOUT_S", 5, minimum=1, maximum=60),
        db_lock_timeout_ms=_int(env, "DB_LOCK_TIMEOUT_MS", 5_000, minimum=10, maximum=600_000),
        db_statement_timeout_ms=_int(env, "DB_STATEMENT_TIMEOUT_MS", 30_000, minimum=100, maximum=3_600_000),
        db_sslmode=sslmode,
        db_sslrootcert=sslrootcert,
        model_dir=_model_dir(env),
        model_variant=_choice(env, "MODEL_VARIANT", MODEL_VARIANTS),
        resize_mode=_choice(env, "RESIZE_MODE", RESIZE_MODES),
        # ONNX Runtime otherwise sizes its pool from the host's cores, not the function's
        # vCPU share; on Lambda that oversubscribes. Default: what this process may use.
        inference_threads=_int(env, "INFERENCE_THREADS", min(cpu_count, 2), minimum=1, maximum=64),
        # Well above a product photo; uploads through the API are capped lower by API Gateway.
        max_image_bytes=_int(env, "MAX_IMAGE_BYTES", 20 * 1024 * 1024, minimum=1024, maximum=512 * 1024**2),
        # 50 MP: any camera photo; decompression bombs are far larger.
        max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", 50_000_000, minimum=10_000, maximum=500_000_000),
        key_layout=layout,
        hnsw_ef_search=_int(env, "HNSW_EF_SEARCH", DEFAULT_EF_SEARCH, minimum=10, maximum=1000),
        s3_endpoint_url=_get(env, "S3_ENDPOINT_URL"),
        bucket_name=_get(env, "BUCKET_NAME"),
        query_upload_prefix=_query_upload_prefix(env, layout),
    )


@cache
def get_settings() -> Settings:
    """The process's settings, parsed once (cold start) and reused; `get_settings.cache_clear()`
    forgets them (tests change the environment)."""
    return settings_from_env(os.environ)
