"""The domain -> view conversions: what the query function answers, built from what the domain
found (the views themselves are in views.py)."""

from collections.abc import Iterable

# isort: split
# The function's own modules: Lambda puts the function's folder on sys.path.
from domain import (
    CONFIDENT_AT,
    CategorySuggestion,
    DuplicatePage,
    MatchCutoffs,
    Neighbour,
    StoredImage,
    UncategorisedImage,
)
from views import (
    DuplicateGroupView,
    DuplicateMemberView,
    DuplicatesResponse,
    MatchCutoffsView,
    PhotoSearchResponse,
    ProductResponse,
    SearchResponse,
    SearchResult,
    StoredImageView,
    SuggestedCategory,
    UncategorisedImageView,
    UncategorisedResponse,
)


def search_response(
    neighbours: Iterable[Neighbour], model_version: str, cutoffs: MatchCutoffs | None = None
) -> SearchResponse:
    results = [
        SearchResult(
            product_id=n.product_id,
            key=n.key,
            category=n.category,
            similarity=round(n.similarity, 6),
            distance=round(n.distance, 6),
            width=n.width,
            height=n.height,
            # From the unrounded similarity: the level the search filtered by.
            match=None if cutoffs is None else cutoffs.level(n.similarity),
        )
        for n in neighbours
    ]
    return SearchResponse(
        results=results,
        count=len(results),
        model_version=model_version,
        match_cutoffs=None if cutoffs is None else MatchCutoffsView(**cutoffs.as_dict()),
    )


def product_response(product_id: str, images: list[StoredImage]) -> ProductResponse:
    return ProductResponse(
        product_id=product_id,
        category=images[0].category,
        model_versions=sorted({version for image in images for version in image.model_versions}),
        images=[
            StoredImageView(
                key=image.key,
                category=image.category,
                width=image.width,
                height=image.height,
                size_bytes=image.size_bytes,
                etag=image.etag,
                model_versions=list(image.model_versions),
                updated_at=image.updated_at.isoformat(),
            )
            for image in images
        ],
    )


def duplicates_response(page: DuplicatePage, *, threshold: float, category: str | None) -> DuplicatesResponse:
    groups = [
        DuplicateGroupView(
            anchor_key=group.anchor.key,
            size=len(group.members),
            products=group.products,
            max_similarity=round(group.max_similarity, 4),
            min_similarity=round(group.min_similarity, 4),
            members=[
                DuplicateMemberView(
                    key=member.image.ref.key,
                    product_id=member.image.product_id,
                    category=member.image.category,
                    width=member.image.width,
                    height=member.image.height,
                    similarity=round(member.similarity, 4),
                )
                for member in group.members
            ],
        )
        for group in page.groups
    ]
    return DuplicatesResponse(
        groups=groups,
        count=len(groups),
        threshold=threshold,
        category=category,
        scanned=page.scanned,
        next_cursor=page.next_cursor,
    )


def suggested_categories(suggestions: Iterable[CategorySuggestion]) -> list[SuggestedCategory]:
    return [
        SuggestedCategory(
            category=s.category, confidence=round(s.confidence, 4), confident=s.confidence >= CONFIDENT_AT
        )
        for s in suggestions
    ]


def photo_search_response(
    response: SearchResponse, suggestions: Iterable[CategorySuggestion]
) -> PhotoSearchResponse:
    """A search-by-photo answer: the search response with the photo's suggested categories."""
    return PhotoSearchResponse.model_validate(
        {**response.model_dump(), "suggested_categories": suggested_categories(suggestions)}
    )


def uncategorised_response(
    images: list[UncategorisedImage], next_cursor: str | None
) -> UncategorisedResponse:
    return UncategorisedResponse(
        images=[
            UncategorisedImageView(
                key=image.ref.key,
                product_id=image.product_id,
                width=image.width,
                height=image.height,
                suggested_categories=suggested_categories(image.suggestions),
                model_version=image.model_version,
            )
            for image in images
        ],
        count=len(images),
        confident_at=CONFIDENT_AT,
        next_cursor=next_cursor,
    )
