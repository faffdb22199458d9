"""The product id / category rule: metadata wins, then the key layout, then the key itself."""

from __future__ import annotations

import pytest

from lookalike.catalogue import KeyLayout, product_identity
from lookalike.settings import SettingsError, settings_from_env


def key_layout_from_env(env: dict[str, str]) -> KeyLayout:
    return settings_from_env(env).key_layout


DEFAULT = key_layout_from_env({})


def test_key_layout_gives_category_and_product() -> None:
    identity = product_identity("products/shoes/sku-123/front.jpg", {}, DEFAULT)
    assert (identity.product_id, identity.category) == ("sku-123", "shoes")


def test_metadata_wins_field_by_field() -> None:
    both = product_identity(
        "products/shoes/sku-123/front.jpg", {"product-id": "P9", "category": "bags"}, DEFAULT
    )
    assert (both.product_id, both.category) == ("P9", "bags")
    only_product = product_identity("products/shoes/sku-123/front.jpg", {"product-id": " P9 "}, DEFAULT)
    assert (only_product.product_id, only_product.category) == ("P9", "shoes")
    outside_layout = product_identity("misc/photo.jpg", {"category": "hats"}, DEFAULT)
    assert (outside_layout.product_id, outside_layout.category) == ("misc/photo.jpg", "hats")


def test_blank_metadata_is_absent_and_prefixed_names_are_understood() -> None:
    assert product_identity("products/a/b/c.jpg", {"product-id": "  "}, DEFAULT).product_id == "b"
    assert product_identity("x.jpg", {"x-amz-meta-product-id": "P1"}, DEFAULT).product_id == "P1"


@pytest.mark.parametrize(
    "key",
    [
        "products/front.jpg",  # too few segments
        "products/shoes/front.jpg",
        "products//sku/front.jpg",  # empty category
        "other/shoes/sku/front.jpg",  # another prefix
        "productsX/shoes/sku/front.jpg",
    ],
)
def test_keys_outside_the_layout_fall_back_to_the_key(key: str) -> None:
    identity = product_identity(key, {}, DEFAULT)
    assert (identity.product_id, identity.category) == (key, None)


def test_a_trailing_file_placeholder_takes_deeper_folders() -> None:
    identity = product_identity("products/shoes/sku-1/views/side.jpg", {}, DEFAULT)
    assert (identity.product_id, identity.category) == ("sku-1", "shoes")


def test_decoded_keys_keep_spaces_unicode_and_plus() -> None:
    identity = product_identity("products/sacs à main/a+b 1/ünï.jpg", {}, DEFAULT)
    assert (identity.product_id, identity.category) == ("a+b 1", "sacs à main")


def test_configurable_prefix_and_layout() -> None:
    layout = key_layout_from_env({"KEY_PREFIX": "catalog", "KEY_LAYOUT": "{product_id}/images/{file}"})
    assert layout.prefix == "catalog/"
    identity = product_identity("catalog/SKU-7/images/1.jpg", {}, layout)
    assert (identity.product_id, identity.category) == ("SKU-7", None)
    assert product_identity("catalog/SKU-7/other/1.jpg", {}, layout).product_id == "catalog/SKU-7/other/1.jpg"
    root = key_layout_from_env({"KEY_PREFIX": "", "KEY_LAYOUT": "{category}/{product_id}/{file}"})
    assert product_identity("shoes/P1/a.jpg", {}, root).product_id == "P1"


@pytest.mark.parametrize(
    "layout",
    [
        "{category}/{file}",
        "{category}/{product_id}/{sku}",
        "{product_id}//{file}",
        "{product_id}/{product_id}",
    ],
)
def test_bad_layouts_fail_naming_the_variable(layout: str) -> None:
    with pytest.raises(SettingsError, match="KEY_LAYOUT"):
        key_layout_from_env({"KEY_LAYOUT": layout})
