"""A large, realistic catalogue for benchmarks: real embeddings plus synthetic neighbours.

Real pooled CNN features are non-negative (ReLU6 before the pool) and clustered by what the
photos show. The synthetic rows keep both properties: each is a real photo's embedding (or a
mixture of two, for the space between clusters) plus noise of varying strength, clipped at zero
and L2-normalised. Categories follow the clusters, as a shop's categories follow what the
products look like. Rows are bulk-loaded with COPY BINARY and the HNSW index is built after
the load (ANCHORS: ~34 s at 100k halfvec; building it row by row is several times slower).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from lookalike.embedder import Embedder
from lookalike.store import Store
from lookalike_local.catalogue import catalogue

BENCH_BUCKET = "bench-catalogue"
CATEGORIES = 20
HNSW_INDEX = "images_embedding_hnsw"


@dataclass(frozen=True, slots=True)
class SyntheticCatalogue:
    vectors: npt.NDArray[np.float32]  # [n, 1280], unit rows, as stored (rounded to float16)
    product_ids: list[str]
    categories: list[str]
    seed_vectors: npt.NDArray[np.float32]  # the real embeddings the rest is built around


def real_embeddings(embedder: Embedder) -> npt.NDArray[np.float32]:
    """Embeddings of every decodable photo of the local sample catalogue (real pixels)."""
    from lookalike.images import ImageRejected, decode_image

    images = []
    for item in catalogue():
        try:
            images.append(decode_image(item.body(), max_bytes=50 * 2**20, max_pixels=10**8).image)
        except ImageRejected:
            continue  # the deliberately broken sample
    return embedder.embed(images)


def make_catalogue(seed_vectors: npt.NDArray[np.float32], n: int, *, seed: int = 7) -> SyntheticCatalogue:
    rng = np.random.default_rng(seed)
    count, dim = seed_vectors.shape
    # Cluster centres: the real photos, and mixtures of two of them.
    pairs = rng.integers(0, count, size=(count * 3, 2))
    weights = rng.uniform(0.2, 0.8, size=(len(pairs), 1)).astype(np.float32)
    mixtures = weights * seed_vectors[pairs[:, 0]] + (1 - weights) * seed_vectors[pairs[:, 1]]
    centres = np.concatenate([seed_vectors, mixtures]).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    vectors = np.empty((n, dim), dtype=np.float32)
    vectors[:count] = seed_vectors
    cluster = rng.integers(0, len(centres), size=n)
    cluster[:count] = np.arange(count)
    batch = 20_000
    for start in range(count, n, batch):
        stop = min(n, start + batch)
        # Noise from "a near copy" to "same kind of thing": cosine to the centre ~0.95 .. ~0.5.
        strength = rng.uniform(0.3, 1.6, size=(stop - start, 1)).astype(np.float32)
        noise = rng.standard_normal((stop - start, dim)).astype(np.float32) / np.sqrt(dim)
        rows = np.maximum(centres[cluster[start:stop]] + strength * noise, 0.0)
        vectors[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    vectors = vectors.astype(np.float16).astype(np.float32)  # what halfvec stores
    # One product per row, except that every tenth product has a second image.
    product_ids = [f"p{index:07d}" for index in range(n)]
    for index in range(count + 1, n, 10):
        product_ids[index] = product_ids[index - 1]
    categories = [f"category-{c % CATEGORIES:02d}" for c in cluster]
    return SyntheticCatalogue(vectors, product_ids, categories, seed_vectors)


def stored_count(url: str) -> int:
    """Embedded benchmark rows already in the database (0 on a fresh one)."""
    store = Store(url)
    store.migrate()
    store.close()
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM images WHERE bucket = %s AND status = 'embedded'", (BENCH_BUCKET,)
        ).fetchone()
        return int(row[0]) if row else 0


def load_catalogue(url: str, data: SyntheticCatalogue, model_version: str) -> float:
    """Replace the table's content with `data` (COPY BINARY, then HNSW); return seconds."""
    import time

    started = time.perf_counter()
    store = Store(url)
    store.migrate()
    store.close()
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as connection:
        register_vector(connection)
        index_definition = connection.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (HNSW_INDEX,)
        ).fetchone()
        assert index_definition is not None, "the schema has no HNSW index"
        connection.execute(f"DROP INDEX IF EXISTS {HNSW_INDEX}")
        connection.execute("TRUNCATE images, rejections")
        with (
            connection.cursor() as cursor,
            cursor.copy(
                "COPY images (bucket, key, status, product_id, category, etag, size_bytes, width, height,"
                " event_time, model_version, embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(
                ["text", "text", "text", "text", "text", "text", "int8", "int4", "int4",
                 "timestamptz", "text", "halfvec"]
            )  # fmt: skip
            for index, vector in enumerate(data.vectors):
                copy.write_row(
                    (
                        BENCH_BUCKET,
                        f"products/{data.categories[index]}/{data.product_ids[index]}/{index}.jpg",
                        "embedded",
                        data.product_ids[index],
                        data.categories[index],
                        f"etag-{index}",
                        250_000,
                        1200,
                        900,
                        now,
                        model_version,
                        HalfVector(vector),
                    )
                )
        # Building the graph needs the whole index in memory to be fast (~400 MB at 100k).
        connection.execute("SET maintenance_work_mem = '1GB'")
        connection.execute("SET max_parallel_maintenance_workers = 1")
        connection.execute(index_definition[0])
        connection.execute("VACUUM ANALYZE images")
    return time.perf_counter() - started
