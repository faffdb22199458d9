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


def trim_uniform_border(image: Image.Image) -> Image.Image:
    """The image without its near-uniform border, or the image itself when there is none."""
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((SEARCH_SIDE, SEARCH_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(thumbnail, dtype=np.int16)
    height, width = pixels.shape[:2]
    if height < 8 or width < 8:
        return image
    corners = np.stack([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])
    colour = np.median(corners, axis=0)
    if np.abs(corners - colour).max() > COLOUR_TOLERANCE:
        return image
    is_border = np.abs(pixels - colour).max(axis=2) <= COLOUR_TOLERANCE
    rows = _border_lines(is_border, axis=1)
    columns = _border_lines(is_border, axis=0)
    # One thumbnail line of margin on every trimmed side: the last border line may hold the
    # object's anti-aliased edge.
    top = max(0, _leading(rows) - 1)
    bottom = height - max(0, _leading(rows[::-1]) - 1)
    left = max(0, _leading(columns) - 1)
    right = width - max(0, _leading(columns[::-1]) - 1)
    if (top, bottom, left, right) == (0, height, 0, width):
        return image
    if bottom - top < MIN_KEPT_FRACTION * height or right - left < MIN_KEPT_FRACTION * width:
        return image
    scale_x, scale_y = image.width / width, image.height / height
    box = (
        int(np.floor(left * scale_x)),
        int(np.floor(top * scale_y)),
        min(image.width, int(np.ceil(right * scale_x))),
        min(image.height, int(np.ceil(bottom * scale_y))),
    )
    return image.crop(box)
