"""The demo's sample catalogue: real photos that ship offline inside the dev dependencies.

Sources (all installed by `make venv`, nothing is downloaded at run time):
- scikit-image `skimage/data/` (each file's origin and licence are in the docstrings of
  `skimage.data`: CC0 or public domain, except moon and stereo_motorcycle, which name none);
- scikit-learn `sklearn/datasets/images/` (china.jpg, flower.jpg: CC BY 2.0, credited in
  sklearn/datasets/images/README.txt);
- matplotlib `mpl-data/sample_data/` (grace_hopper.jpg: US Navy, public domain;
  Minduka_Present_Blue_Pack.png: openclipart, public domain).

A product has several images: the original ("front") and views made from it here (a detail crop,
a mirror image, the other camera of a stereo pair), the way a shop lists one product with
several photos. One deliberately broken upload (a truncated JPEG) shows a rejection.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

KEY_PREFIX = "products/"


def _package_dir(package: str) -> Path:
    if package == "skimage":
        import skimage.data

        return Path(skimage.data.__file__).parent
    if package == "sklearn":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "images"
    if package == "matplotlib":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data"
    raise KeyError(package)


_SOURCE_PATHS = {
    "skimage": "scikit-image skimage/data/",
    "sklearn": "scikit-learn sklearn/datasets/images/",
    "matplotlib": "matplotlib mpl-data/sample_data/",
}

# A view: name -> how it is made from the original (a box is (left, top, right, bottom) in fractions).
View = tuple[str, str, tuple[float, float, float, float] | None]
FRONT: View = ("front", "original", None)
MIRROR: View = ("mirror", "mirror", None)


def _detail(box: tuple[float, float, float, float]) -> View:
    return ("detail", "crop", box)


@dataclass(frozen=True, slots=True)
class SampleProduct:
    product_id: str
    category: str
    package: str
    file: str
    views: tuple[View, ...]
    description: str
    second_file: str | None = None  # another photo of the same object (a stereo pair's right camera)


PRODUCTS: tuple[SampleProduct, ...] = (
    SampleProduct(
        "tabby-cat",
        "animals",
        "skimage",
        "chelsea.png",
        (FRONT, _detail((0.1, 0.0, 0.75, 0.85)), MIRROR),
        "Chelsea the cat",
    ),
    SampleProduct(
        "espresso-cup",
        "food-drink",
        "skimage",
        "coffee.png",
        (FRONT, _detail((0.12, 0.05, 0.9, 0.95)), MIRROR),
        "a cup of espresso",
    ),
    SampleProduct(
        "red-motorcycle",
        "vehicles",
        "skimage",
        "motorcycle_left.png",
        (FRONT, _detail((0.0, 0.1, 0.7, 1.0))),
        "a motorcycle (Middlebury stereo set)",
        second_file="motorcycle_right.png",
    ),
    SampleProduct(
        "launch-rocket",
        "space",
        "skimage",
        "rocket.jpg",
        (FRONT, _detail((0.25, 0.0, 0.8, 1.0))),
        "a rocket on the launch pad (SpaceX)",
    ),
    SampleProduct(
        "hubble-deep-field",
        "space",
        "skimage",
        "hubble_deep_field.jpg",
        (FRONT, _detail((0.0, 0.0, 0.6, 0.6)), MIRROR),
        "Hubble deep field (NASA)",
    ),
    SampleProduct(
        "astronaut-portrait",
        "space",
        "skimage",
        "astronaut.png",
        (FRONT, _detail((0.0, 0.0, 0.75, 0.75))),
        "astronaut Eileen Collins (NASA)",
    ),
    SampleProduct("moon-surface", "space", "skimage", "moon.png", (FRONT,), "the Moon's surface"),
    SampleProduct(
        "garden-flower",
        "nature",
        "sklearn",
        "flower.jpg",
        (FRONT, _detail((0.15, 0.1, 0.85, 0.9)), MIRROR),
        "a flower",
    ),
    SampleProduct("grass-lawn", "nature", "skimage", "grass.png", (FRONT,), "grass"),
    SampleProduct(
        "temple-postcard",
        "travel",
        "sklearn",
        "china.jpg",
        (FRONT, _detail((0.3, 0.0, 1.0, 0.7))),
        "a temple in China",
    ),
    SampleProduct(
        "retina-scan",
        "medical",
        "skimage",
        "retina.jpg",
        (FRONT, _detail((0.2, 0.2, 0.8, 0.8))),
        "a retina (fundus photograph)",
    ),
    SampleProduct(
        "ihc-slide",
        "medical",
        "skimage",
        "ihc.png",
        (FRONT, _detail((0.0, 0.0, 0.6, 0.6))),
        "an immunohistochemistry slide",
    ),
    SampleProduct(
        "grace-hopper-print",
        "people",
        "matplotlib",
        "grace_hopper.jpg",
        (FRONT, _detail((0.15, 0.05, 0.85, 0.6))),
        "Grace Hopper (US Navy)",
    ),
    SampleProduct("cameraman-print", "people", "skimage", "camera.png", (FRONT, MIRROR), "the cameraman"),
    SampleProduct(
        "gift-box",
        "gifts",
        "matplotlib",
        "Minduka_Present_Blue_Pack.png",
        (FRONT, MIRROR),
        "a wrapped present (openclipart)",
    ),
    SampleProduct("brick-wall", "materials", "skimage", "brick.png", (FRONT,), "a brick wall"),
    SampleProduct("gravel-path", "materials", "skimage", "gravel.png", (FRONT,), "gravel"),
    SampleProduct("coin-set", "collectibles", "skimage", "coins.png", (FRONT,), "old coins"),
)
BROKEN_PRODUCT = ("damaged-upload", "food-drink")  # a truncated JPEG of the espresso photo


@dataclass(frozen=True, slots=True)
class CatalogueObject:
    """One object to put into the bucket."""

    product_id: str
    category: str | None  # None: uploaded without one (outside the key layout), for a suggestion
    filename: str
    content_type: str
    source: str
    make: Callable[[], bytes]

    @property
    def key(self) -> str:
        if self.category is None:
            # One segment under the prefix matches no layout: the category stays unknown and the
            # product id comes from the object's metadata (docs/INGEST.md).
            return f"{KEY_PREFIX}{self.product_id}-{self.filename}"
        return f"{KEY_PREFIX}{self.category}/{self.product_id}/{self.filename}"

    def body(self) -> bytes:
        return self.make()

    def etag(self) -> str:
        """S3's ETag of a single-part upload: the MD5 of the bytes."""
        return hashlib.md5(self.make(), usedforsecurity=False).hexdigest()


