"""Random views of a photo for the contrastive losses: two views of one photo are positives.

The views go through the changes a shop's photos go through on their way to an upload, and
that the embedding should therefore ignore: crop, flip, colour jitter, blur, grayscale, padding
onto a plain canvas, a small tilt or a quarter turn, a badge or caption drawn over the product,
a downscale and JPEG re-compression. Same family as the near-duplicate edit suite
(lookalike_tuning.edits; SSCD, Pizzi et al. 2022, trains copy detection the same way), never its
exact parameters: the suite's caption, angles and crops are not drawn here.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

# Words a shop writes over its photos; never the edit suite's caption.
OVERLAY_WORDS = ("NEW", "SALE", "-30%", "HOT", "TOP", "19.99", "$49", "2 for 1", "LIMITED", "FREE SHIP", "%")
OVERLAY_COLOURS = ((230, 30, 30), (20, 20, 20), (255, 255, 255), (250, 200, 0), (30, 90, 220), (0, 150, 70))


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


def rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A quarter or half turn (a photo uploaded on its side), else a tilt of up to 20 degrees with
    the uncovered corners filled in the photo's own corner colour."""
    if rng.random() < 0.35:
        return image.rotate(int(rng.choice([90, 180, 270])), expand=True)
    corner = image.convert("RGB").getpixel((0, 0))
    angle = float(rng.uniform(3, 20)) * (1 if rng.random() < 0.5 else -1)
    return image.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=corner)


def overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A word or price drawn over the photo, bare or on a coloured badge, anywhere on it."""
    edited = image.convert("RGB")
    draw = ImageDraw.Draw(edited)
    size = max(8, round(min(edited.size) * rng.uniform(0.08, 0.22)))
    font = ImageFont.load_default(size=size)
    text = str(rng.choice(OVERLAY_WORDS))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = int(rng.integers(0, max(1, edited.width - int(right - left))))
    y = int(rng.integers(0, max(1, edited.height - int(bottom - top))))
    colour = OVERLAY_COLOURS[int(rng.integers(len(OVERLAY_COLOURS)))]
    if rng.random() < 0.4:
        badge = OVERLAY_COLOURS[int(rng.integers(len(OVERLAY_COLOURS)))]
        margin = size // 4
        draw.rectangle((x - margin, y - margin, x + right + margin, y + bottom + margin), fill=badge)
    draw.text((x, y), text, fill=colour, font=font)
    return edited


def degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A downscaled copy (as a thumbnail re-uploaded) and/or JPEG re-compression at quality 15-85."""
    if rng.random() < 0.5:
        scale = rng.uniform(0.2, 0.6)
        size = (max(16, round(image.width * scale)), max(16, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=int(rng.integers(15, 86)))
    buffer.seek(0)
    with Image.open(buffer) as compressed:
        return compressed.convert("RGB")


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
        view = rotate(view, rng)
    if rng.random() < 0.25:
        view = overlay(view, rng)
    if rng.random() < 0.2:
        view = pad_on_canvas(view, rng)
    if rng.random() < 0.3:
        view = degrade(view, rng)
    return view
