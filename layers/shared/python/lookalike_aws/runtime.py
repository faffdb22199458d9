"""The process's long-lived objects, built on first use and reused by every warm invocation.

The handlers (and the local stack and the command-line tools, which run the same code) take the
store and the searcher from here: one database connection per process, its URL from the
settings or the database secret.
"""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools.utilities import parameters

from lookalike.settings import get_settings
from lookalike.store import Store, VectorSearch
from lookalike_aws.secrets import database_url


@cache
def get_store() -> Store:
    """The process's store (lazy: the connection opens on the first call that needs it)."""
    settings = get_settings()
    return Store(
        database_url(settings),
        prepare_threshold=settings.db_prepare_threshold,
        connect_timeout_s=settings.db_connect_timeout_s,
        lock_timeout_ms=settings.db_lock_timeout_ms,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )


@cache
def get_search() -> VectorSearch:
    return VectorSearch(get_store(), ef_search=get_settings().hnsw_ef_search)


def reset_runtime() -> None:
    """Close the connection and forget every process-wide object (tests; settings changed)."""
    # Imported here: the migration function uses this module and needs neither ONNX Runtime nor S3.
    from lookalike.model.embedder import get_embedder
    from lookalike_aws.s3 import get_s3_client

    if get_store.cache_info().currsize:
        get_store().close()
    for cached in (get_search, get_store, get_s3_client, get_embedder, get_settings):
        cached.cache_clear()
    parameters.clear_caches()  # type: ignore[no-untyped-call]  # Powertools ships it unannotated
