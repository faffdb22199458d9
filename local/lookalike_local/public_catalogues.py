"""Bigger demo catalogues from public labelled data: `make demo ARGS="--catalogue fashion"` or
`--catalogue stamps` (the default demo keeps its small sample catalogue, `lookalike_local.catalogue`).

- fashion: Fashion-MNIST (Debian package `dataset-fashion-mnist`, MIT/Expat; Zalando's product
  photos), PER_CLASS["fashion"] images of each of its 10 classes from the test split, upscaled and
  inverted to dark-on-white packshots as `lookalike_tuning.sources` does; each image a product.
- stamps: the Tux Paint stamps (Debian package `tuxpaint-stamps-default`, GPL-2), labelled by
  folder as `lookalike_tuning.sources.stamp_labels` does; up to PER_CLASS["stamps"] stamps of each
  class, each with its mirrored copy as a second photo of the same product.

The packages are the ones the evaluations use (docs/BENCHMARKS.md), fetched on first use with
`apt-get download` + `dpkg -x` into .data/ (nothing is installed); without apt-get and dpkg the
loader fails with a message saying so. Every UNCATEGORISED_EVERY-th product is uploaded without a
category (a key outside the layout), so that the review listing (GET /uncategorised) has
suggestions to show. The objects go through the normal S3 -> ingest path like the sample
catalogue, so search, the cluster map and the duplicates work on them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image

from lookalike_local.catalogue import CatalogueObject
from lookalike_tuning.datasets import DatasetError
from lookalike_tuning.sources import (
    FASHION_CLASSES,
    FASHION_PACKAGE,
    FASHION_SUBDIR,
    STAMPS_PACKAGE,
    STAMPS_SUBDIR,
    fashion_packshot,
    fetch_debian_package,
    package_dir,
    read_idx,
    stamp_labels,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = REPO_ROOT / ".data"
PACKAGES: Final = {"fashion": FASHION_PACKAGE, "stamps": STAMPS_PACKAGE}
CATALOGUES: Final = ("sample", *PACKAGES)
# 10 classes x 30 = 300 fashion products; 22 stamp classes x up to 12 (about 250 products, 500 photos).
PER_CLASS: Final = {"fashion": 30, "stamps": 12}
UNCATEGORISED_EVERY: Final = 20
FASHION_SIDE = 160  # pixels of the upscaled packshot
SEED = 0


class CatalogueUnavailableError(RuntimeError):
    """The catalogue's data cannot be fetched here (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class DemoCatalogue:
    objects: list[CatalogueObject]
    # A photo not in the catalogue that shows one of its products, and that product (the smoke search).
    query_photo: bytes
    query_product: str


def public_catalogue(
    name: str, *, per_class: int | None = None, data_root: Path = DATA_ROOT
) -> DemoCatalogue:
    """The named catalogue's objects; fetches its Debian package on first use (slow once: the
    stamps package is 161 MB). Raises `CatalogueUnavailableError`, `KeyError` for an unknown name."""
    if name not in PACKAGES:
        raise KeyError(f"unknown catalogue {name!r}; choose one of {', '.join(PACKAGES)}")
    package = PACKAGES[name]
    destination = package_dir(package, data_root)
    if not (destination.is_dir() and any(destination.iterdir())):
        print(f"fetching the Debian package {package} into {destination} (once) ...", flush=True)
    try:
        root = fetch_debian_package(package, destination)
    except (DatasetError, OSError) as error:
        raise CatalogueUnavailableError(
            f"the {name} catalogue needs the Debian package {package}: {error}. On Debian or Ubuntu "
            f"apt-get and dpkg fetch it (nothing is installed); elsewhere use the default demo."
        ) from error
    count = per_class if per_class is not None else PER_CLASS[name]
    if name == "fashion":
        return _fashion(root, count)
    return _stamps(root / STAMPS_SUBDIR, count)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _jpeg(image: Image.Image, quality: int = 60) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _category(position: int, category: str) -> str | None:
    return None if position % UNCATEGORISED_EVERY == UNCATEGORISED_EVERY - 1 else category


def _fashion(package_root: Path, per_class: int) -> DemoCatalogue:
    images = read_idx(package_root / FASHION_SUBDIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(package_root / FASHION_SUBDIR / "t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(SEED)
    objects: list[CatalogueObject] = []
    query: tuple[bytes, str] | None = None
    for label, name in enumerate(FASHION_CLASSES):
        candidates = np.flatnonzero(labels == label)
        chosen = np.sort(rng.choice(candidates, size=min(per_class, len(candidates)), replace=False))
        for index in chosen:
            pixels = images[int(index)]
            product_id = f"fashion-{name}-{int(index):05d}"
            objects.append(
                CatalogueObject(
                    product_id=product_id,
                    category=_category(len(objects), name),
                    filename="front.png",
                    content_type="image/png",
                    source=f"{FASHION_PACKAGE} t10k image {int(index)} ({name})",
                    make=_fashion_maker(pixels),
                )
            )
            if query is None and objects[-1].category is not None:
                # The smoke search: the same garment photographed again (shifted, JPEG).
                shifted = fashion_packshot(np.roll(pixels, 1, axis=1), FASHION_SIDE)
                query = (_jpeg(shifted), product_id)
    assert query is not None
    return DemoCatalogue(objects, *query)


def _fashion_maker(pixels: npt.NDArray[np.uint8]) -> Callable[[], bytes]:
    return lambda: _png(fashion_packshot(pixels, FASHION_SIDE))


def _stamps(stamps_root: Path, per_class: int) -> DemoCatalogue:
    if not stamps_root.is_dir():
        raise CatalogueUnavailableError(f"{stamps_root} is missing: the package did not unpack as expected")
    by_class: dict[str, list[Path]] = {}
    for path, label in stamp_labels(stamps_root):
        by_class.setdefault(label, []).append(path)
    objects: list[CatalogueObject] = []
    query: tuple[bytes, str] | None = None
    seen: set[str] = set()
    for label, paths in sorted(by_class.items()):
        category = label.replace("/", "-")
        for path in paths[:per_class]:
            product_id = f"stamp-{path.stem}"
            suffix = 2
            while product_id in seen:  # two folders may hold stamps of the same name
                product_id, suffix = f"stamp-{path.stem}-{suffix}", suffix + 1
            seen.add(product_id)
            product_category = _category(len(seen) - 1, category)
            views = [path] + [
                mirror for mirror in [path.with_name(f"{path.stem}_mirror.png")] if mirror.is_file()
            ]
            for view in views:
                objects.append(
                    CatalogueObject(
                        product_id=product_id,
                        category=product_category,
                        filename=view.name,
                        content_type="image/png",
                        source=f"{STAMPS_PACKAGE} {view.relative_to(stamps_root).as_posix()}",
                        make=view.read_bytes,
                    )
                )
            if query is None and product_category is not None:
                with Image.open(path) as opened:
                    picture = opened.convert("RGBA")
                flat = Image.new("RGB", picture.size, "white")
                flat.paste(picture, mask=picture.getchannel("A"))
                query = (_jpeg(flat.rotate(4, fillcolor="white")), product_id)
    if query is None:
        raise CatalogueUnavailableError(f"no labelled stamps under {stamps_root}")
    return DemoCatalogue(objects, *query)
