"""The catalogue of `scripts/bench_scale.py`: real embeddings, their augmented views, and vectors
synthesised from them up to N rows, with visually coherent categories; cached under .data.

Real part (`--real tune-cache`, the default): the production model's embeddings of the labelled
tuning images (`make tune-data`: Fashion-MNIST 5k and Tux Paint stamps), exactly as the tuning
pipeline computes and caches them (`lookalike_tuning.features`, same split, views and seed, so an
existing feature cache is reused): each training image as ingest sees it plus two random
augmented views (crops, flips, colour...), each held-out image once. A real product is one real
image with its views. `--real sample-photos` (seconds, for the test suite): the ten sample photos
and 24 edited copies of each (`bench_query.real_rows`).

Categories: k-means over the real embeddings (about 100 clusters: ~1 % of rows each), so a
category is a visual neighbourhood, like "sandals", never a random label.

Synthesised part, up to N rows: a new product is a random convex mixture (Dirichlet) of three
real embeddings of one category, restricted to the non-zero channels of the dominant one (the
pooled CNN features are non-negative and about half the channels are zero), then multiplicative
log-normal noise (`perturbed`: zeros stay zero) and L2 normalisation; its 1-3 images (50/30/20 %)
are that vector, then views of it perturbed as much as a real augmented view differs from its
photo (the sigma is fitted to the real views' median cosine). `realism()` checks the result
against the real rows: zero fraction and the nearest-neighbour cosines at equal set size.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from bench_query import real_rows

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
# Bump when the generator changes: cached sets of an older generator are not reused.
GENERATOR_VERSION: Final = 2
TUNE_DATASETS: Final = ("fashion-mnist-5k", "tuxpaint")
CATEGORY_SHARE: Final = 0.01
# The spread of new products around their mixture of real ones (log-normal sigma): chosen so that
# the synthesised rows' nearest-neighbour cosines match the real rows' at equal set size.
CENTRE_SIGMA: Final = float(os.environ.get("SCALE_CENTRE_SIGMA", "0.2"))


@dataclass(frozen=True, slots=True)
class RealSet:
    vectors: FloatArray  # [rows, dim] unit length
    product: IntArray  # real product (= distinct real image) of each row
    is_view: npt.NDArray[np.bool_]  # an augmented view (True) or the image as ingest sees it
    source: str

    @property
    def distinct_images(self) -> int:
        return len(np.unique(self.product))


def tune_cache_real(repo_root: Path) -> RealSet:
    """Features of the tuning datasets, through the tuning pipeline's own cache."""
    from lookalike_tuning.datasets import read_labelled_folder, split_by_product
    from lookalike_tuning.features import compute_features
    from lookalike_tuning.fit import TrainingConfig
    from lookalike_tuning.options import TuneOptions
    from lookalike_tuning.production import BASE_MODEL_DIR, Embedder, load_model_card

    options = TuneOptions(dataset_dir=Path(), out_dir=Path())
    seed = TrainingConfig().seed
    embedder = Embedder(load_model_card(BASE_MODEL_DIR), variant="fp32", threads=1)
    cache_dir = repo_root / ".data" / "tune-cache"
    parts: list[FloatArray] = []
    products: list[IntArray] = []
    views: list[npt.NDArray[np.bool_]] = []
    next_product = 0
    for name in TUNE_DATASETS:
        root = repo_root / ".data" / "tune-data" / name
        if not root.is_dir():
            raise SystemExit(f"{root} is missing: run `make tune-data` (or use --real sample-photos)")
        dataset = read_labelled_folder(root)
        split = split_by_product(dataset.images, test_fraction=options.test_fraction, seed=seed)
        for images, count in ((split.train, options.views), (split.test, 1)):
            features = compute_features(images, embedder, views=count, seed=seed, cache_dir=cache_dir)
            parts.append(features.reshape(-1, features.shape[-1]))
            products.append(np.repeat(np.arange(next_product, next_product + len(images)), count))
            views.append(np.tile(np.arange(count) > 0, len(images)))
            next_product += len(images)
    vectors = np.concatenate(parts).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return RealSet(vectors, np.concatenate(products), np.concatenate(views), "tune-cache")


def sample_photo_real(rng: np.random.Generator) -> RealSet:
    rows, vectors = real_rows(rng)
    names = sorted({row.product_id.split("-listing-")[0] for row in rows})
    product = np.array([names.index(row.product_id.split("-listing-")[0]) for row in rows])
    is_view = np.array([not row.key.endswith("/0.jpg") for row in rows])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return RealSet(unit.astype(np.float32), product, is_view, "sample-photos")


