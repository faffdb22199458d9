"""S3's order of events for one key: the sequencer rule, in one place.

S3 delivers notifications at least once and unordered; `s3.object.sequencer` (PUT and DELETE
only) orders the events of one key: right-pad the shorter hex string with zeros, then compare,
larger is later. Events without a usable sequencer (moto, some published samples with non-hex
placeholders) fall back to the event time. The store's write guard applies the same rule in SQL.
"""

from __future__ import annotations

import re
from typing import Final

from lookalike.ports import EventOrder

# Stored right-padded to this width, so that plain string comparison is S3's rule. Longer values
# are kept whole; the SQL guard pads both sides to the longer one.
SEQUENCER_WIDTH: Final = 64

_HEX = re.compile(r"[0-9A-Fa-f]+")


def normalise_sequencer(raw: str | None) -> str | None:
    """S3's sequencer in a form whose string order is S3's order for one key, or None.

    Upper-case hex right-padded with '0' to SEQUENCER_WIDTH (longer values are kept whole).
    Anything that is not a hex string gives None: the store then orders by event time. Never raises.
    """
    if not isinstance(raw, str):
        return None
    value = raw.strip()
    if not _HEX.fullmatch(value):
        return None
    return value.upper().ljust(SEQUENCER_WIDTH, "0")


def compare_orders(left: EventOrder, right: EventOrder) -> int:
    """-1, 0 or 1 as `left` is older than, as old as, or newer than `right` (events of one key)."""
    left_sequencer = normalise_sequencer(left.sequencer)
    right_sequencer = normalise_sequencer(right.sequencer)
    if left_sequencer is not None and right_sequencer is not None:
        width = max(len(left_sequencer), len(right_sequencer))
        a, b = left_sequencer.ljust(width, "0"), right_sequencer.ljust(width, "0")
        return (a > b) - (a < b)
    return (left.event_time > right.event_time) - (left.event_time < right.event_time)
