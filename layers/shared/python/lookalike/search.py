"""The query use cases: "which products look like this photo / like this product?".

HTTP lives in functions/query and ranking in `lookalike.store.search`; this module decodes, embeds
and asks, so the same calls serve the API, the local stack and the benchmarks.

Every search uses the registry's active model: the photo is embedded with that model's embedder
and only that model's vectors are searched (`SearchResult.model` says which one), so a switch
(`scripts/models.py activate` / `rollback`) takes effect on the next query and a ranking never
mixes two models. The process remembers the active model; each search checks, in its own
statement, that it still is, and on a switch embeds again with the new one. The answer carries
that model's match-level cut-offs (`lookalike.matches`), by which `min_match` bounds the search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lookalike.images import decode_image
from lookalike.matches import MatchCutoffs, MatchLevel, MatchLevelsUnavailableError, at_least, match_cutoffs
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
    cutoffs: MatchCutoffs | None = None  # that model's match levels (None: not calibrated)
    # Search by photo only: the vote of the photo's nearest categorised products, best first.
    suggested_categories: list[CategorySuggestion] = field(default_factory=list)


CutoffsFor = Callable[[str], MatchCutoffs | None]


def _with_min_match(
    parameters: SearchParameters, min_match: MatchLevel | None, cutoffs: MatchCutoffs | None, version: str
) -> SearchParameters:
    """The search's similarity floor raised to `min_match`'s cut-off, so that the database returns
    k results at that level or above (not k results of which some are then dropped)."""
    if min_match is None or min_match == "weak":
        return parameters
    if cutoffs is None:
        raise MatchLevelsUnavailableError(
            f"model {version} has no calibrated match levels (scripts/calibrate_matches.py --write-card): "
            "filter with min_similarity instead"
        )
    floor = cutoffs.floor(min_match)
    if floor is None or (parameters.min_similarity is not None and parameters.min_similarity >= floor):
        return parameters
    return replace(parameters, min_similarity=floor)


def _result(
    neighbours: list[Neighbour], model: ModelRef, cutoffs: MatchCutoffs | None, min_match: MatchLevel | None
) -> SearchResult:
    if cutoffs is not None and min_match is not None:
        # The database filters by distance <= 1 - floor and a result's similarity is 1 - distance,
        # both in floating point: one exactly at the floor may come back a rounding error below
        # it, and must not be shown under a level the request excluded.
        neighbours = [n for n in neighbours if at_least(cutoffs.level(n.similarity), min_match)]
    return SearchResult(neighbours, model, cutoffs)


def search_by_image(
    data: bytes,
    parameters: SearchParameters,
    *,
    search: VectorSearch,
    settings: Settings,
    embedder_for: Callable[[str], Embedder] = get_embedder,
    min_match: MatchLevel | None = None,
    cutoffs_for: CutoffsFor = match_cutoffs,
) -> SearchResult:
    """Nearest products to an uploaded photo, by the active model; raises `ImageRejected` for a
    bad image, `NoActiveModelError` before any model is active, `MatchLevelsUnavailableError` for
    a `min_match` the model has no levels for."""
    decoded = decode_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    for attempt in range(SWITCH_RETRIES + 1):
        model = _active(search)
        cutoffs = cutoffs_for(model.version)
        bounded = _with_min_match(parameters, min_match, cutoffs, model.version)
        vector = embedder_for(model.version).embed([decoded.image]).vectors[0]
        # Without filters the results' own neighbours vote: one search, for at least
        # SUGGESTION_POOL products (the response keeps the first k). A filter would decide the
        # vote, so a filtered search asks once more, unfiltered (docs/API.md, "Suggested categories").
        unfiltered = bounded.category is None and bounded.min_similarity is None
        asked = replace(bounded, k=max(bounded.k, SUGGESTION_POOL)) if unfiltered else bounded
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
        result = _result(neighbours[: parameters.k], model, cutoffs, min_match)
        return replace(result, suggested_categories=suggestions)
    raise AssertionError("unreachable")  # pragma: no cover


def similar_products(
    product_id: str,
    parameters: SearchParameters,
    *,
    search: VectorSearch,
    min_match: MatchLevel | None = None,
    cutoffs_for: CutoffsFor = match_cutoffs,
) -> SearchResult:
    """Nearest other products to a catalogued one, by the active model; raises
    `ProductNotFoundError`, or `MatchLevelsUnavailableError` as search_by_image does."""
    for attempt in range(SWITCH_RETRIES + 1):
        model = _active(search)
        cutoffs = cutoffs_for(model.version)
        asked = _with_min_match(parameters, min_match, cutoffs, model.version)
        try:
            neighbours = search.similar_to_product(product_id, asked, model=model, while_active=True)
        except ModelNoLongerActiveError:
            if attempt == SWITCH_RETRIES:
                raise
            continue
        if neighbours is None:
            raise ProductNotFoundError(product_id)
        return _result(neighbours, model, cutoffs, min_match)
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
