"""Training data from the live catalogue: the store says which images belong together (category,
product id), the bucket holds the photos, read by the reader the ingest function uses.

The export is a labelled folder `DIR/<category>/<product>/<image>` (datasets.py's layout), so the
rest of the loop (tune, evaluate) does not care where the data came from. Names are
percent-encoded path components, so a category or key holding "/" or ".." stays one folder level.
Uncategorised images cannot say what they belong with and are left out (counted), as are
categories of a single image (nothing to pair it with: the tuning would refuse the folder);
photos gone or over the byte limit since they were embedded are listed.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import quote

from lookalike.ports import FetchedObject, ObjectGone, ObjectRef, ObjectSource
from lookalike.store.rows import ImageSummary
from lookalike_tuning.datasets import IMAGE_SUFFIXES, DatasetError

PAGE_SIZE = 500


class CatalogueReader(Protocol):
    def images_after(
        self, after: ObjectRef | None, *, limit: int, category: str | None = None
    ) -> list[ImageSummary]: ...


@dataclass(slots=True)
class ExportSummary:
    images: int = 0
    uncategorised_skipped: int = 0
    single_image_categories_skipped: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)  # s3://bucket/key: gone or too large now
    categories: dict[str, int] = field(default_factory=dict)


def path_component(name: str) -> str:
    """One safe folder or file name for any string (never empty, never "." or "..")."""
    encoded = quote(name, safe=" -_()+,;=@")
    return encoded if encoded not in {"", ".", ".."} else encoded.replace(".", "%2E") or "%00"


def image_file_name(ref: ObjectRef) -> str:
    """Unique per (bucket, key) and keeping the key's suffix, which the folder reader looks at."""
    suffix = PurePosixPath(ref.key).suffix.lower()
    digest = hashlib.sha256(f"{ref.bucket}\x00{ref.key}".encode()).hexdigest()[:12]
    stem = path_component(PurePosixPath(ref.key).stem)[:80]
    return f"{stem}-{digest}{suffix if suffix in IMAGE_SUFFIXES else '.img'}"


def catalogue_images(reader: CatalogueReader, page_size: int = PAGE_SIZE) -> Iterator[ImageSummary]:
    after: ObjectRef | None = None
    while page := reader.images_after(after, limit=page_size):
        yield from page
        after = page[-1].ref


def export_catalogue(
    reader: CatalogueReader, source: ObjectSource, out: Path, *, max_bytes: int
) -> ExportSummary:
    """Write every categorised embedded image into `out` (which must not exist yet: the caller
    writes into a temporary folder and renames it once this returns)."""
    summary = ExportSummary()
    for image in catalogue_images(reader):
        if image.category is None:
            summary.uncategorised_skipped += 1
            continue
        fetched = source.fetch(image.ref.bucket, image.ref.key, max_bytes=max_bytes)
        if not isinstance(fetched, FetchedObject):
            why = "gone" if isinstance(fetched, ObjectGone) else "too large"
            summary.unavailable.append(f"s3://{image.ref.bucket}/{image.ref.key} ({why})")
            continue
        folder = out / path_component(image.category) / path_component(image.product_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image_file_name(image.ref)).write_bytes(fetched.data)
        summary.images += 1
        summary.categories[image.category] = summary.categories.get(image.category, 0) + 1
    for category, count in sorted(summary.categories.items()):
        if count < 2:
            shutil.rmtree(out / path_component(category))
            summary.single_image_categories_skipped.append(category)
            summary.images -= count
            del summary.categories[category]
    if summary.images == 0:
        raise DatasetError(
            "the catalogue has no categorised embedded images to learn from "
            f"({summary.uncategorised_skipped} uncategorised, {len(summary.unavailable)} unavailable, "
            f"{len(summary.single_image_categories_skipped)} categories of a single image)"
        )
    return summary
