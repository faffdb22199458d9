"""Backbone features of training views, computed once with the production embedder and cached.

View 0 of every image is the photo as ingest sees it; views 1.. are random augmentations
(lookalike_tuning.augment). The cache file (.npz under the cache folder) is keyed by a hash of
the model file, its preprocessing, the image list with the images' bytes, the view count and the seed,
so a changed photo or model never reuses stale features.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from lookalike_tuning.augment import random_view
from lookalike_tuning.datasets import LabelledImage
from lookalike_tuning.production import Embedder, decode_file_bytes, decode_full, trim_uniform_border

FloatArray = npt.NDArray[np.float32]
# Bump when augment.py changes what a view is: old caches then stop matching.
AUGMENTATION_VERSION = 2
CHUNK = 32


def cache_key(embedder: Embedder, images: list[LabelledImage], views: int, seed: int) -> str:
    """What decides the features: the graph file, the preprocessing, the images, the views. Not
    the whole card, whose other fields (match levels, measured figures) change without them."""
    trim = embedder.preprocessing.trim_borders
    preprocessing = json.dumps(embedder.card.raw["preprocessing"], sort_keys=True)
    digest = hashlib.sha256()
    digest.update(
        f"{embedder.variant.sha256}|{preprocessing}|{embedder.model_version}|{views}|{seed}|{trim}".encode()
    )
    if trim:  # a changed trimming changes every view
        digest.update(inspect.getsource(sys.modules[trim_uniform_border.__module__]).encode())
    digest.update(f"|augment-{AUGMENTATION_VERSION}".encode())
    for image in images:
        digest.update(image.key.encode())
        digest.update(hashlib.sha256(image.path.read_bytes()).digest())
    return digest.hexdigest()[:24]


def view_images(images: list[LabelledImage], index: int, views: int, seed: int) -> list[Image.Image]:
    """Image `index`'s photo as ingest decodes it, then random views seeded by (seed, index), so
    every trainer sees the same views of it (the embedder trims them if its preprocessing says so,
    as it does the photos it is given in production)."""
    rng = np.random.default_rng([seed, index])
    data = images[index].path.read_bytes()
    clean = decode_file_bytes(data)
    full = decode_full(data) if views > 1 else clean
    return [clean] + [random_view(full, rng) for _ in range(views - 1)]


def compute_features(
    images: list[LabelledImage],
    embedder: Embedder,
    *,
    views: int,
    seed: int,
    cache_dir: Path | None,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> FloatArray:
    """[images, views, dim] unit-length backbone embeddings."""
    cache_file = None
    if cache_dir is not None:
        cache_file = cache_dir / f"features-{cache_key(embedder, images, views, seed)}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as stored:
                progress(f"features: cached {cache_file}")
                return np.asarray(stored["features"], dtype=np.float32)
    started = time.perf_counter()
    out = np.empty((len(images), views, embedder.dimension), dtype=np.float32)
    for start in range(0, len(images), CHUNK):
        batch: list[Image.Image] = []
        for index in range(start, min(start + CHUNK, len(images))):
            batch += view_images(images, index, views, seed)
        vectors = embedder.embed(batch).vectors
        out[start : start + len(batch) // views] = vectors.reshape(-1, views, embedder.dimension)
        done = min(start + CHUNK, len(images))
        if done == len(images) or (start // CHUNK) % 10 == 0:
            seconds = time.perf_counter() - started
            progress(f"features: {done}/{len(images)} images x {views} views, {seconds:.0f} s")
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(".partial.npz")
        np.savez(partial, features=out)
        partial.replace(cache_file)
    return out
