"""Schema migrations: numbered SQL files applied once each, under an advisory lock."""

from __future__ import annotations

from importlib import resources
from typing import Any, Final

import psycopg

# Serialises concurrent `migrate()` calls (two cold starts, a deploy and a test) across
# processes; transaction-level, so it is released by the commit even behind RDS Proxy.
MIGRATION_LOCK_ID: Final = 0x4C4F4F4B414C494B  # "LOOKALIK"

# (version, file in lookalike/store/sql/): append new steps, never edit an applied one.
MIGRATIONS: Final[tuple[tuple[int, str], ...]] = (
    (1, "0001_schema.sql"),
    (2, "0002_model_versions.sql"),
    (3, "0003_category_suggestions.sql"),
)


def migrate(connection: psycopg.Connection[Any]) -> None:
    """Bring the schema up to date; idempotent, and safe to run from several processes at once
    (the advisory lock serialises them; the loser finds the steps applied)."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer     PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
        for version, filename in MIGRATIONS:
            if version in applied:
                continue
            script = resources.files("lookalike.store").joinpath("sql", filename).read_text(encoding="utf-8")
            # Several statements in one call: simple query protocol, never prepared.
            connection.execute(script.encode(), prepare=False)
            connection.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
