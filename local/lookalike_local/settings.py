"""Settings of the local stack only (never read in Lambda): where local state lives."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template.yaml"


def data_dir() -> Path:
    """LOOKALIKE_DATA_DIR, default `.data` in the repository: the embedded PostgreSQL, checkpoints."""
    raw = os.environ.get("LOOKALIKE_DATA_DIR", "").strip()
    return (Path(raw) if raw else REPO_ROOT / ".data").resolve()


def embedded_pgdata() -> Path:
    return data_dir() / "postgres"
