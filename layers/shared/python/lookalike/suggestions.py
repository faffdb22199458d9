"""Suggested categories: which category an image probably belongs to, from its neighbours.

A similarity-weighted vote of the nearest categorised products: each of the `k` nearest
neighbours that has a category gives it the weight similarity ** `power` (a negative similarity
counts as 0), and a category's confidence is its share of the total weight, in [0, 1]. A
confidence of 1 says every voter agrees, not that the answer is certain; how often a suggestion at
a given confidence is right was measured on held-out labelled data (`scripts/eval_suggestions.py`,
docs/BENCHMARKS.md "Suggested categories"), which is where VOTE_K, VOTE_POWER and
CONFIDENT_AT come from.

Pure: no database, no model. The query function feeds it the neighbours of a search photo, the
ingest writes the vote of an uploaded image without a category, and the benchmark feeds it
neighbours computed in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

# Chosen by measurement on held-out labelled data (`make eval-suggestions`, docs/BENCHMARKS.md
# "Suggested categories"): the k and power whose confidence covers the most images at the
# threshold that keeps the top suggestion's precision >= 90 % in both labelled sets.
VOTE_K: Final = 10
VOTE_POWER: Final = 4.0
# That threshold: a suggestion at or above it is marked `confident`.
CONFIDENT_AT: Final = 0.65


@dataclass(frozen=True, slots=True)
class CategorySuggestion:
    category: str
    confidence: float  # the category's share of the vote, in [0, 1]


def vote(
    neighbours: Iterable[tuple[str | None, float]], *, k: int = VOTE_K, power: float = VOTE_POWER
) -> list[CategorySuggestion]:
    """Categories by confidence (highest first, then by name) from `neighbours`: (category,
    cosine similarity) pairs, nearest first, one per product. Neighbours without a category do
    not vote and do not count towards k; an empty list when no neighbour has a category or every
    voter's weight is 0."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    weights: dict[str, float] = {}
    voters = 0
    for category, similarity in neighbours:
        if category is None:
            continue
        weights[category] = weights.get(category, 0.0) + max(similarity, 0.0) ** power
        voters += 1
        if voters == k:
            break
    total = sum(weights.values())
    if total <= 0.0:
        return []
    ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))
    return [
        CategorySuggestion(category, min(weight / total, 1.0)) for category, weight in ranked if weight > 0
    ]


def is_confident(suggestion: CategorySuggestion, threshold: float = CONFIDENT_AT) -> bool:
    return suggestion.confidence >= threshold
