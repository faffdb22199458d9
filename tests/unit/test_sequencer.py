"""normalise_sequencer: S3's ordering rule for one key, as plain string comparison."""

from __future__ import annotations

import random

import pytest

from lookalike.ordering import SEQUENCER_WIDTH, normalise_sequencer


def s3_order(left: str, right: str) -> int:
    """AWS's documented rule: right-pad the shorter hex string with zeros, then compare."""
    width = max(len(left), len(right))
    a, b = left.upper().ljust(width, "0"), right.upper().ljust(width, "0")
    return (a > b) - (a < b)


def normalised_order(left: str, right: str) -> int:
    a, b = normalise_sequencer(left), normalise_sequencer(right)
    assert a is not None
    assert b is not None
    width = max(len(a), len(b))  # what the SQL guard does for values longer than the width
    a, b = a.ljust(width, "0"), b.ljust(width, "0")
    return (a > b) - (a < b)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0055AED6DCD90281E5", "0055AED6DCD90281E5".ljust(SEQUENCER_WIDTH, "0")),
        ("0055aed6dcd90281e5", "0055AED6DCD90281E5".ljust(SEQUENCER_WIDTH, "0")),
        # A published sample's placeholder that happens to be valid hex: accepted.
        ("0C0F6F405D6ED209E1", "0C0F6F405D6ED209E1".ljust(SEQUENCER_WIDTH, "0")),
        (" 0A1B ", "0A1B".ljust(SEQUENCER_WIDTH, "0")),
        ("F" * 70, "F" * 70),  # longer than the width: kept whole
    ],
)
def test_hex_sequencers_are_upper_cased_and_right_padded(raw: str, expected: str) -> None:
    assert normalise_sequencer(raw) == expected


@pytest.mark.parametrize(
    "raw", [None, "", "   ", "sequencer", "Happy Sequencer", "0x0A1B", "0A-1B", "0A 1B", "١٢٣", "0A1G"]
)
def test_anything_but_hex_gives_none(raw: str | None) -> None:
    assert normalise_sequencer(raw) is None


def test_never_raises_on_values_of_the_wrong_type() -> None:
    for raw in (12345, 1.5, b"0A1B", ["0A"], {"s": "0A"}):
        assert normalise_sequencer(raw) is None  # type: ignore[arg-type]


def test_different_lengths_compare_as_right_padded() -> None:
    short, padded, longer = "0055AED6DCD90281E5", "0055AED6DCD90281E500", "0055AED6DCD90281E501"
    assert normalise_sequencer(short) == normalise_sequencer(padded)  # the same event
    assert normalised_order(longer, short) == 1
    assert normalised_order("0055AED6DCD90281E4FF", short) == -1
    # Unpadded string comparison would get this one wrong ("0A1B" < "0A1B00" but they are equal).
    assert normalised_order("0A1B", "0A1B00") == 0


def test_string_order_of_normalised_values_is_s3_order() -> None:
    rng = random.Random(20261129)
    alphabet = "0123456789ABCDEFabcdef"
    for _ in range(2000):
        left = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        # Often a prefix of / an extension of the other: where padding matters.
        if rng.random() < 0.5:
            right = left[: rng.randint(1, len(left))] + "0" * rng.randint(0, 4)
        else:
            right = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        assert normalised_order(left, right) == s3_order(left, right), (left, right)
