"""Settings fail fast, naming the variable; the domain package stays free of AWS imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lookalike.settings import SettingsError, settings_from_env

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_documented_values() -> None:
    settings = settings_from_env({})
    assert settings.database_url is None  # local runs start the embedded default
    assert settings.model_dir.joinpath("model_card.json").is_file()
    assert settings.max_image_bytes == 20 * 1024 * 1024
    assert settings.db_prepare_threshold == 5
    assert 1 <= settings.inference_threads <= 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INFERENCE_THREADS", "two"),
        ("INFERENCE_THREADS", "0"),
        ("MAX_IMAGE_BYTES", "-5"),
        ("HNSW_EF_SEARCH", "5"),
        ("MODEL_VARIANT", "fp64"),
        ("RESIZE_MODE", "stretch"),
        ("DATABASE_URL", "mysql://localhost/x"),
        ("MODEL_DIR", "/nonexistent/model"),
        ("DB_PREPARE_THRESHOLD", "sometimes"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        settings_from_env({name: value})


def test_rds_proxy_disables_prepared_statements() -> None:
    assert settings_from_env({"DB_PREPARE_THRESHOLD": "none"}).db_prepare_threshold is None
    assert settings_from_env({"DB_PREPARE_THRESHOLD": "0"}).db_prepare_threshold == 0


def test_domain_package_imports_no_aws_code() -> None:
    """The domain runs anywhere: boto3 and Powertools belong to the edge (lookalike_aws, handlers)."""
    modules = sorted(
        f"lookalike.{path.stem}"
        for path in (REPO_ROOT / "layers/shared/python/lookalike").glob("*.py")
        if path.stem != "__init__"
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "aws = {'boto3', 'botocore', 'aws_lambda_powertools'}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in aws)\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(modules) >= 4
    assert result.stdout.strip() == ""
