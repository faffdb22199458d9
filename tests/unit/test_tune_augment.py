"""The training views: each shop edit does what it says, and a seeded view is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lookalike_tuning.augment import degrade, overlay, random_view, rotate

pytestmark = pytest.mark.unit


def product_photo() -> Image.Image:
    """A dark product on a white packshot background."""
    image = Image.new("RGB", (120, 80), (255, 255, 255))
    ImageDraw.Draw(image).ellipse((30, 15, 90, 65), fill=(40, 60, 120))
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_overlay_draws_over_the_photo_and_keeps_its_size() -> None:
    photo = product_photo()
    edited = overlay(photo, np.random.default_rng(3))
    assert edited.size == photo.size
    changed = np.any(pixels(edited) != pixels(photo), axis=2).mean()
    assert 0 < changed < 0.5  # a caption or badge, not a new picture


def test_rotate_turns_a_quarter_or_tilts_with_the_corner_colour() -> None:
    photo = product_photo()
    sizes = set()
    for seed in range(40):
        turned = rotate(photo, np.random.default_rng(seed))
        sizes.add(turned.size)
        if turned.size not in (photo.size, (photo.height, photo.width)):  # a tilt grows the canvas
            corner = turned.convert("RGB").getpixel((0, 0))
            assert corner == (255, 255, 255)  # filled with the background, not black
    assert (photo.height, photo.width) in sizes  # quarter turns happen
    assert len(sizes) > 2  # and tilts of several angles


def test_degrade_returns_a_decoded_rgb_jpeg_no_larger_than_the_photo() -> None:
    photo = product_photo()
    for seed in range(10):
        degraded = degrade(photo, np.random.default_rng(seed))
        assert degraded.mode == "RGB"
        assert degraded.width <= photo.width
        assert degraded.height <= photo.height


def test_a_seeded_view_is_reproducible_and_views_differ() -> None:
    photo = product_photo()
    first = random_view(photo, np.random.default_rng([7, 1]))
    again = random_view(photo, np.random.default_rng([7, 1]))
    assert np.array_equal(pixels(first), pixels(again))
    others = [pixels(random_view(photo, np.random.default_rng([7, n]))) for n in range(2, 8)]
    assert any(other.shape != pixels(first).shape or np.any(other != pixels(first)) for other in others)
