"""The near-duplicate edit suite (Copydays-style): edited copies of a photo that must still find it.

Shared by scripts/eval_quality.py and the tuning's held-out evaluation, so that both report the
same edits. Each copy is the JPEG an uploader would send.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

# Padded copies: the photo at this share of a larger plain canvas (shops' letterboxing).
PAD_SCALE = 0.6
PAD_COLOURS = {"dark": (20, 20, 20), "white": (255, 255, 255)}


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def crop_area(image: Image.Image, fraction: float, rng: np.random.Generator) -> Image.Image:
    """A crop keeping `fraction` of the area, same aspect ratio, at a random position."""
    side = fraction**0.5
    width, height = round(image.width * side), round(image.height * side)
    left = int(rng.integers(0, image.width - width + 1))
    top = int(rng.integers(0, image.height - height + 1))
    return image.crop((left, top, left + width, top + height))


def with_text(image: Image.Image) -> Image.Image:
    edited = image.copy()
    draw = ImageDraw.Draw(edited)
    size = max(12, image.height // 8)
    font = ImageFont.load_default(size=size)
    draw.text((image.width // 20, image.height // 2), "SALE -50% lookalike", fill=(255, 0, 0), font=font)
    return edited


def with_border(image: Image.Image) -> Image.Image:
    border = max(4, min(image.size) // 10)
    return ImageOps.expand(image, border=border, fill=(20, 20, 20))


def padded(image: Image.Image, colour: tuple[int, int, int], scale: float = PAD_SCALE) -> Image.Image:
    """The photo at `scale` of the canvas width and height, centred on a plain canvas."""
    canvas_w, canvas_h = round(image.width / scale), round(image.height / scale)
    canvas = Image.new("RGB", (canvas_w, canvas_h), colour)
    canvas.paste(image.convert("RGB"), ((canvas_w - image.width) // 2, (canvas_h - image.height) // 2))
    return canvas


def edits(image: Image.Image, seed: int, *, with_padding: bool = False) -> Iterator[tuple[str, bytes]]:
    """Edited copies, each as (edit name, JPEG bytes). with_padding adds the padded copies
    (`pad60-dark`, `pad60-white`) after the classic suite."""
    rng = np.random.default_rng(seed)
    for fraction in (0.8, 0.65, 0.5):
        yield f"crop{round(fraction * 100)}", jpeg(crop_area(image, fraction, rng))
    for quality in (50, 30, 15):
        yield f"jpeg{quality}", jpeg(image, quality)
    for scale in (0.5, 0.25):
        small = image.resize(
            (max(16, round(image.width * scale)), max(16, round(image.height * scale))),
            Image.Resampling.BILINEAR,
        )
        yield f"resize{round(scale * 100)}", jpeg(small)
    yield (
        "rotate10",
        jpeg(image.rotate(10, Image.Resampling.BILINEAR, expand=True, fillcolor=(255, 255, 255))),
    )
    yield "rotate90", jpeg(image.rotate(90, expand=True))
    yield "mirror", jpeg(ImageOps.mirror(image))
    yield "brighter", jpeg(ImageEnhance.Brightness(image).enhance(1.5))
    yield "darker", jpeg(ImageEnhance.Brightness(image).enhance(0.6))
    yield "contrast", jpeg(ImageEnhance.Contrast(image).enhance(1.6))
    yield "saturation", jpeg(ImageEnhance.Color(image).enhance(0.3))
    hue = np.asarray(image.convert("HSV")).copy()
    hue[..., 0] = (hue[..., 0].astype(np.int16) + 40) % 256
    yield "hue", jpeg(Image.fromarray(hue, mode="HSV").convert("RGB"))
    yield "grayscale", jpeg(ImageOps.grayscale(image))
    yield "text", jpeg(with_text(image))
    yield "border", jpeg(with_border(image))
    combined = ImageEnhance.Brightness(crop_area(image, 0.7, rng)).enhance(1.3)
    yield "crop70+bright+jpeg30", jpeg(combined, 30)
    if with_padding:
        for name, colour in PAD_COLOURS.items():
            yield f"pad{round(PAD_SCALE * 100)}-{name}", jpeg(padded(image, colour))
