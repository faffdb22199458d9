"""scripts/cluster_map.py on the embedded PostgreSQL with real photos of the sample catalogue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from lookalike.images import decode_image
from lookalike.model.embedder import get_embedder
from lookalike.model_versions import ensure_active_model
from lookalike.ports import EventOrder, ObjectRef
from lookalike.settings import get_settings
from lookalike.store import ImageRecord, Store
from lookalike_local.catalogue import catalogue
from lookalike_local.lambda_runtime import load_module

REPO_ROOT = Path(__file__).resolve().parents[2]
# Five visually unrelated products, 2-3 photos each (front, detail crop, mirror).
PRODUCTS = {"tabby-cat", "espresso-cup", "garden-flower", "gift-box", "hubble-deep-field"}


@pytest.fixture(scope="module")
def cluster_map() -> ModuleType:
    return load_module(REPO_ROOT / "scripts" / "cluster_map.py", "cluster_map_script")


@pytest.fixture
def store(clean_database: str) -> Iterator[Store]:
    store = Store(clean_database)
    store.migrate()
    model = ensure_active_model(store, get_settings())  # the configured model, as a deployment does
    objects = [item for item in catalogue() if item.product_id in PRODUCTS]
    images = [decode_image(item.body(), max_bytes=10**8, max_pixels=10**9).image for item in objects]
    embeddings = get_embedder().embed(images).vectors
    store.upsert_images(
        [
            ImageRecord(
                ref=ObjectRef("lookalike-photos", item.key),
                order=EventOrder(None, datetime.now(UTC)),
                product_id=item.product_id,
                category=item.category,
                etag=item.key,
                size_bytes=1,
                width=image.width,
                height=image.height,
                embeddings={model.id: embeddings[index]},
            )
            for index, (item, image) in enumerate(zip(objects, images, strict=True))
        ]
    )
    yield store
    store.close()


def test_cluster_map_writes_png_and_html_with_one_cluster_per_product(
    cluster_map: ModuleType,
    store: Store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    test_output: Path,
) -> None:
    png, page = tmp_path / "map.png", tmp_path / "map.html"
    assert cluster_map.main(["--png", str(png), "--html", str(page)], store=store) == 0
    result = json.loads(capsys.readouterr().out)

    # k chosen by silhouette: the five products, each whole in its own cluster.
    assert result["clusters"] == 5
    assert result["images"] == 14
    clusters = {entry["cluster"]: entry for entry in result["per_cluster"]}
    products_per_cluster = [
        {key.split("/")[2] for key in entry["representatives"]} for entry in clusters.values()
    ]
    assert all(len(products) == 1 for products in products_per_cluster)
    assert set().union(*products_per_cluster) == PRODUCTS
    # "space" (the Hubble field) and "gifts" are single-product categories: distinct.
    assert result["per_category"]["gifts"]["distinct"] is True
    assert result["per_category"]["space"]["share_in_main_cluster"] == 1.0

    with Image.open(png) as picture:
        assert picture.format == "PNG"
        assert picture.width > 800
    text = page.read_text()
    assert text.count("<circle") == 14
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no CDN
    for category in ("animals", "food-drink", "nature", "gifts", "space"):
        assert f'data-category="{category}"' in text
    assert text.count("data:image/jpeg;base64,") == sum(
        len(entry["representatives"]) for entry in clusters.values()
    )
    (test_output / "cluster_map_test.png").write_bytes(png.read_bytes())