def _encode(image: Image.Image, format_: str) -> bytes:
    buffer = io.BytesIO()
    if format_ == "JPEG":
        image = image.convert("RGB") if image.mode not in {"RGB", "L"} else image
        image.save(buffer, format="JPEG", quality=88)
    else:
        image.save(buffer, format=format_)
    return buffer.getvalue()


def _render(path: Path, transform: str, box: tuple[float, float, float, float] | None, format_: str) -> bytes:
    with Image.open(path) as opened:
        image = opened.copy()
    if transform == "mirror":
        image = ImageOps.mirror(image)
    elif transform == "crop" and box is not None:
        width, height = image.size
        image = image.crop(
            (int(box[0] * width), int(box[1] * height), int(box[2] * width), int(box[3] * height))
        )
    if max(image.size) > 1024:
        image.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
    return _encode(image, format_)


def _object(product: SampleProduct, file: str, view: View, filename: str) -> CatalogueObject:
    path = _package_dir(product.package) / file
    # PNG stays PNG where it has transparency (exercises the decoder's alpha flattening).
    format_ = "PNG" if file.endswith(".png") and product.category == "gifts" else "JPEG"
    extension = "png" if format_ == "PNG" else "jpg"
    name, transform, box = view
    return CatalogueObject(
        product_id=product.product_id,
        category=product.category,
        filename=f"{filename or name}.{extension}",
        content_type=f"image/{'png' if format_ == 'PNG' else 'jpeg'}",
        source=f"{_SOURCE_PATHS[product.package]}{file} ({transform})",
        make=lambda: _render(path, transform, box, format_),
    )


def _truncated_jpeg() -> bytes:
    whole = _render(_package_dir("skimage") / "coffee.png", "original", None, "JPEG")
    return whole[: len(whole) // 3]


def catalogue() -> list[CatalogueObject]:
    """Every object of the sample catalogue, in a fixed order (the broken upload last)."""
    objects: list[CatalogueObject] = []
    for product in PRODUCTS:
        for view in product.views:
            objects.append(_object(product, product.file, view, ""))
        if product.second_file is not None:
            objects.append(_object(product, product.second_file, FRONT, "side"))
    product_id, category = BROKEN_PRODUCT
    objects.append(
        CatalogueObject(
            product_id=product_id,
            category=category,
            filename="truncated.jpg",
            content_type="image/jpeg",
            source="scikit-image skimage/data/coffee.png, JPEG cut after a third (a broken upload)",
            make=_truncated_jpeg,
        )
    )
    return objects


def query_photo() -> tuple[bytes, str]:
    """A photo that is not in the catalogue but shows one of its products (for the smoke search):
    a tighter, rotated crop of the cat, re-encoded at a lower quality."""
    with Image.open(_package_dir("skimage") / "chelsea.png") as opened:
        image = opened.convert("RGB")
    width, height = image.size
    image = image.crop((int(0.05 * width), int(0.05 * height), int(0.7 * width), int(0.95 * height))).rotate(
        8
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=60)
    return buffer.getvalue(), "tabby-cat"
