"""The query use cases: "which products look like this photo / like this product?".

HTTP lives in functions/query; this module only decodes, embeds and asks the store, so the
same calls serve the API, the local stack and the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.images import decode_image
from lookalike.model.embedder import Embedder
from lookalike.settings import Settings
from lookalike.store import Neighbour, Store

MAX_K = 100


class ProductNotFoundError(LookupError):
    """No embedded image of this product is stored."""


@dataclass(frozen=True, slots=True)
class SearchParameters:
    k: int = 10
    category: str | None = None
    min_similarity: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {self.k}")
        if self.min_similarity is not None and not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be between -1 and 1, got {self.min_similarity}")


def search_by_image(
    data: bytes, parameters: SearchParameters, *, embedder: Embedder, store: Store, settings: Settings
) -> list[Neighbour]:
    """Nearest products to an uploaded photo; raises `ImageRejected` for a bad image."""
    decoded = decode_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    embedding = embedder.embed([decoded.image]).vectors[0]
    return store.search(
        embedding, k=parameters.k, category=parameters.category, min_similarity=parameters.min_similarity
    )


def similar_products(product_id: str, parameters: SearchParameters, *, store: Store) -> list[Neighbour]:
    """Nearest other products to a catalogued one; raises `ProductNotFoundError`."""
    neighbours = store.similar_to_product(
        product_id, k=parameters.k, category=parameters.category, min_similarity=parameters.min_similarity
    )
    if neighbours is None:
        raise ProductNotFoundError(product_id)
    return neighbours
