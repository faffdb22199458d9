"""The demo's public catalogues (`make demo ARGS="--catalogue fashion"` / `stamps`): what the
loader puts into the bucket, on a small subset of the real Debian packages, and what the demo's
command line does with a name it does not know."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lookalike.catalogue import DEFAULT_KEY_LAYOUT, DEFAULT_KEY_PREFIX, KeyLayout, product_identity
from lookalike.images import decode_image
from lookalike_local.catalogue import CatalogueObject
from lookalike_local.public_catalogues import (
    UNCATEGORISED_EVERY,
    CatalogueUnavailableError,
    DemoCatalogue,
    public_catalogue,
)
from lookalike_tuning.sources import FASHION_CLASSES, STAMPS_SUBDIR, stamp_labels

REPO_ROOT = Path(__file__).resolve().parents[2]
LAYOUT = KeyLayout.parse(DEFAULT_KEY_PREFIX, DEFAULT_KEY_LAYOUT)
LIMITS = {"max_bytes": 20_000_000, "max_pixels": 20_000_000}


def load(name: str, per_class: int) -> DemoCatalogue:
    try:
        return public_catalogue(name, per_class=per_class)
    except CatalogueUnavailableError as error:
        pytest.skip(f"the {name} catalogue's Debian package cannot be fetched here: {error}")


def identity(obj: CatalogueObject) -> tuple[str, str | None]:
    """What the ingest reads from the object: the metadata the local stack sets, then the key."""
    metadata = {"product-id": obj.product_id} | ({"category": obj.category} if obj.category else {})
    found = product_identity(obj.key, metadata, LAYOUT)
    return found.product_id, found.category


def check_layout(objects: list[CatalogueObject]) -> None:
    for obj in objects:
        assert identity(obj) == (obj.product_id, obj.category)
        matched = LAYOUT.match(obj.key)
        if obj.category is None:
            assert matched is None  # uploaded without a category: nothing in the key gives one
        else:
            assert matched is not None
            assert (matched["category"], matched["product_id"]) == (obj.category, obj.product_id)
    assert len({obj.key for obj in objects}) == len(objects)


def test_fashion_catalogue_is_labelled_packshots_of_every_class() -> None:
    chosen = load("fashion", per_class=3)
    objects = chosen.objects
    assert len(objects) == 3 * len(FASHION_CLASSES)
    check_layout(objects)
    classes = Counter(obj.product_id.removeprefix("fashion-").rsplit("-", 1)[0] for obj in objects)
    assert classes == dict.fromkeys(FASHION_CLASSES, 3)
    for obj in objects:
        if obj.category is not None:
            assert obj.product_id.startswith(f"fashion-{obj.category}-")
    assert [position for position, obj in enumerate(objects) if obj.category is None] == [
        UNCATEGORISED_EVERY - 1
    ]
    for obj in objects[:5]:
        image = decode_image(obj.body(), **LIMITS).image
        assert image.size == (160, 160)
        corner = image.getpixel((0, 0))
        assert isinstance(corner, tuple)
        assert min(corner) > 200  # dark garment on white, like a packshot
    assert chosen.query_product in {obj.product_id for obj in objects if obj.category is not None}
    assert decode_image(chosen.query_photo, **LIMITS).image.size == (160, 160)


def test_stamps_catalogue_keeps_a_stamp_and_its_mirror_as_one_product() -> None:
    chosen = load("stamps", per_class=2)
    objects = chosen.objects
    check_layout(objects)
    labels = {
        label.replace("/", "-")
        for _, label in stamp_labels(REPO_ROOT / ".data" / "tuxpaint-stamps" / STAMPS_SUBDIR)
    }
    categorised = {obj.category for obj in objects if obj.category is not None}
    assert categorised <= labels
    assert len(categorised) >= len(labels) - 2  # every class, less those whose products went uncategorised
    products = Counter(obj.product_id for obj in objects)
    assert len(products) == 2 * len(labels)
    for product_id, count in products.items():
        views = [obj for obj in objects if obj.product_id == product_id]
        assert len({obj.category for obj in views}) == 1
        assert count == 1 or any(obj.filename.endswith("_mirror.png") for obj in views)
    decode_image(objects[0].body(), **LIMITS)
    decode_image(chosen.query_photo, **LIMITS)


def test_a_catalogue_that_cannot_be_fetched_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, no dpkg
    with pytest.raises(CatalogueUnavailableError, match="apt-get and dpkg"):
        public_catalogue("fashion", data_root=tmp_path)
    with pytest.raises(KeyError, match="unknown catalogue"):
        public_catalogue("jewellery", data_root=tmp_path)


def test_the_demo_refuses_an_unknown_catalogue_before_starting_anything(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "demo.py"), "--catalogue", "jewellery"],
        cwd=REPO_ROOT,
        env={"LOOKALIKE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "invalid choice: 'jewellery'" in result.stderr
    assert "fashion" in result.stderr
    assert "stamps" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no database, nothing started
