"""Training data for the tuning: the labelled folder, the pairs CSV and the split by product."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from lookalike_local.samples import sample_photos
from lookalike_tuning.datasets import (
    DatasetError,
    LabelledImage,
    read_labelled_folder,
    read_pairs_csv,
    split_by_product,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def photo_png() -> bytes:
    """A real photo, small, as PNG bytes."""
    image = sample_photos()[0].open_rgb()
    image.thumbnail((48, 48))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write(root: Path, keys: list[str], data: bytes) -> None:
    for key in keys:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_reads_categories_and_products_in_both_layouts(tmp_path: Path, photo_png: bytes) -> None:
    write(
        tmp_path,
        ["shoes/boot-1/a.png", "shoes/boot-1/b.png", "shoes/sandal.png", "bags/x.png", "bags/y.png"],
        photo_png,
    )
    (tmp_path / "bags" / "notes.txt").write_text("not an image")
    dataset = read_labelled_folder(tmp_path)
    by_key = {image.key: image for image in dataset.images}
    assert sorted(by_key) == [
        "bags/x.png",
        "bags/y.png",
        "shoes/boot-1/a.png",
        "shoes/boot-1/b.png",
        "shoes/sandal.png",
    ]
    assert by_key["shoes/boot-1/a.png"].product == by_key["shoes/boot-1/b.png"].product == "shoes/boot-1"
    assert by_key["shoes/sandal.png"].product == "shoes/sandal.png"
    assert dataset.counts() == {"bags": 2, "shoes": 3}
    assert dataset.unreadable == []


def test_unreadable_images_are_skipped_and_listed(tmp_path: Path, photo_png: bytes) -> None:
    write(tmp_path, ["a/1.png", "a/2.png", "b/1.png", "b/2.png"], photo_png)
    write(tmp_path, ["b/broken.png"], photo_png[: len(photo_png) // 3])
    write(tmp_path, ["a/empty.jpg"], b"")
    dataset = read_labelled_folder(tmp_path)
    assert dataset.unreadable == ["a/empty.jpg", "b/broken.png"]
    assert len(dataset.images) == 4


def test_the_training_list_hash_follows_the_content_of_the_list(tmp_path: Path, photo_png: bytes) -> None:
    write(tmp_path, ["a/1.png", "a/2.png", "b/1.png", "b/2.png"], photo_png)
    before = read_labelled_folder(tmp_path).list_sha256()
    assert read_labelled_folder(tmp_path).list_sha256() == before
    write(tmp_path, ["b/3.png"], photo_png)
    assert read_labelled_folder(tmp_path).list_sha256() != before


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([], "no readable images"),
        (["only/1.png", "only/2.png"], "only one class"),
        (["a/1.png", "a/2.png", "b/1.png"], r"fewer than 2 images: b \(1\)"),
        (["a/1.png", "b/1.png", "b/2.png", "stray.png"], "expected DIR/<category>"),
        (["a/p/q/deep.png", "b/1.png"], "expected DIR/<category>"),
    ],
)
def test_unusable_folders_fail_with_a_clear_message(
    tmp_path: Path, photo_png: bytes, keys: list[str], message: str
) -> None:
    write(tmp_path, keys, photo_png)
    with pytest.raises(DatasetError, match=message):
        read_labelled_folder(tmp_path)


def test_a_missing_folder_fails(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_labelled_folder(tmp_path / "nope")


def test_all_unreadable_is_an_empty_folder(tmp_path: Path) -> None:
    write(tmp_path, ["a/1.png", "b/1.png"], b"not a picture")
    with pytest.raises(DatasetError, match="no readable images"):
        read_labelled_folder(tmp_path)


# --- pairs --------------------------------------------------------------------------------------


def test_pairs_csv_with_and_without_header(tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("key_a,key_b,label\na/1.png,a/2.png,similar\na/1.png,b/1.png, different\n")
    pairs = read_pairs_csv(csv, {"a/1.png", "a/2.png", "b/1.png"})
    assert [(p.key_a, p.key_b, p.similar) for p in pairs] == [
        ("a/1.png", "a/2.png", True),
        ("a/1.png", "b/1.png", False),
    ]


def test_pairs_csv_naming_unknown_keys_fails_and_names_them(tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("a/1.png,a/9.png,similar\nz/1.png,a/1.png,different\n")
    with pytest.raises(DatasetError, match=r"2 keys are not images of the dataset: a/9.png, z/1.png"):
        read_pairs_csv(csv, {"a/1.png"})


@pytest.mark.parametrize("row", ["a/1.png,a/2.png,maybe", "a/1.png,a/2.png", "a/1.png,a/2.png,similar,x"])
def test_pairs_csv_with_a_bad_row_fails_with_its_line(tmp_path: Path, row: str) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"a/1.png,a/2.png,similar\n{row}\n")
    with pytest.raises(DatasetError, match=r"pairs.csv:2"):
        read_pairs_csv(csv, {"a/1.png", "a/2.png"})


def test_an_empty_pairs_csv_fails(tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("key_a,key_b,label\n")
    with pytest.raises(DatasetError, match="no pairs"):
        read_pairs_csv(csv, set())


# --- split ----------------------------------------------------------------------------------------


def catalogue(products_per_class: int, photos_per_product: int) -> list[LabelledImage]:
    return [
        LabelledImage(f"{c}/p{p}/{i}.png", c, f"{c}/p{p}", Path(f"{c}/p{p}/{i}.png"))
        for c in ("shoes", "bags", "hats")
        for p in range(products_per_class)
        for i in range(photos_per_product)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_split_is_by_product_never_by_image(seed: int) -> None:
    images = catalogue(products_per_class=10, photos_per_product=3)
    split = split_by_product(images, test_fraction=0.3, seed=seed)
    train_products = {image.product for image in split.train}
    test_products = {image.product for image in split.test}
    assert not train_products & test_products
    assert len(split.train) + len(split.test) == len(images)
    # Every class is on both sides, with the requested share of its products held out.
    for category in ("shoes", "bags", "hats"):
        assert sum(p.startswith(category) for p in test_products) == 3
        assert any(p.startswith(category) for p in train_products)


def test_split_is_reproducible_and_depends_on_the_seed() -> None:
    images = catalogue(products_per_class=20, photos_per_product=1)
    keys = [[i.key for i in split_by_product(images, test_fraction=0.2, seed=s).test] for s in (1, 1, 2)]
    assert keys[0] == keys[1]
    assert keys[0] != keys[2]


def test_holdout_classes_are_never_trained_on() -> None:
    images = catalogue(products_per_class=4, photos_per_product=2)
    split = split_by_product(images, test_fraction=0.2, seed=0, holdout_classes=("hats",))
    assert {image.category for image in split.test} == {"hats"}
    assert "hats" not in {image.category for image in split.train}
    with pytest.raises(DatasetError, match="unknown classes: caps"):
        split_by_product(images, test_fraction=0.2, seed=0, holdout_classes=("caps",))
    with pytest.raises(DatasetError, match="fewer than two classes"):
        split_by_product(images, test_fraction=0.2, seed=0, holdout_classes=("hats", "bags"))


def test_a_catalogue_of_single_product_classes_cannot_be_split() -> None:
    images = catalogue(products_per_class=1, photos_per_product=4)
    with pytest.raises(DatasetError, match="nothing can be held out by product"):
        split_by_product(images, test_fraction=0.2, seed=0)


def test_measure_per_class_measures_a_subset_of_the_heldout_products_and_trains_on_the_same_list() -> None:
    images = catalogue(products_per_class=20, photos_per_product=2)
    full = split_by_product(images, test_fraction=0.5, seed=3)
    measured = split_by_product(images, test_fraction=0.5, seed=3, measure_per_class=4)
    assert [i.key for i in measured.train] == [i.key for i in full.train]  # training unchanged
    measured_products = {image.product for image in measured.test}
    assert measured_products < {image.product for image in full.test}
    for category in ("shoes", "bags", "hats"):  # 4 of each class's 10 held-out products
        assert sum(p.startswith(category) for p in measured_products) == 4
    assert len(measured.test) == 3 * 4 * 2  # whole products: both photos of each
    assert measured.unmeasured == len(full.test) - len(measured.test)
    with pytest.raises(DatasetError, match="at least 2 products per class"):
        split_by_product(images, test_fraction=0.5, seed=3, measure_per_class=1)
    with pytest.raises(DatasetError, match="not to held-out classes"):
        split_by_product(images, test_fraction=0.5, seed=3, holdout_classes=("hats",), measure_per_class=4)
