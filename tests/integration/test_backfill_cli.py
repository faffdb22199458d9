"""scripts/backfill.py --model: fill a building model's vectors from the bucket (moto S3, a real
PostgreSQL, the real models), resumable through the store, coverage printed at the end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import boto3
import pytest
from second_model import model_dir_with_a_second_model

from lookalike.settings import get_settings
from lookalike.store import ModelRegistry, Store
from lookalike_aws.runtime import reset_runtime
from lookalike_local.lambda_runtime import load_module
from lookalike_local.samples import SamplePhoto

REPO_ROOT = Path(__file__).resolve().parents[2]
SECOND = "projected-test/fp32/squash"


def load_script(name: str) -> ModuleType:
    return load_module(REPO_ROOT / "scripts" / f"{name}.py", f"{name}_cli")


@pytest.fixture
def environment(
    clean_database: str, s3_bucket: str, moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path]]:
    model_dir, second = model_dir_with_a_second_model(get_settings().model_dir, tmp_path / "models")
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    monkeypatch.setenv("DATABASE_URL", clean_database)
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    reset_runtime()
    yield s3_bucket, second
    reset_runtime()


def test_backfill_fills_a_building_model_and_prints_coverage(
    environment: tuple[str, Path],
    moto_server: str,
    photos: list[SamplePhoto],
    clean_database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket, second = environment
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    for index, photo in enumerate(photos[:3]):
        s3.put_object(Bucket=bucket, Key=f"products/p{index}/a.jpg", Body=photo.path.read_bytes())
    backfill, models = load_script("backfill"), load_script("models")

    assert backfill.main(["--bucket", bucket, "--no-progress"]) == 0  # the active model (bootstrapped)
    capsys.readouterr()
    assert models.main(["add", str(second)]) == 0
    assert backfill.main(["--bucket", bucket, "--model", "unknown/fp32/squash", "--no-progress"]) == 2
    assert "unknown model version" in capsys.readouterr().err

    assert backfill.main(["--bucket", bucket, "--model", SECOND, "--no-progress"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["models"], summary["embedded"], summary["skipped"]) == (SECOND, 3, 0)
    assert f"coverage {SECOND} (building): 3/3 (100.0%)" in captured.err
    # Resumable through the store: a second run finds every vector there.
    assert backfill.main(["--bucket", bucket, "--model", SECOND, "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["embedded"], again["skipped"]) == (0, 3)
    store = Store(clean_database)
    assert [(model.version, model.images_embedded) for model in ModelRegistry(store).models()][1] == (
        SECOND,
        3,
    )
    store.close()
