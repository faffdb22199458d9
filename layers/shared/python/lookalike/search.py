"""The query use cases: "which products look like this photo / like this product?".

HTTP lives in functions/query and ranking in `lookalike.store.search`; this module decodes, embeds
and asks, so the same calls serve the API, the local stack and the benchmarks.

Every search uses the registry's active model: the photo is embedded with that model's embedder
and only that model's vectors are searched (`SearchResult.model` says which one), so a switch
(`scripts/models.py activate` / `rollback`) takes effect on the next query and a ranking never
mixes two models. The process remembers the active model; each search checks, in its own
statement, that it still is, and on a switch embeds again with the new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
from lookalike.store.search import ModelNoLongerActiveError
from lookalike.suggestions import VOTE_K, CategorySuggestion, vote

# A switch noticed by a search is followed by one more try with the new active model; two
# switches within one query's milliseconds end in the error (a 503 to try again).
SWITCH_RETRIES = 1
# Products a search by photo asks for to make its suggested categories: VOTE_K categorised ones,
# with room for neighbours without a category (which do not vote).
SUGGESTION_POOL = 2 * VOTE_K


class ProductNotFoundError(LookupError):
    """No embedded image of this product is stored."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    neighbours: list[Neighbour]
    model: ModelRef  # the model whose vectors were searched (the response's model_version)
    # Search by photo only: the vote of the photo's nearest categorised products, best first.
    suggested_categories: list[CategorySuggestion] = field(default_factory=list)


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
    for attempt in range(SWITCH_RETRIES + 1):
        model = _active(search)
        vector = embedder_for(model.version).embed([decoded.image]).vectors[0]
        # Without filters the results' own neighbours vote: one search, for at least
        # SUGGESTION_POOL products (the response keeps the first k). A filter would decide the
        # vote, so a filtered search asks once more, unfiltered (docs/API.md, "Suggested categories").
        unfiltered = parameters.category is None and parameters.min_similarity is None
        asked = replace(parameters, k=max(parameters.k, SUGGESTION_POOL)) if unfiltered else parameters
        try:
            # The search answers only while `model` is still the active one, so the photo's vector
            # and the catalogue's are always of the same model, the active one.
            neighbours = search.nearest(vector, asked, model=model, while_active=True)
        except ModelNoLongerActiveError:
            if attempt == SWITCH_RETRIES:
                raise
            continue
        voters = (
            neighbours
            if unfiltered
            else search.nearest(vector, SearchParameters(k=SUGGESTION_POOL), model=model)
        )
        suggestions = vote((neighbour.category, neighbour.similarity) for neighbour in voters)
        return SearchResult(neighbours[: parameters.k], model, suggestions)
    raise AssertionError("unreachable")  # pragma: no cover


def similar_products(product_id: str, parameters: SearchParameters, *, search: VectorSearch) -> SearchResult:
    """Nearest other products to a catalogued one, by the active model; raises
    `ProductNotFoundError`."""
    for attempt in range(SWITCH_RETRIES + 1):
        model = _active(search)
        try:
            neighbours = search.similar_to_product(product_id, parameters, model=model, while_active=True)
        except ModelNoLongerActiveError:
            if attempt == SWITCH_RETRIES:
                raise
            continue
        if neighbours is None:
            raise ProductNotFoundError(product_id)
        return SearchResult(neighbours, model)
    raise AssertionError("unreachable")  # pragma: no cover


def _active(search: VectorSearch) -> ModelRef:
    model = search.active_model()
    if model is None:
        search.forget_active_model()  # a later query finds the bootstrap's model
        raise NoActiveModelError("no model is active: register and activate one (scripts/models.py)")
    return model


def registry_status(search: VectorSearch) -> list[dict[str, Any]]:
    """Each non-retired model's version, state and coverage (GET /health)."""
    return ModelRegistry(search.store).status()
