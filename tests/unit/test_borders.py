"""trim_uniform_border: padding comes off, real content stays, odd inputs are left alone."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from lookalike.model.borders import trim_uniform_border
from lookalike_local.samples import sample_photos

pytestmark = pytest.mark.unit


def photo(name: str) -> Image.Image:
    return next(p for p in sample_photos() if p.name == name).open_rgb()


def padded(image: Image.Image, scale: float, colour: tuple[int, int, int]) -> Image.Image:
    """The photo at `scale` of a canvas, placed off-centre on a plain canvas of `colour`."""
    canvas_w, canvas_h = round(image.width / scale), round(image.height / scale)
    canvas = Image.new("RGB", (canvas_w, canvas_h), colour)
    canvas.paste(image, ((canvas_w - image.width) // 3, (canvas_h - image.height) // 2))
    return canvas


def jpeg_roundtrip(image: Image.Image, quality: int = 75) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as opened:
        return opened.convert("RGB")


@pytest.mark.parametrize("colour", [(12, 12, 12), (255, 255, 255), (40, 90, 160)])
def test_padding_comes_off_and_the_photo_survives(colour: tuple[int, int, int]) -> None:
    original = photo("chelsea")
    trimmed = trim_uniform_border(jpeg_roundtrip(padded(original, 0.6, colour)))
    # Within a few thumbnail lines of the original's size (the search runs on a 128-pixel
    # thumbnail and keeps a margin): the canvas is gone, the cat is whole.
    assert abs(trimmed.width - original.width) <= 0.06 * original.width
    assert abs(trimmed.height - original.height) <= 0.06 * original.height
    assert trimmed.width >= original.width - 2
    assert trimmed.height >= original.height - 2


def test_letterbox_bars_come_off_only_where_they_are() -> None:
    original = photo("coffee")
    letterboxed = ImageOps.expand(original, border=(0, 80, 0, 80), fill=(0, 0, 0))
    trimmed = trim_uniform_border(letterboxed)
    assert trimmed.width == original.width
    assert original.height <= trimmed.height <= 1.06 * original.height


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "rocket", "china", "flower"])
def test_a_photo_without_padding_is_returned_unchanged(name: str) -> None:
    original = photo(name)
    assert trim_uniform_border(original) is original


def test_a_plain_picture_is_not_cropped_to_nothing() -> None:
    blank = Image.new("RGB", (300, 200), (255, 255, 255))
    assert trim_uniform_border(blank) is blank
    speck = blank.copy()
    speck.paste((0, 0, 0), (140, 90, 150, 100))  # an object of 3 % of the width
    assert trim_uniform_border(speck) is speck


def test_never_cuts_into_an_object_touching_the_canvas_colour() -> None:
    # A dark object on white whose outline is anti-aliased: every dark pixel must survive.
    canvas = Image.new("RGB", (400, 400), (255, 255, 255))
    canvas.paste(photo("coffee").resize((200, 150)), (100, 120))
    trimmed = np.asarray(trim_uniform_border(canvas))
    dark_before = int(np.sum(np.asarray(canvas).min(axis=2) < 200))
    dark_after = int(np.sum(trimmed.min(axis=2) < 200))
    assert dark_after == dark_before


def test_tiny_images_are_left_alone() -> None:
    tiny = Image.new("RGB", (5, 5), (0, 0, 0))
    assert trim_uniform_border(tiny) is tiny


def test_nested_padding_comes_off_in_full() -> None:
    # A packshot on white, pasted onto a dark canvas: both borders go, as for the original.
    packshot = padded(photo("coffee"), 0.7, (255, 255, 255))
    nested = padded(packshot, 0.6, (15, 15, 15))
    once = trim_uniform_border(packshot)
    twice = trim_uniform_border(nested)
    assert abs(twice.width - once.width) <= 0.05 * once.width
    assert abs(twice.height - once.height) <= 0.05 * once.height
