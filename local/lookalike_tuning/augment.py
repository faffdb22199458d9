"""Random views of a photo for the contrastive losses: two views of one photo are positives.

crop, flip, colour jitter, blur, grayscale and padding onto a plain canvas: the changes a shop's
photos go through and that the embedding should ignore.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps


def random_crop(image: Image.Image, rng: np.random.Generator, min_area: float = 0.45) -> Image.Image:
    area = rng.uniform(min_area, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    width = min(image.width, max(8, round(image.width * np.sqrt(area * aspect))))
    height = min(image.height, max(8, round(image.height * np.sqrt(area / aspect))))
    left = int(rng.integers(0, image.width - width + 1))
    top = int(rng.integers(0, image.height - height + 1))
    return image.crop((left, top, left + width, top + height))


def colour_jitter(image: Image.Image, rng: np.random.Generator, strength: float = 0.4) -> Image.Image:
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(1 - strength, 1 + strength)))
    return image


def pad_on_canvas(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The photo at 50-90 % of a plain canvas (white, black or grey), at a random position."""
    scale = rng.uniform(0.5, 0.9)
    canvas_w, canvas_h = round(image.width / scale), round(image.height / scale)
    shade = int(rng.choice([0, 20, 128, 235, 255]))
    canvas = Image.new("RGB", (canvas_w, canvas_h), (shade, shade, shade))
    canvas.paste(
        image,
        (int(rng.integers(0, canvas_w - image.width + 1)), int(rng.integers(0, canvas_h - image.height + 1))),
    )
    return canvas


def random_view(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One random view (SimCLR-style, milder: products must stay recognisable)."""
    view = random_crop(image, rng) if rng.random() < 0.8 else image
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    if rng.random() < 0.8:
        view = colour_jitter(view, rng)
    if rng.random() < 0.2:
        view = ImageOps.grayscale(view).convert("RGB")
    if rng.random() < 0.2:
        view = view.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.0))))
    if rng.random() < 0.2:
        view = pad_on_canvas(view, rng)
    return view
