"""The query use cases: "which products look like this photo / like this product?".

HTTP lives in functions/query and ranking in `lookalike.store.search`; this module decodes, embeds
and asks, so the same calls serve the API, the local stack and the benchmarks.

Every search uses the registry's active model: the photo is embedded with that model's embedder
and only that model's vectors are searched (`SearchResult.model` says which one), so a switch
(`scripts/models.py activate` / `rollback`) takes effect on the next query and a ranking never
mixes two models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lookalike.images import decode_image
from lookalike.model.embedder import Embedder, get_embedder
from lookalike.settings import Settings
from lookalike.store import (
    ModelRef,
    ModelRegistry,
    Neighbour,
    NoActiveModelError,
    SearchParameters,
    VectorSearch,
)


class ProductNotFoundError(LookupError):
    """No embedded image of this product is stored."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    neighbours: list[Neighbour]
    model: ModelRef  # the model whose vectors were searched (the response's model_version)


def search_by_image(
    data: bytes,
    parameters: SearchParameters,
    *,
    search: VectorSearch,
    settings: Settings,
    embedder_for: Callable[[str], Embedder] = get_embedder,
) -> SearchResult:
    """Nearest products to an uploaded photo, by the active model; raises `ImageRejected` for a
    bad image, `NoActiveModelError` before any model is active."""
    decoded = decode_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    model = search.active_model()
    if model is None:
        raise NoActiveModelError("no model is active: register and activate one (scripts/models.py)")
    vector = embedder_for(model.version).embed([decoded.image]).vectors[0]
    # The model is named explicitly: a switch between the two calls cannot mix the photo's
    # vector of one model with the catalogue's of another.
    return SearchResult(search.nearest(vector, parameters, model=model), model)


def similar_products(product_id: str, parameters: SearchParameters, *, search: VectorSearch) -> SearchResult:
    """Nearest other products to a catalogued one, by the active model; raises
    `ProductNotFoundError`."""
    model = search.active_model()
    if model is None:
        raise NoActiveModelError("no model is active: register and activate one (scripts/models.py)")
    neighbours = search.similar_to_product(product_id, parameters, model=model)
    if neighbours is None:
        raise ProductNotFoundError(product_id)
    return SearchResult(neighbours, model)


def registry_status(search: VectorSearch) -> list[dict[str, Any]]:
    """Each non-retired model's version, state and coverage (GET /health)."""
    return ModelRegistry(search.store).status()
