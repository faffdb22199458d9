"""Trim near-uniform borders (letterboxing, padding onto a plain canvas) before embedding.

Shops pad photos onto plain canvases of arbitrary size and colour; the model then sees a small
object in a sea of background and the padded copy no longer finds its original. Cropping the
plain border away (ingest and query alike) gives both the same framing.

Conservative by construction: the four corners must agree on one colour (a photo whose corners
differ is left alone), a side is only trimmed by whole rows / columns that are almost entirely
that colour, one row of margin is kept, and a crop that would leave less than MIN_KEPT_FRACTION
of either side is refused. The search runs on a thumbnail, so it costs little next to inference.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

# Side of the thumbnail the border search runs on.
SEARCH_SIDE = 128
# A pixel belongs to the border when no channel differs from the border colour by more than this
# (JPEG ringing and noise on a "plain" canvas stay well inside it).
COLOUR_TOLERANCE = 24
# A row / column is border when at least this share of its pixels are border pixels.
ROW_BORDER_SHARE = 0.98
# Never keep less than this fraction of the width or height: such a crop is more likely a
# mostly-blank picture than padding.
MIN_KEPT_FRACTION = 0.15


def _border_lines(is_border: npt.NDArray[np.bool_], axis: int) -> npt.NDArray[np.bool_]:
    """For each row (axis=1) or column (axis=0): is it (almost) all border colour?"""
    return np.asarray(is_border.mean(axis=axis) >= ROW_BORDER_SHARE)


def _leading(lines: npt.NDArray[np.bool_]) -> int:
    """How many lines at the start are border lines."""
    non_border = np.flatnonzero(~lines)
    return int(non_border[0]) if len(non_border) else len(lines)


# Padding can be nested (a white packshot pasted onto a dark canvas): look again, a few times.
MAX_PASSES = 4

Box = tuple[int, int, int, int]  # left, top, right, bottom


def trim_uniform_border(image: Image.Image) -> Image.Image:
    """The image without its near-uniform border(s), or the image itself when there is none."""
    full: Box = (0, 0, image.width, image.height)
    box, outer, line = full, full, (0.0, 0.0)
    for _ in range(MAX_PASSES):
        # After a border, look again one thumbnail line further in: the line where the border
        # met the content is a blend of both and would hide a second border behind it.
        shrink_x, shrink_y = int(np.ceil(line[0])), int(np.ceil(line[1]))
        probe = (box[0] + shrink_x, box[1] + shrink_y, box[2] - shrink_x, box[3] - shrink_y)
        if probe[2] - probe[0] < MIN_KEPT_FRACTION * image.width or (
            probe[3] - probe[1] < MIN_KEPT_FRACTION * image.height
        ):
            break
        found = _tight_box(image if probe == full else image.crop(probe))
        if found is None:
            break
        (left, top, right, bottom), found_line = found
        inner = (probe[0] + left, probe[1] + top, probe[0] + right, probe[1] + bottom)
        if inner[2] - inner[0] < MIN_KEPT_FRACTION * image.width or (
            inner[3] - inner[1] < MIN_KEPT_FRACTION * image.height
        ):
            break
        outer, box, line = probe, inner, found_line
    if box == full:
        return image
    # One thumbnail line of margin on every side, inside the innermost border: the last border
    # line may hold the object's anti-aliased edge.
    margin_x, margin_y = int(np.ceil(line[0])), int(np.ceil(line[1]))
    return image.crop(
        (
            max(outer[0], box[0] - margin_x),
            max(outer[1], box[1] - margin_y),
            min(outer[2], box[2] + margin_x),
            min(outer[3], box[3] + margin_y),
        )
    )


def _tight_box(image: Image.Image) -> tuple[Box, tuple[float, float]] | None:
    """The box inside one border of one colour (no margin) and the size of one thumbnail line in
    pixels, or None when there is no such border or trimming it would leave too little."""
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((SEARCH_SIDE, SEARCH_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(thumbnail, dtype=np.int16)
    height, width = pixels.shape[:2]
    if height < 8 or width < 8:
        return None
    corners = np.stack([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])
    colour = np.median(corners, axis=0)
    if np.abs(corners - colour).max() > COLOUR_TOLERANCE:
        return None
    is_border = np.abs(pixels - colour).max(axis=2) <= COLOUR_TOLERANCE
    rows = _border_lines(is_border, axis=1)
    columns = _border_lines(is_border, axis=0)
    top, bottom = _leading(rows), height - _leading(rows[::-1])
    left, right = _leading(columns), width - _leading(columns[::-1])
    if (top, bottom, left, right) == (0, height, 0, width):
        return None
    if bottom - top < MIN_KEPT_FRACTION * height or right - left < MIN_KEPT_FRACTION * width:
        return None
    scale_x, scale_y = image.width / width, image.height / height
    # Rounded inwards: the box holds no pixel of a border line (the margin is added at the end).
    box = (
        int(np.ceil(left * scale_x)),
        int(np.ceil(top * scale_y)),
        int(np.floor(right * scale_x)),
        int(np.floor(bottom * scale_y)),
    )
    return box, (scale_x, scale_y)
