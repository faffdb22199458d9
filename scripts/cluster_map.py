"""A 2-D map of the catalogue's embeddings: clusters, categories, representative thumbnails.

    .venv/bin/python scripts/cluster_map.py [--clusters K] [--category C] [--limit N]
        [--png docs/img/cluster_map.png] [--html docs/img/cluster_map.html]

Reads the embeddings from the store (DATABASE_URL; unset: the embedded local database),
clusters them with k-means (K chosen by the best silhouette score unless --clusters is given;
unit vectors, so Euclidean k-means follows cosine similarity), projects them to 2-D (PCA to 50
dimensions, then t-SNE) and draws every image as a dot coloured by its category, each cluster
labelled at its centre, with the images nearest each cluster's centre as thumbnails beside the
map. Thumbnails come from the demo's catalogue when a key is one of its objects (the local stack;
--catalogue fashion / stamps after `make demo ARGS="--catalogue ..."`), else from S3
(S3_ENDPOINT_URL / AWS), else a grey tile. The HTML page is one self-contained file (inline SVG and
a few lines of JS, no CDN): hover a dot for its key and product, click a category to highlight it.
A JSON summary goes to stdout: per cluster its size and categories, per category how much of it
falls into its main cluster ("distinct" when >= 0.8).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import html
import io
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lookalike.settings import get_settings
from lookalike.store import ImageSummary, Store
from lookalike_aws.runtime import get_store

REPO_ROOT = Path(__file__).resolve().parents[1]
THUMBNAILS_PER_CLUSTER = 3
THUMBNAIL_SIDE = 96
MAX_AUTO_CLUSTERS = 12
DISTINCT = 0.8  # a category with this share of its images in one cluster is visually distinct

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ClusterMap:
    images: list[ImageSummary]
    labels: npt.NDArray[np.int_]  # cluster per image
    points: npt.NDArray[np.float64]  # [n, 2]
    representatives: list[list[int]]  # per cluster: image indices nearest its centre
    silhouette: float | None
    k: int


def choose_clusters(
    vectors: FloatArray, k: int | None, seed: int
) -> tuple[npt.NDArray[np.int_], int, float | None]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(vectors)
    if n < 3:
        return np.zeros(n, dtype=np.int_), 1, None
    candidates = [k] if k is not None else list(range(2, min(MAX_AUTO_CLUSTERS, n - 1) + 1))
    best: tuple[float, npt.NDArray[np.int_], int] | None = None
    for candidate in candidates:
        labels = KMeans(n_clusters=candidate, n_init=10, random_state=seed).fit_predict(vectors)
        score = float(silhouette_score(vectors, labels, metric="cosine")) if len(set(labels)) > 1 else -1.0
        if best is None or score > best[0]:
            best = (score, labels.astype(np.int_), candidate)
    assert best is not None
    return best[1], best[2], best[0]


def project(vectors: FloatArray, seed: int) -> npt.NDArray[np.float64]:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(vectors)
    if n < 4:
        return np.column_stack([np.arange(n, dtype=np.float64), np.zeros(n)])
    reduced = PCA(n_components=min(50, n - 1), random_state=seed).fit_transform(vectors)
    # Small catalogues need a small perplexity, or t-SNE pulls every cluster into one blob.
    perplexity = float(min(30.0, max(2.0, n / 6)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine")
    return np.asarray(tsne.fit_transform(reduced), dtype=np.float64)


def build_map(images: list[ImageSummary], vectors: FloatArray, *, k: int | None, seed: int = 0) -> ClusterMap:
    labels, chosen, silhouette = choose_clusters(vectors, k, seed)
    points = project(vectors, seed)
    representatives = []
    for cluster in range(chosen):
        members = np.flatnonzero(labels == cluster)
        centre = vectors[members].mean(axis=0)
        order = np.argsort(-(vectors[members] @ centre))
        representatives.append([int(members[i]) for i in order[:THUMBNAILS_PER_CLUSTER]])
    return ClusterMap(images, labels, points, representatives, silhouette, chosen)


def summary(cluster_map: ClusterMap) -> dict[str, Any]:
    categories = Counter(image.category or "(none)" for image in cluster_map.images)
    clusters = []
    for cluster in range(cluster_map.k):
        members = [cluster_map.images[i] for i in np.flatnonzero(cluster_map.labels == cluster)]
        clusters.append(
            {
                "cluster": cluster + 1,
                "size": len(members),
                "categories": dict(Counter(image.category or "(none)" for image in members).most_common()),
                "representatives": [
                    cluster_map.images[i].ref.key for i in cluster_map.representatives[cluster]
                ],
            }
        )
    per_category = {}
    for category, total in sorted(categories.items()):
        counts = Counter(
            int(label)
            for image, label in zip(cluster_map.images, cluster_map.labels, strict=True)
            if (image.category or "(none)") == category
        )
        main_cluster, main_count = counts.most_common(1)[0]
        share = main_count / total
        per_category[category] = {
            "images": total,
            "main_cluster": main_cluster + 1,
            "share_in_main_cluster": round(share, 2),
            "clusters": sorted(label + 1 for label in counts),
            "distinct": share >= DISTINCT,
        }
    return {
        "images": len(cluster_map.images),
        "clusters": cluster_map.k,
        "silhouette": None if cluster_map.silhouette is None else round(cluster_map.silhouette, 3),
        "per_cluster": clusters,
        "per_category": per_category,
    }


# --- thumbnails ----------------------------------------------------------------------------------


class Thumbnails:
    """Thumbnail JPEGs by key: the demo catalogue's bytes when the key is one of its objects,
    else the object from S3, else a grey tile."""

    def __init__(self, catalogue_name: str = "sample") -> None:
        from lookalike_local.catalogue import catalogue
        from lookalike_local.public_catalogues import public_catalogue

        objects = catalogue() if catalogue_name == "sample" else public_catalogue(catalogue_name).objects
        self._sample = {item.key: item for item in objects}
        self._cache: dict[tuple[str, str], Any] = {}

    def image(self, image: ImageSummary) -> Any:
        from PIL import Image

        from lookalike.images import ImageRejected, decode_image

        cache_key = (image.ref.bucket, image.ref.key)
        if cache_key in self._cache:
            return self._cache[cache_key]
        data = self._read(image)
        picture = Image.new("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE), (220, 220, 220))
        if data is not None:
            settings = get_settings()
            with contextlib.suppress(ImageRejected):  # a broken upload: the grey tile
                picture = decode_image(
                    data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
                ).image
        picture = picture.copy()
        picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        self._cache[cache_key] = picture
        return picture

    def _read(self, image: ImageSummary) -> bytes | None:
        sample = self._sample.get(image.ref.key)
        if sample is not None:
            return sample.body()
        try:
            from lookalike.ports import FetchedObject
            from lookalike_aws.s3 import S3ObjectSource

            fetched = S3ObjectSource().fetch(
                image.ref.bucket, image.ref.key, max_bytes=get_settings().max_image_bytes
            )
        except Exception:  # no S3 access (credentials, endpoint): the map draws grey tiles
            return None
        return fetched.data if isinstance(fetched, FetchedObject) else None

    def data_uri(self, image: ImageSummary) -> str:
        buffer = io.BytesIO()
        self.image(image).save(buffer, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


# --- drawing -------------------------------------------------------------------------------------


def category_colours(images: list[ImageSummary]) -> dict[str, str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = colormaps["tab20"]
    names = sorted({image.category or "(none)" for image in images})
    return {name: to_hex(palette(index % 20)) for index, name in enumerate(names)}


def draw_png(cluster_map: ClusterMap, thumbnails: Thumbnails, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    colours = category_colours(cluster_map.images)
    rows = cluster_map.k
    figure = plt.figure(figsize=(14, max(7.0, 1.25 * rows + 1)), dpi=100)
    grid = figure.add_gridspec(rows, 2, width_ratios=[2.2, 1], wspace=0.05, hspace=0.15)
    axes = figure.add_subplot(grid[:, 0])
    points = cluster_map.points
    for category, colour in colours.items():
        chosen = [i for i, image in enumerate(cluster_map.images) if (image.category or "(none)") == category]
        axes.scatter(points[chosen, 0], points[chosen, 1], s=70, c=colour, label=category, edgecolors="white")
    for cluster in range(cluster_map.k):
        centre = points[cluster_map.labels == cluster].mean(axis=0)
        axes.annotate(
            str(cluster + 1),
            centre,
            fontsize=12,
            fontweight="bold",
            ha="center",
            va="center",
            bbox={"boxstyle": "circle", "fc": "white", "ec": "0.3", "alpha": 0.85},
        )
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(loc="best", fontsize=8, title="category", framealpha=0.85)

    for cluster in range(rows):
        panel = figure.add_subplot(grid[cluster, 1])
        panel.set_xlim(0, THUMBNAILS_PER_CLUSTER + 1.6)
        panel.set_ylim(0, 1)
        panel.axis("off")
        members = cluster_map.labels == cluster
        categories = Counter(cluster_map.images[i].category or "(none)" for i in np.flatnonzero(members))
        label = ", ".join(f"{name} {count}" for name, count in categories.most_common(3))
        panel.text(0.0, 0.5, f"{cluster + 1}", fontsize=12, fontweight="bold", va="center")
        panel.text(0.3, 0.5, f"{int(members.sum())} img\n{label}", fontsize=7, va="center")
        for slot, index in enumerate(cluster_map.representatives[cluster]):
            image = cluster_map.images[index]
            box = AnnotationBbox(
                OffsetImage(np.asarray(thumbnails.image(image)), zoom=0.55),
                (1.6 + slot + 0.5, 0.5),
                frameon=True,
                bboxprops={"edgecolor": colours[image.category or "(none)"], "linewidth": 2},
            )
            panel.add_artist(box)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)


def write_html(cluster_map: ClusterMap, thumbnails: Thumbnails, path: Path, title: str) -> None:
    colours = category_colours(cluster_map.images)
    width, height, margin = 760, 560, 30
    points = cluster_map.points
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    scaled = margin + (points - low) / span * np.array([width - 2 * margin, height - 2 * margin])
    dots = []
    for index, image in enumerate(cluster_map.images):
        category = image.category or "(none)"
        x, y = scaled[index]
        cluster = cluster_map.labels[index] + 1
        tip = f"{image.ref.key}\nproduct {image.product_id}\ncategory {category}\ncluster {cluster}"
        dots.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="{colours[category]}" '
            f'data-category="{html.escape(category)}"><title>{html.escape(tip)}</title></circle>'
        )
    labels = []
    for cluster in range(cluster_map.k):
        x, y = scaled[cluster_map.labels == cluster].mean(axis=0)
        labels.append(f'<text x="{x:.1f}" y="{y:.1f}" class="cluster">{cluster + 1}</text>')
    legend = "".join(
        f'<li data-category="{html.escape(name)}"><span style="background:{colour}"></span>'
        f"{html.escape(name)}</li>"
        for name, colour in colours.items()
    )
    panels = []
    for cluster in range(cluster_map.k):
        members = np.flatnonzero(cluster_map.labels == cluster)
        categories = Counter(cluster_map.images[i].category or "(none)" for i in members)
        images = "".join(
            f'<img src="{thumbnails.data_uri(cluster_map.images[i])}" '
            f'title="{html.escape(cluster_map.images[i].ref.key)}" alt="">'
            for i in cluster_map.representatives[cluster]
        )
        description = ", ".join(f"{html.escape(name)} {count}" for name, count in categories.most_common())
        panels.append(
            f"<div class='panel'><b>{cluster + 1}</b> {len(members)} images: {description}<br>{images}</div>"
        )
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1em; display: flex; gap: 1em; flex-wrap: wrap; }}
svg {{ border: 1px solid #ccc; background: #fafafa; }}
circle {{ stroke: white; stroke-width: 1; cursor: pointer; }}
circle.dim {{ opacity: 0.12; }}
text.cluster {{ font-weight: bold; text-anchor: middle; dominant-baseline: middle; pointer-events: none; }}
ul {{ list-style: none; padding: 0; }} li {{ cursor: pointer; margin: 2px 0; }}
li span {{ display: inline-block; width: 12px; height: 12px; margin-right: 6px; border-radius: 6px; }}
li.off {{ opacity: 0.4; }} .panel {{ margin: 0 0 8px; }} .panel img {{ margin: 2px; border: 1px solid #ddd; }}
</style></head><body>
<div><h3>{html.escape(title)}</h3>
<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">
{"".join(dots)}{"".join(labels)}</svg></div>
<div><h4>Categories (click to highlight)</h4><ul id="legend">{legend}</ul>
<h4>Clusters</h4>{"".join(panels)}</div>
<script>
let chosen = null;
document.querySelectorAll('#legend li').forEach(item => item.addEventListener('click', () => {{
  chosen = chosen === item.dataset.category ? null : item.dataset.category;
  document.querySelectorAll('circle').forEach(dot =>
    dot.classList.toggle('dim', chosen !== null && dot.dataset.category !== chosen));
  document.querySelectorAll('#legend li').forEach(other =>
    other.classList.toggle('off', chosen !== null && other.dataset.category !== chosen));
}}));
</script></body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")


def main(argv: list[str] | None = None, *, store: Store | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clusters", type=int, help="number of clusters (default: best silhouette, 2-12)")
    parser.add_argument("--category", help="only this category")
    parser.add_argument(
        "--limit", type=int, default=5000, help="at most this many images (t-SNE is O(n log n))"
    )
    parser.add_argument("--png", type=Path, default=REPO_ROOT / "docs" / "img" / "cluster_map.png")
    parser.add_argument("--html", type=Path, help="also write the interactive page here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--catalogue",
        choices=("sample", "fashion", "stamps"),
        default="sample",
        help="the demo catalogue the thumbnails come from (make demo ARGS=--catalogue ...)",
    )
    args = parser.parse_args(argv)

    if store is None:
        from lookalike_local.embedded_db import ensure_database_url

        ensure_database_url()
        store = get_store()
    images, vectors = store.embeddings(category=args.category, limit=args.limit)
    if len(images) == 0:
        print("no embedded images in the store", file=sys.stderr)
        return 1
    cluster_map = build_map(images, vectors, k=args.clusters, seed=args.seed)
    thumbnails = Thumbnails(args.catalogue)
    title = f"{len(images)} images, {cluster_map.k} clusters (t-SNE of the embeddings)"
    draw_png(cluster_map, thumbnails, args.png, title)
    if args.html:
        write_html(cluster_map, thumbnails, args.html, title)
    result = summary(cluster_map) | {"png": str(args.png), "html": str(args.html) if args.html else None}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "lookalike-cluster-map")
    sys.exit(main())
