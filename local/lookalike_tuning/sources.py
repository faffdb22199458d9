"""Public labelled data to tune and measure on, fetched offline from Debian and materialised as
labelled folders under .data/ (never committed).

- `dataset-fashion-mnist` (Zalando product photos, MIT/Expat): 28x28 grey IDX files, upscaled and
  inverted to dark-on-white packshots; each image its own product; 10 classes.
- `tuxpaint-stamps-default` (GPL-2): cut-out objects on transparent backgrounds, labelled by
  folder; a stamp and its `_mirror` copy are one product.
- `openclipart-png` (public domain): clip art labelled by folder, the object folders only; a
  second drawn domain, used as extra training data (`scripts/tune.py --extra-train`).
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from lookalike_tuning.datasets import DatasetError

FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_SUBDIR = Path("usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "tshirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip
STAMPS_PACKAGE = "tuxpaint-stamps-default"
STAMPS_SUBDIR = Path("usr/share/tuxpaint/stamps")
# Folders that are not kinds of objects (letters, signs, holiday themes) are left out.
STAMP_EXCLUDED_FOLDERS = ("symbols", "seasonal", "town/roadsigns", "town/flags", "naturalforces", "people")
MIN_CLASS_SIZE = 8
OPENCLIPART_PACKAGE = "openclipart-png"
OPENCLIPART_SUBDIR = Path("usr/share/openclipart/png")
OPENCLIPART_MAX_PIXELS = 20_000_000
# Not kinds of objects, or not photographs of one: icons, shapes, signs, logos, maps, catch-alls.
OPENCLIPART_EXCLUDED_FOLDERS = (
    "computer", "shapes", "signs_and_symbols", "special", "unsorted", "logos", "buttons", "geography",
)  # fmt: skip
# The folder under the data root each package unpacks to: its own name, except the stamps, which
# `make eval-data` unpacks to `tuxpaint-stamps` (shared with scripts/eval_quality.py).
UNPACKED_NAMES = {STAMPS_PACKAGE: "tuxpaint-stamps"}


def package_dir(package: str, data_root: Path) -> Path:
    """Where a fetched Debian package lives under `data_root` (.data): one place for every tool."""
    return data_root / UNPACKED_NAMES.get(package, package)


def fetch_debian_package(package: str, destination: Path) -> Path:
    """`apt-get download` + `dpkg -x` into destination (as `make eval-data` does); no install."""
    if destination.is_dir() and any(destination.iterdir()):
        return destination
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise DatasetError(f"fetching {package} needs apt-get and dpkg (Debian/Ubuntu); neither is here")
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        download = subprocess.run(
            ["apt-get", "download", package], cwd=scratch, capture_output=True, text=True, check=False
        )
        debs = list(Path(scratch).glob(f"{package}_*.deb"))
        if download.returncode != 0 or not debs:
            raise DatasetError(f"apt-get download {package} failed: {download.stderr.strip()[-400:]}")
        unpacked = Path(scratch) / "unpacked"
        subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True)
        unpacked.rename(destination)
    return destination


def read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """An IDX file (MNIST format, gzip): magic, dimensions, then the uint8 array."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def materialise_fashion_mnist(
    package_root: Path, out: Path, *, per_class: int, seed: int, part: str = "train", side: int = 112
) -> int:
    """per_class images of each class as dark-on-white PNG packshots under out/<class>/."""
    images = read_idx(package_root / FASHION_SUBDIR / f"{part}-images-idx3-ubyte.gz")
    labels = read_idx(package_root / FASHION_SUBDIR / f"{part}-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    written = 0
    for label, name in enumerate(FASHION_CLASSES):
        candidates = np.flatnonzero(labels == label)
        chosen = np.sort(rng.choice(candidates, size=min(per_class, len(candidates)), replace=False))
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in chosen:
            fashion_packshot(images[index], side).save(folder / f"{part}-{index:05d}.png")
            written += 1
    return written


def fashion_packshot(pixels: npt.NDArray[np.uint8], side: int) -> Image.Image:
    """A 28x28 Fashion-MNIST image (light garment on black) as a dark-on-white RGB packshot."""
    return (
        Image.fromarray(255 - pixels, mode="L").resize((side, side), Image.Resampling.BICUBIC).convert("RGB")
    )


def folder_labels(
    root: Path, *, excluded: tuple[str, ...], include: Callable[[Path], bool]
) -> list[tuple[Path, str]]:
    """Labelled PNGs under root: label = the second-level folder when it has >= MIN_CLASS_SIZE
    images, else the top-level folder; smaller classes and the excluded folders are dropped."""
    files = sorted(
        path
        for path in root.rglob("*.png")
        if include(path)
        and not any(path.relative_to(root).as_posix().startswith(f"{folder}/") for folder in excluded)
    )
    counts: dict[str, int] = {}
    for path in files:
        parts = path.relative_to(root).parts
        if len(parts) >= 3:
            counts["/".join(parts[:2])] = counts.get("/".join(parts[:2]), 0) + 1
    labelled = []
    for path in files:
        parts = path.relative_to(root).parts
        second = "/".join(parts[:2])
        labelled.append((path, second if len(parts) >= 3 and counts[second] >= MIN_CLASS_SIZE else parts[0]))
    sizes: dict[str, int] = {}
    for _, label in labelled:
        sizes[label] = sizes.get(label, 0) + 1
    return [(path, label) for path, label in labelled if sizes[label] >= MIN_CLASS_SIZE]


def stamp_labels(root: Path) -> list[tuple[Path, str]]:
    """The labelled stamps, mirrored copies left out (they join their stamp as one product)."""
    return folder_labels(
        root, excluded=STAMP_EXCLUDED_FOLDERS, include=lambda path: not path.stem.endswith("_mirror")
    )


def _not_a_poster(path: Path) -> bool:
    """A few drawings are rendered at poster size (up to 620 megapixels): far beyond any product
    photo and the upload limit, and minutes to decode. Read from the header only."""
    try:
        with Image.open(path) as image:
            return image.width * image.height <= OPENCLIPART_MAX_PIXELS
    except Image.DecompressionBombError:  # Pillow's own refusal, from the header too
        return False


def materialise_openclipart(package_root: Path, out: Path) -> int:
    """out/<class>/<image>.png: the clip art of object folders (icons, shapes and signs left out),
    each image its own product; transparent backgrounds kept (the decoder flattens them as it
    does uploads)."""
    written = 0
    for path, label in folder_labels(
        package_root / OPENCLIPART_SUBDIR, excluded=OPENCLIPART_EXCLUDED_FOLDERS, include=_not_a_poster
    ):
        folder = out / label.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        suffix = 2
        while target.exists():
            target = folder / f"{path.stem}-{suffix}{path.suffix}"
            suffix += 1
        shutil.copyfile(path, target)
        written += 1
    return written


def materialise_stamps(stamps_root: Path, out: Path) -> int:
    """out/<class>/<stamp>/{stamp.png, stamp_mirror.png}: a stamp and its mirror are one product."""
    written = 0
    for path, label in stamp_labels(stamps_root):
        product = out / label.replace("/", "-") / path.stem
        suffix = 2
        while product.exists():  # two folders of one class may hold stamps of the same name
            product = out / label.replace("/", "-") / f"{path.stem}-{suffix}"
            suffix += 1
        product.mkdir(parents=True)
        shutil.copyfile(path, product / path.name)
        written += 1
        mirror = path.with_name(f"{path.stem}_mirror.png")
        if mirror.is_file():
            shutil.copyfile(mirror, product / mirror.name)
            written += 1
    return written
