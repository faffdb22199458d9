"""The layering the architecture document promises, checked on the source: the domain package
imports neither boto3 nor Powertools nor the adapters, and adapters do not import use cases they
do not serve."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT / "layers" / "shared" / "python"
FORBIDDEN_IN_DOMAIN = (
    "boto3",
    "botocore",
    "aws_lambda_powertools",
    "lookalike_aws",
    "lookalike_local",
    "mypy_boto3",
)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path", sorted((SHARED / "lookalike").rglob("*.py")), ids=lambda p: str(p.relative_to(SHARED))
)
def test_the_domain_package_imports_no_aws_code(path: Path) -> None:
    bad = sorted(name for name in imported_modules(path) if name.split(".")[0] in FORBIDDEN_IN_DOMAIN)
    assert bad == [], f"{path.name} imports {bad}"


def test_the_s3_adapter_imports_no_use_case() -> None:
    imports = imported_modules(SHARED / "lookalike_aws" / "s3.py")
    assert not imports & {"lookalike.ingest", "lookalike.backfill", "lookalike.search"}, imports
