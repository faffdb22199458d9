"""Materialising public data sets as labelled folders: the IDX reader and the stamps' labelling."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike_tuning.datasets import read_labelled_folder
from lookalike_tuning.sources import (
    FASHION_CLASSES,
    FASHION_SUBDIR,
    OPENCLIPART_SUBDIR,
    materialise_fashion_mnist,
    materialise_openclipart,
    materialise_stamps,
    read_idx,
    stamp_labels,
)

pytestmark = pytest.mark.unit


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", n) for n in array.shape
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_round_trip(tmp_path: Path) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28) % 256
    write_idx(tmp_path / "images.gz", images)
    np.testing.assert_array_equal(read_idx(tmp_path / "images.gz"), images)


def test_fashion_mnist_becomes_dark_on_white_packshots_one_folder_per_class(tmp_path: Path) -> None:
    package = tmp_path / "package"
    rng = np.random.default_rng(0)
    images = np.zeros((40, 28, 28), dtype=np.uint8)
    images[:, 8:20, 8:20] = 255  # a bright garment on black, as in the IDX files
    labels = np.arange(40) % 10
    write_idx(package / FASHION_SUBDIR / "train-images-idx3-ubyte.gz", images)
    write_idx(package / FASHION_SUBDIR / "train-labels-idx1-ubyte.gz", labels)
    out = tmp_path / "out"
    assert materialise_fashion_mnist(package, out, per_class=3, seed=int(rng.integers(9))) == 30
    dataset = read_labelled_folder(out)
    assert dataset.counts() == dict.fromkeys(sorted(FASHION_CLASSES), 3)
    with Image.open(dataset.images[0].path) as picture:
        assert picture.size == (112, 112)
        pixels = np.asarray(picture.convert("L"))
    assert pixels[0, 0] == 255  # background white
    assert pixels[56, 56] == 0  # garment dark


def make_stamps(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", (8, 8), (200, 0, 0, 255)).save(path)


def test_stamps_are_labelled_by_folder_and_a_mirror_is_the_same_product(tmp_path: Path) -> None:
    root = tmp_path / "stamps"
    birds = [f"animals/birds/bird{i}.png" for i in range(8)]
    loose = [f"animals/pet{i}.png" for i in range(7)] + ["animals/fish/shark.png"]  # fish: too few, goes up
    make_stamps(root, [*birds, "animals/birds/bird0_mirror.png", *loose, "symbols/a/b.png", "food/x.png"])
    labels = dict((path.relative_to(root).as_posix(), label) for path, label in stamp_labels(root))
    assert labels["animals/birds/bird3.png"] == "animals/birds"
    assert labels["animals/fish/shark.png"] == "animals"
    assert "animals/birds/bird0_mirror.png" not in labels  # a copy, not a stamp of its own
    assert not [key for key in labels if key.startswith(("symbols/", "food/"))]  # excluded / too small
    out = tmp_path / "out"
    assert materialise_stamps(root, out) == 17
    dataset = read_labelled_folder(out)
    products = {image.key: image.product for image in dataset.images}
    assert products["animals-birds/bird0/bird0.png"] == products["animals-birds/bird0/bird0_mirror.png"]


def test_stamps_of_the_same_name_in_one_class_stay_two_products(tmp_path: Path) -> None:
    root = tmp_path / "stamps"
    make_stamps(
        root,
        [f"vehicles/cars/car{i}.png" for i in range(4)] + [f"vehicles/boats/car{i}.png" for i in range(4)],
    )
    out = tmp_path / "out"
    assert materialise_stamps(root, out) == 8
    # Both sub-folders are too small for a class of their own: one class "vehicles", 8 products.
    products = {path.parent for path in out.rglob("*.png")}
    assert len(products) == 8
    assert {path.parent.name for path in products} == {"vehicles"}


def test_openclipart_keeps_object_folders_and_leaves_out_icons_and_posters(tmp_path: Path) -> None:
    root = tmp_path / "package" / OPENCLIPART_SUBDIR
    for folder, count in (("animals/birds", 8), ("animals", 3), ("food", 8), ("computer", 9), ("tools", 2)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            Image.new("RGBA", (40, 30), (index * 20, 90, 30, 255)).save(root / folder / f"{index}.png")
    Image.new("L", (5000, 4001)).save(root / "food" / "poster.png")  # over 20 megapixels
    written = materialise_openclipart(tmp_path / "package", tmp_path / "out")
    dataset = read_labelled_folder(tmp_path / "out")
    # animals/birds has 8 images: its own class; the 3 in animals/ are too few; computer/ is icons.
    assert dataset.counts() == {"animals-birds": 8, "food": 8}
    assert written == 16
