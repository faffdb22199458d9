"""Exact search for `bench_scale.py`: every cosine distance, in chunks, one result per product.

The truth a recall is measured against: what the store would return with a perfect index. The
query of a product is the normalised mean of its stored (halfvec) embeddings, the product itself
excluded, its best image standing for it (lookalike.store.search).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from bench_query import first_other_products

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
CHUNK = 100_000


class ExactProducts:
    def __init__(
        self,
        vectors: npt.NDArray[np.float16],
        product: IntArray,
        category: IntArray,
        name: Callable[[int], str],
    ) -> None:
        self.vectors = vectors
        self.product = product
        self.category = category
        self.name = name
        order = np.argsort(product, kind="stable")
        starts = np.searchsorted(product[order], np.arange(int(product.max()) + 2))
        self._order, self._starts = order, starts

    def rows_of(self, product: int) -> IntArray:
        return self._order[self._starts[product] : self._starts[product + 1]]

    def query_vector(self, product: int) -> FloatArray:
        mean = self.vectors[self.rows_of(product)].astype(np.float32).mean(axis=0)
        return (mean / np.linalg.norm(mean)).astype(np.float16).astype(np.float32)

    def top_products(self, products: list[int], *, k: int, category: int | None = None) -> list[list[str]]:
        queries = np.stack([self.query_vector(p) for p in products])
        found = self._top(queries, k=k, exclude=products, category=category)
        return [[self.name(p) for p in row] for row in found]

    def top_products_of_vector(self, vector: FloatArray, *, k: int) -> list[int]:
        query = (vector / np.linalg.norm(vector)).astype(np.float16).astype(np.float32)
        return self._top(query[None, :], k=k, exclude=[-1], category=None)[0]

    def _top(
        self, queries: FloatArray, *, k: int, exclude: list[int], category: int | None
    ) -> list[list[int]]:
        rows = np.arange(len(self.vectors)) if category is None else np.flatnonzero(self.category == category)
        keep = min(len(rows), 20 * k)
        candidates: list[list[tuple[float, int]]] = [[] for _ in exclude]
        for start in range(0, len(rows), CHUNK):
            chunk_rows = rows[start : start + CHUNK]
            chunk = self.vectors[chunk_rows].astype(np.float32)
            chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
            scores = chunk @ queries.T  # (rows, queries)
            here = min(keep, len(chunk_rows))
            top = np.argpartition(-scores, here - 1, axis=0)[:here]
            for column in range(len(exclude)):
                candidates[column].extend(
                    zip(
                        scores[top[:, column], column].tolist(),
                        chunk_rows[top[:, column]].tolist(),
                        strict=True,
                    )
                )
        result = []
        for column, excluded in enumerate(exclude):
            ranked = sorted(candidates[column], key=lambda pair: -pair[0])
            result.append(first_other_products((int(self.product[row]) for _, row in ranked), excluded, k))
        return result
