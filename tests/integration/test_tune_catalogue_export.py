"""scripts/tune.py --fetch catalogue: the live catalogue (a real PostgreSQL filled by the backfill
from moto S3) exported as a labelled folder the tuning reads, uncategorised and vanished photos
left out and counted."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import boto3
import pytest

from lookalike_aws.runtime import reset_runtime
from lookalike_local.catalogue import catalogue
from lookalike_local.lambda_runtime import load_module
from lookalike_tuning.catalogue_export import path_component
from lookalike_tuning.datasets import read_labelled_folder

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str) -> ModuleType:
    return load_module(REPO_ROOT / "scripts" / f"{name}.py", f"{name}_cli")


@pytest.fixture
def environment(
    clean_database: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setenv("DATABASE_URL", clean_database)
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    reset_runtime()
    yield s3_bucket
    reset_runtime()


def test_the_live_catalogue_becomes_a_labelled_folder(
    environment: str, moto_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = environment
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    objects = [obj for obj in catalogue() if obj.filename != "truncated.jpg"]
    for obj in objects:
        s3.put_object(Bucket=bucket, Key=obj.key, Body=obj.body())
    loose = objects[0].body()
    s3.put_object(Bucket=bucket, Key="products/loose-photo.jpg", Body=loose)  # outside the layout
    assert load_script("backfill").main(["--bucket", bucket, "--no-progress"]) == 0
    vanished = objects[1]
    s3.delete_object(Bucket=bucket, Key=vanished.key)  # after it was embedded: the export cannot read it
    capsys.readouterr()

    out = tmp_path / "exported"
    assert load_script("tune").main(["--fetch", "catalogue", "--data-out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    kept = [obj for obj in objects if obj is not vanished]
    sizes = Counter(obj.category for obj in kept)
    kept = [obj for obj in kept if sizes[obj.category] > 1]
    single = sorted(category for category, count in sizes.items() if count == 1)
    assert single  # the sample catalogue has a category of one photo
    assert summary["single_image_categories_skipped"] == single
    assert summary["images"] == len(kept)
    assert summary["uncategorised_skipped"] == 1
    assert summary["unavailable"] == [f"s3://{bucket}/{vanished.key} (gone)"]

    dataset = read_labelled_folder(out)
    assert Counter(image.category for image in dataset.images) == Counter(
        path_component(obj.category) for obj in kept
    )
    assert {image.product for image in dataset.images} == {
        f"{path_component(obj.category)}/{path_component(obj.product_id)}" for obj in kept
    }
    assert not dataset.unreadable
    assert not list(tmp_path.glob(".exported*"))  # the temporary folder was renamed, nothing left over


def test_an_uncategorised_catalogue_exits_2_and_writes_nothing(
    environment: str, moto_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = environment
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.put_object(Bucket=bucket, Key="products/loose-photo.jpg", Body=catalogue()[0].body())
    assert load_script("backfill").main(["--bucket", bucket, "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "exported"
    assert load_script("tune").main(["--fetch", "catalogue", "--data-out", str(out)]) == 2
    assert "no categorised embedded images" in capsys.readouterr().err
    assert not out.exists()
    assert not list(tmp_path.glob(".exported*"))


@pytest.mark.parametrize("name", ["shoes", "a/b", "..", ".", "", "ünï cödé"])
def test_path_components_stay_one_level(name: str) -> None:
    component = path_component(name)
    assert component not in {"", ".", ".."}
    assert "/" not in component
