"""The model's preprocessing: bounded work in every resize mode, whatever the aspect ratio."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike.model.card import RESIZE_MODES, ResizeMode
from lookalike.model.preprocess import resize_for_model


@pytest.fixture
def resized_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every output size Pillow is asked to resample to."""
    sizes: list[tuple[int, int]] = []
    original = Image.Image.resize

    def spy(self: Image.Image, size: Any, *args: Any, **kwargs: Any) -> Image.Image:
        sizes.append((int(size[0]), int(size[1])))
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    return sizes


@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("shape", [(1, 40_000), (40_000, 1), (3, 9_000), (640, 480)])
def test_work_is_bounded_by_the_output_size(
    resized_sizes: list[tuple[int, int]], mode: ResizeMode, shape: tuple[int, int]
) -> None:
    strip = Image.new("RGB", shape, (200, 30, 30))
    out = resize_for_model(strip, 224, mode, 0.875)
    assert out.size == (224, 224)
    # Before the fix, center_crop scaled a 1 x 40000 strip to 256 x 10,240,000 pixels first.
    assert all(width * height <= 224 * 224 for width, height in resized_sizes), resized_sizes


def test_center_crop_is_the_central_square_scaled(chelsea_like: Image.Image) -> None:
    """Cutting the square from the source equals scaling first and cutting after (the old way)."""
    crop = resize_for_model(chelsea_like, 224, "center_crop", 0.875)
    short = round(224 / 0.875)
    scale = short / min(chelsea_like.size)
    scaled = chelsea_like.resize(
        (round(chelsea_like.width * scale), round(chelsea_like.height * scale)), Image.Resampling.BILINEAR
    )
    left, top = (scaled.width - 224) // 2, (scaled.height - 224) // 2
    reference = scaled.crop((left, top, left + 224, top + 224))
    difference = np.abs(np.asarray(crop, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    assert float(difference.mean()) < 4.0


@pytest.fixture
def chelsea_like() -> Image.Image:
    """A real photo (scikit-image's chelsea), landscape."""
    from skimage import data

    return Image.fromarray(data.chelsea())
