"""Hardened image decoding, as plain functions.

Uploads are untrusted: the decoder accepts an allow-list of formats, refuses empty, oversized,
truncated and decompression-bomb files with a specific `ImageRejected` subclass (its `reason`
is what the rejections table and the HTTP API report), and normalises every accepted image to
an upright 8-bit RGB picture: EXIF orientation applied, alpha and palettes flattened onto white,
CMYK and 16-bit converted, animations reduced to their first frame.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a product photo arrives in. Everything else (PSD, EPS, ICO, PDF, ...) is refused
# before a decoder runs: fewer decoders, fewer parser bugs exposed to uploads.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")


class ImageRejected(ValueError):  # noqa: N818 - a rejection is an outcome, not a crash
    """An upload that can never become an embedding. Permanent: retrying will not help."""

    reason: ClassVar[str] = "invalid_image"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyImage(ImageRejected):
    reason = "empty"


class ImageTooLarge(ImageRejected):
    """More bytes than the configured limit."""

    reason = "too_large"


class TooManyPixels(ImageRejected):
    """Decompression bomb guard: the header declares more pixels than allowed."""

    reason = "too_many_pixels"


class NotAnImage(ImageRejected):
    reason = "not_an_image"


class UnsupportedFormat(ImageRejected):
    reason = "unsupported_format"


class TruncatedImage(ImageRejected):
    reason = "truncated"


class CorruptImage(ImageRejected):
    reason = "corrupt"


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An upright RGB image plus what the store records about the original."""

    image: Image.Image
    width: int  # of the original, after EXIF orientation
    height: int


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise CorruptImage(f"image declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise TooManyPixels(f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}")


# Magic numbers of image formats we refuse by name, so that the rejection says
# "unsupported format" rather than "not an image". Only bytes are compared: no decoder runs.
_UNSUPPORTED_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"8BPS", "PSD"),
    (0, b"%PDF", "PDF"),
    (0, b"%!PS", "EPS"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"\xff\x0a", "JPEG XL"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "SVG/XML"),
)


def _unsupported_format_name(data: bytes) -> str | None:
    for offset, signature, name in _UNSUPPORTED_SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return name
    return None


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    draft_size: int | None = 256,
) -> DecodedImage:
    """Decode untrusted bytes into an upright RGB image, or raise an `ImageRejected`.

    `draft_size` lets JPEG decode at a reduced scale (DCT scaling) when the result will be
    shrunk to the model's input anyway (speed and fidelity: docs/BENCHMARKS.md, "Embedding speed").
    Pass None for a full decode.
    """
    if len(data) == 0:
        raise EmptyImage("the object is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{len(data)} bytes exceeds the limit of {max_bytes} bytes")

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and 2x that; make every excess an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            header_size = image.size  # before draft() shrinks it
            _check_pixels(image.width, image.height, max_pixels)
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated GIF/WebP/APNG: the first frame stands for the product
            if image.format == "JPEG" and draft_size is not None:
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            orientation = image.getexif().get(0x0112, 1)
            rgb = _to_rgb(ImageOps.exif_transpose(image))
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise TooManyPixels(str(error)) from error
    except UnidentifiedImageError as error:
        unsupported = _unsupported_format_name(data)
        if unsupported is not None:
            raise UnsupportedFormat(
                f"format {unsupported} is not accepted (allowed: {', '.join(ALLOWED_FORMATS)})"
            ) from error
        raise NotAnImage("the data is not an image in any accepted format") from error
    except OSError as error:
        # Pillow reports a file cut short as OSError("image file is truncated ...") or
        # "broken data stream"; anything else a decoder raises means a corrupt file.
        text = str(error)
        if "truncated" in text or "broken data stream" in text or "premature end" in text.lower():
            raise TruncatedImage(f"the image is truncated: {text}") from error
        raise CorruptImage(f"the image cannot be decoded: {text}") from error
    except (ValueError, SyntaxError, EOFError, struct.error, ZeroDivisionError) as error:
        raise CorruptImage(f"the image cannot be decoded: {error}") from error

    width, height = header_size
    if orientation in {5, 6, 7, 8}:  # these EXIF orientations swap the axes
        width, height = height, width
    return DecodedImage(image=rgb, width=width, height=height)


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, transparency composited onto white (product shots sit on white)."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I"}:
        # 16/32-bit greyscale: scale to 8 bits instead of clipping (PNG 16-bit is 0..65535).
        array = np.asarray(image, dtype=np.float64)
        peak = float(array.max()) if array.size else 0.0
        scale = 255.0 / peak if peak > 255 else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(np.nan_to_num(scaled).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, RGBX, ...
    return image
