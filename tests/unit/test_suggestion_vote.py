"""The suggested-category vote (lookalike.suggestions): a pure function, checked on hand-made
neighbour lists whose answers follow from the definition."""

from __future__ import annotations

import pytest

from lookalike.suggestions import CONFIDENT_AT, CategorySuggestion, is_confident, vote

pytestmark = pytest.mark.unit


def test_confidence_is_the_share_of_the_similarity_weighted_vote() -> None:
    ranked = vote([("shoes", 0.9), ("bags", 0.6), ("shoes", 0.5)], k=3, power=1.0)
    assert [s.category for s in ranked] == ["shoes", "bags"]
    assert ranked[0].confidence == pytest.approx(1.4 / 2.0)
    assert ranked[1].confidence == pytest.approx(0.6 / 2.0)
    assert sum(s.confidence for s in ranked) == pytest.approx(1.0)


def test_a_higher_power_favours_the_nearest_neighbour() -> None:
    neighbours = [("shoes", 0.95), ("bags", 0.6), ("bags", 0.6)]
    assert vote(neighbours, k=3, power=0.0)[0].category == "bags"  # a plain majority
    assert vote(neighbours, k=3, power=4.0)[0].category == "shoes"  # 0.81 > 2 * 0.13


def test_neighbours_without_a_category_neither_vote_nor_count_towards_k() -> None:
    ranked = vote([(None, 0.99), (None, 0.98), ("hats", 0.5), ("caps", 0.4), ("socks", 0.3)], k=2)
    assert {s.category for s in ranked} == {"hats", "caps"}


def test_only_the_first_k_voters_count() -> None:
    ranked = vote([("a", 0.9)] + [("b", 0.8)] * 5, k=1)
    assert ranked == [CategorySuggestion("a", 1.0)]


def test_nothing_to_suggest() -> None:
    assert vote([]) == []
    assert vote([(None, 0.9)]) == []
    assert vote([("a", -0.2), ("b", 0.0)], power=1.0) == []  # dissimilar neighbours carry no weight


def test_ties_are_ordered_by_name() -> None:
    ranked = vote([("b", 0.5), ("a", 0.5)], k=2, power=1.0)
    assert [s.category for s in ranked] == ["a", "b"]
    assert ranked[0].confidence == ranked[1].confidence == pytest.approx(0.5)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="k must be"):
        vote([("a", 0.5)], k=0)
    with pytest.raises(ValueError, match="power"):
        vote([("a", 0.5)], power=-1.0)


def test_confident_means_at_least_the_threshold() -> None:
    assert is_confident(CategorySuggestion("a", CONFIDENT_AT))
    assert not is_confident(CategorySuggestion("a", CONFIDENT_AT - 0.01))
    assert 0.0 < CONFIDENT_AT <= 1.0
