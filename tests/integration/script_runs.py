"""Running the project's command-line scripts as a user does, and the sample catalogue as the
labelled folder they read (shared by the script tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from lookalike_local.catalogue import catalogue


def run_script(
    script: Path, *arguments: str | Path, timeout: int, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    """The script in a fresh interpreter (with `env` added to the environment): its exit status,
    its last stdout line as JSON (the scripts' summary; {} when it printed nothing) and its stderr."""
    completed = subprocess.run(
        [sys.executable, str(script), *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else os.environ | env,
    )
    lines = completed.stdout.strip().splitlines()
    return completed.returncode, json.loads(lines[-1]) if lines else {}, completed.stderr


def sample_labelled_folder(root: Path, *, skip_categories: set[str], keep_unreadable: bool) -> Path:
    """DIR/<category>/<product>/<photo> from the sample catalogue; keep_unreadable keeps its
    broken (truncated) upload."""
    for obj in catalogue():
        if obj.category in skip_categories or (not keep_unreadable and "truncated" in obj.filename):
            continue
        path = root / obj.category / obj.product_id / obj.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(obj.body())
    return root
