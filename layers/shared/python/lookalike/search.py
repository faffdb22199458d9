"""The query use cases: "which products look like this photo / like this product?".

HTTP lives in functions/query and ranking in `lookalike.store.search`; this module decodes, embeds
and asks, so the same calls serve the API, the local stack and the benchmarks.
"""

from __future__ import annotations

from lookalike.images import decode_image
from lookalike.model.embedder import Embedder
from lookalike.settings import Settings
from lookalike.store import Neighbour, SearchParameters, VectorSearch


class ProductNotFoundError(LookupError):
    """No embedded image of this product is stored."""


def search_by_image(
    data: bytes,
    parameters: SearchParameters,
    *,
    embedder: Embedder,
    search: VectorSearch,
    settings: Settings,
) -> list[Neighbour]:
    """Nearest products to an uploaded photo; raises `ImageRejected` for a bad image."""
    decoded = decode_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    return search.nearest(embedder.embed([decoded.image]).vectors[0], parameters)


def similar_products(
    product_id: str, parameters: SearchParameters, *, search: VectorSearch
) -> list[Neighbour]:
    """Nearest other products to a catalogued one; raises `ProductNotFoundError`."""
    neighbours = search.similar_to_product(product_id, parameters)
    if neighbours is None:
        raise ProductNotFoundError(product_id)
    return neighbours
