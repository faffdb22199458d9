"""Which variant a tuned model's card defaults to when its int8/fp32 cosine misses the gate:
retrieval on the held-out part decides, within INT8_RETRIEVAL_TOLERANCE of fp32 on both metrics."""

from __future__ import annotations

import pytest

from lookalike_tuning.pipeline import INT8_RETRIEVAL_TOLERANCE, int8_keeps_retrieval

pytestmark = pytest.mark.unit

FP32 = {"category_map_at_10": 0.86, "neardup_recall_at_1": 0.914}


@pytest.mark.parametrize(
    ("int8", "kept"),
    [
        ({"category_map_at_10": 0.861, "neardup_recall_at_1": 0.908}, True),  # as measured on Fashion-MNIST
        ({"category_map_at_10": 0.86 - INT8_RETRIEVAL_TOLERANCE, "neardup_recall_at_1": 0.914}, True),
        ({"category_map_at_10": 0.84, "neardup_recall_at_1": 0.914}, False),
        ({"category_map_at_10": 0.86, "neardup_recall_at_1": 0.90}, False),
    ],
)
def test_int8_stays_the_default_only_if_it_ranks_as_well(int8: dict[str, float], kept: bool) -> None:
    assert int8_keeps_retrieval(FP32, int8) is kept
