"""Training data: a labelled folder, an optional pairs CSV, and the split by product.

Folder layout (the ImageFolder convention): `DIR/<category>/<image>` (each image its own product)
or `DIR/<category>/<product>/<image>` (several photos of one product). The key of an image is its
path relative to DIR, with forward slashes; the pairs CSV names images by that key.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
PAIR_LABELS = {"similar": 1, "different": 0}


class DatasetError(ValueError):
    """The training data cannot be used as given: the message says why and what to fix."""


@dataclass(frozen=True, slots=True)
class LabelledImage:
    key: str  # path relative to the dataset root, forward slashes
    category: str
    product: str  # "<category>/<product>" or the key itself when each image is its own product
    path: Path


@dataclass(frozen=True, slots=True)
class Dataset:
    root: Path
    images: list[LabelledImage]
    unreadable: list[str]  # keys skipped because they do not decode

    @property
    def categories(self) -> list[str]:
        return sorted({image.category for image in self.images})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(image.category for image in self.images).items()))

    def list_sha256(self) -> str:
        """Hash of the sorted training list (key and category): what the model card records."""
        lines = sorted(f"{image.key}\t{image.category}" for image in self.images)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return True


def read_labelled_folder(
    root: Path, *, min_per_class: int = 2, is_readable: Callable[[Path], bool] = _readable
) -> Dataset:
    """Every image under root with its category and product; unreadable files are skipped and
    listed; fails with DatasetError on what cannot be trained on."""
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    images: list[LabelledImage] = []
    unreadable: list[str] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        parts = path.relative_to(root).parts
        key = "/".join(parts)
        if len(parts) not in (2, 3):
            raise DatasetError(f"{key}: expected DIR/<category>/<image> or DIR/<category>/<product>/<image>")
        if not is_readable(path):
            unreadable.append(key)
            continue
        product = "/".join(parts[:2]) if len(parts) == 3 else key
        images.append(LabelledImage(key, parts[0], product, path))
    if not images:
        raise DatasetError(f"no readable images under {root} (layout: DIR/<category>/[<product>/]<image>)")
    dataset = Dataset(root, images, unreadable)
    counts = dataset.counts()
    if len(counts) < 2:
        raise DatasetError(
            f"only one class ({next(iter(counts))}) under {root}: a category loss needs at least two"
        )
    small = {category: count for category, count in counts.items() if count < min_per_class}
    if small:
        listed = ", ".join(f"{category} ({count})" for category, count in small.items())
        raise DatasetError(f"classes with fewer than {min_per_class} images: {listed}")
    return dataset


@dataclass(frozen=True, slots=True)
class Pair:
    key_a: str
    key_b: str
    similar: bool


def read_pairs_csv(path: Path, known_keys: set[str]) -> list[Pair]:
    """Rows `key_a,key_b,similar|different` (a header row with those names is allowed)."""
    pairs: list[Pair] = []
    unknown: list[str] = []
    with path.open(newline="", encoding="utf-8") as file:
        for number, row in enumerate(csv.reader(file), start=1):
            if not row or (number == 1 and [cell.strip() for cell in row[:2]] == ["key_a", "key_b"]):
                continue
            if len(row) != 3 or row[2].strip() not in PAIR_LABELS:
                raise DatasetError(f"{path}:{number}: expected key_a,key_b,similar|different, got {row}")
            key_a, key_b, label = (cell.strip() for cell in row)
            unknown += [key for key in (key_a, key_b) if key not in known_keys]
            pairs.append(Pair(key_a, key_b, PAIR_LABELS[label] == 1))
    if unknown:
        shown = ", ".join(sorted(set(unknown))[:10])
        raise DatasetError(f"{path}: {len(set(unknown))} keys are not images of the dataset: {shown}")
    if not pairs:
        raise DatasetError(f"{path}: no pairs")
    return pairs


@dataclass(frozen=True, slots=True)
class Split:
    train: list[LabelledImage]
    test: list[LabelledImage]
    holdout_classes: tuple[str, ...]  # categories held out entirely (empty: split by product)
    unmeasured: int = 0  # held-out images left out of the measurement (measure_per_class)


def label_indices(images: list[LabelledImage]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Each image's category and product as indices into the sorted names (the training labels)."""
    categories = {name: index for index, name in enumerate(sorted({i.category for i in images}))}
    products = {name: index for index, name in enumerate(sorted({i.product for i in images}))}
    return (
        np.array([categories[i.category] for i in images], dtype=np.int64),
        np.array([products[i.product] for i in images], dtype=np.int64),
    )


def split_by_product(
    images: list[LabelledImage],
    *,
    test_fraction: float,
    seed: int,
    holdout_classes: tuple[str, ...] = (),
    measure_per_class: int | None = None,
) -> Split:
    """Held-out part for the before/after figures. With holdout_classes: those categories are the
    test set and never trained on. Otherwise a fraction of each category's PRODUCTS goes to test:
    all photos of one product land on the same side.

    measure_per_class: measure on (at most) that many held-out products per category, a seeded
    choice; the other held-out images are neither trained on nor measured. mAP@10 grows with the
    size of the catalogue searched, so runs on data sets of different sizes compare on held-out
    parts of one size."""
    if holdout_classes and measure_per_class is not None:
        raise DatasetError(
            "measuring N products per class applies to a split by product, not to held-out classes"
        )
    if holdout_classes:
        present = {image.category for image in images}
        missing = [name for name in holdout_classes if name not in present]
        if missing:
            raise DatasetError(f"--holdout-classes names unknown classes: {', '.join(missing)}")
        test = [image for image in images if image.category in holdout_classes]
        train = [image for image in images if image.category not in holdout_classes]
        if len({image.category for image in train}) < 2:
            raise DatasetError("after holding out those classes fewer than two classes are left to train on")
        return Split(train, test, holdout_classes)
    if not 0 < test_fraction < 1:
        raise DatasetError(f"the test fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    test_products: set[str] = set()
    for category in sorted({image.category for image in images}):
        products = sorted({image.product for image in images if image.category == category})
        if len(products) < 2:
            continue  # a category of one product cannot be split without straddling
        count = min(len(products) - 1, max(1, round(test_fraction * len(products))))
        test_products.update(str(name) for name in rng.choice(products, size=count, replace=False))
    train = [image for image in images if image.product not in test_products]
    test = [image for image in images if image.product in test_products]
    if not test:
        raise DatasetError("no category has two products: nothing can be held out by product")
    if measure_per_class is None:
        return Split(train, test, ())
    if measure_per_class < 2:
        raise DatasetError(f"measuring needs at least 2 products per class, got {measure_per_class}")
    measured_products: set[str] = set()
    for category in sorted({image.category for image in test}):
        products = sorted({image.product for image in test if image.category == category})
        chosen = rng.choice(products, size=min(measure_per_class, len(products)), replace=False)
        measured_products.update(str(name) for name in chosen)
    measured = [image for image in test if image.product in measured_products]
    return Split(train, measured, (), unmeasured=len(test) - len(measured))