def real_categories(real: RealSet, rng: np.random.Generator) -> IntArray:
    """A k-means cluster per real product (its photo's), about CATEGORY_SHARE of the rows each."""
    from sklearn.cluster import KMeans

    photos = np.flatnonzero(~real.is_view)
    clusters = max(2, min(round(1 / CATEGORY_SHARE), len(photos) // 5))
    labels = KMeans(n_clusters=clusters, n_init=1, random_state=int(rng.integers(1 << 31))).fit_predict(
        real.vectors[photos]
    )
    of_product = dict(zip(real.product[photos].tolist(), labels.tolist(), strict=True))
    return np.array([of_product[int(p)] for p in real.product], dtype=np.int64)


def view_cosine(real: RealSet) -> float:
    """The real views' median cosine to their photo."""
    photo_of = {int(p): i for i, p in enumerate(real.product) if not real.is_view[i]}
    pairs = [
        (photo_of[int(p)], i) for i, p in enumerate(real.product) if real.is_view[i] and int(p) in photo_of
    ]
    if not pairs:
        return 0.9
    return float(np.median([float(real.vectors[a] @ real.vectors[b]) for a, b in pairs[:5000]]))


@dataclass(frozen=True, slots=True)
class Catalogue:
    vectors: npt.NDArray[np.float16]  # [rows, dim], stored as halfvec
    product: IntArray  # product number per row (real products first)
    category: IntArray
    composition: dict[str, Any]

    def product_name(self, number: int) -> str:
        return f"p{number:07d}"


def perturbed(vectors: FloatArray, sigma: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Each channel times log-normal noise (sigma per row), then L2 normalisation: values stay
    non-negative and zero channels (about half of a real embedding's) stay zero, as between a
    photo and its augmented views; large channels move most, as they do."""
    noise = rng.standard_normal(vectors.shape, dtype=np.float32) * sigma[:, None]
    result = vectors * np.exp(noise - sigma[:, None] ** 2 / 2)
    result /= np.linalg.norm(result, axis=1, keepdims=True)
    return np.asarray(result, dtype=np.float32)


def sigma_for_cosine(sample: FloatArray, target: float, rng: np.random.Generator) -> float:
    """The noise sigma whose perturbation has median cosine `target` to the original (bisection)."""
    low, high = 0.0, 4.0
    for _ in range(20):
        middle = (low + high) / 2
        moved = perturbed(sample, np.full(len(sample), middle, dtype=np.float32), rng)
        if float(np.median((moved * sample).sum(axis=1))) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def synthesise(rows: int, real: RealSet, rng: np.random.Generator) -> Catalogue:
    categories = real_categories(real, rng)
    cosine = view_cosine(real)
    sample = real.vectors[rng.choice(len(real.vectors), size=min(2000, len(real.vectors)), replace=False)]
    strength = sigma_for_cosine(sample, cosine, rng)
    synthetic_rows = rows - len(real.vectors)
    if synthetic_rows < 0:
        raise SystemExit(f"--rows must be at least {len(real.vectors)} (the real embeddings)")
    images_per_product = rng.choice([1, 2, 3], size=max(synthetic_rows, 1), p=[0.5, 0.3, 0.2])
    products = (
        int(np.searchsorted(np.cumsum(images_per_product), synthetic_rows)) + 1 if synthetic_rows else 0
    )
    product_of_row = np.repeat(np.arange(products), images_per_product[:products])[:synthetic_rows]
    members = [np.flatnonzero(categories == c) for c in range(int(categories.max()) + 1)]
    sizes = np.array([len(m) for m in members], dtype=np.float64)
    category_of_product = rng.choice(len(members), size=products, p=sizes / sizes.sum())
    dim = real.vectors.shape[1]
    out = np.empty((rows, dim), dtype=np.float16)
    out[: len(real.vectors)] = real.vectors
    chunk = 20_000
    for start in range(0, products, chunk):
        stop = min(start + chunk, products)
        picks = np.stack([rng.choice(members[c], size=3) for c in category_of_product[start:stop]])
        weights = rng.dirichlet([1.0, 1.0, 1.0], size=stop - start).astype(np.float32)
        mixtures = np.einsum("pk,pkd->pd", weights, real.vectors[picks])
        # The support of the dominant photo: a mixture of three would otherwise have few zero channels.
        dominant = picks[np.arange(stop - start), weights.argmax(axis=1)]
        mixtures *= real.vectors[dominant] > 0
        noise = rng.uniform(0.5 * CENTRE_SIGMA, 1.5 * CENTRE_SIGMA, size=stop - start).astype(np.float32)
        centres = perturbed(mixtures, noise, rng)
        rows_here = np.flatnonzero((product_of_row >= start) & (product_of_row < stop))
        # A product's first image is its vector itself (the photo), the others views of it.
        is_view = np.ones(len(rows_here), dtype=bool)
        is_view[np.unique(product_of_row[rows_here], return_index=True)[1]] = False
        view_noise = (strength * rng.uniform(0.7, 1.3, size=len(rows_here)) * is_view).astype(np.float32)
        vectors = perturbed(centres[product_of_row[rows_here] - start], view_noise, rng)
        out[len(real.vectors) + rows_here] = vectors
    real_products = int(real.product.max()) + 1
    product = np.concatenate([real.product, real_products + product_of_row]).astype(np.int64)
    category = np.concatenate([categories, category_of_product[product_of_row]]).astype(np.int64)
    composition = {
        "real_source": real.source,
        "distinct_real_images": real.distinct_images,
        "augmented_views_of_real_images": int(real.is_view.sum()),
        "real_rows": len(real.vectors),
        "synthesised_rows": synthetic_rows,
        "synthesised_products": products,
        "products": real_products + products,
        "categories": len(members),
        "real_view_cosine_median": round(cosine, 3),
        "view_noise_sigma": round(strength, 3),
        "product_noise_sigma": CENTRE_SIGMA,
        "generator": GENERATOR_VERSION,
    }
    return Catalogue(out, product, category, composition)


def cached_catalogue(rows: int, seed: int, real_source: str, cache_dir: Path, repo_root: Path) -> Catalogue:
    """The catalogue for (rows, seed, source), generated once and kept in cache_dir."""
    tag = hashlib.sha256(
        f"{rows}|{seed}|{real_source}|{GENERATOR_VERSION}|{CENTRE_SIGMA}".encode()
    ).hexdigest()[:12]
    path = cache_dir / f"catalogue-{rows}-{tag}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            composition = {str(k): v.item() for k, v in np.load(path.with_suffix(".meta.npz")).items()}
            return Catalogue(stored["vectors"], stored["product"], stored["category"], composition)
    rng = np.random.default_rng(seed)
    real = tune_cache_real(repo_root) if real_source == "tune-cache" else sample_photo_real(rng)
    catalogue = synthesise(rows, real, rng)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, vectors=catalogue.vectors, product=catalogue.product, category=catalogue.category)
    np.savez(path.with_suffix(".meta.npz"), **{k: np.array(v) for k, v in catalogue.composition.items()})
    partial.replace(path)
    return catalogue


def nearest_cosines(vectors: FloatArray, queries: IntArray, products: IntArray) -> tuple[float, float]:
    """Medians of the 1st and 10th highest cosine from each query row to rows of other products."""
    unit = vectors.astype(np.float32)
    firsts, tenths = [], []
    for q in queries:
        scores = unit @ unit[q]
        scores[products == products[q]] = -2.0
        top = np.sort(np.partition(-scores, 10)[:10])
        firsts.append(-top[0])
        tenths.append(-top[9])
    return round(float(np.median(firsts)), 3), round(float(np.median(tenths)), 3)


def realism(catalogue: Catalogue, rng: np.random.Generator, queries: int = 200) -> dict[str, Any]:
    """The synthesised rows against the real ones, at equal set size (so density is comparable):
    nearest-neighbour cosines and the share of zero channels."""
    real_rows_count = int(catalogue.composition["real_rows"])
    rows = len(catalogue.vectors)
    real = catalogue.vectors[:real_rows_count]
    report: dict[str, Any] = {"compared_rows": real_rows_count}
    real_q = rng.choice(real_rows_count, size=min(queries, real_rows_count), replace=False)
    first, tenth = nearest_cosines(real, real_q, catalogue.product[:real_rows_count])
    report["real"] = {"top1_cosine_median": first, "top10_cosine_median": tenth,
                      "zero_fraction": round(float((real == 0).mean()), 3)}  # fmt: skip
    if rows - real_rows_count >= real_rows_count:
        sample = real_rows_count + rng.choice(rows - real_rows_count, size=real_rows_count, replace=False)
        synthetic = catalogue.vectors[sample]
        synth_q = rng.choice(len(sample), size=len(real_q), replace=False)
        first, tenth = nearest_cosines(synthetic, synth_q, catalogue.product[sample])
        report["synthesised"] = {"top1_cosine_median": first, "top10_cosine_median": tenth,
                                 "zero_fraction": round(float((synthetic == 0).mean()), 3)}  # fmt: skip
    return report
