"""Decoding untrusted uploads: every bad kind is refused with its own error, every odd but
valid kind becomes an upright 8-bit RGB image."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from lookalike.images import (
    CorruptImage,
    DecodedImage,
    EmptyImage,
    ImageRejected,
    ImageTooLarge,
    NotAnImage,
    TooManyPixels,
    TruncatedImage,
    UnsupportedFormat,
    decode_image,
)
from lookalike.model.card import Preprocessing
from lookalike.model.preprocess import resize_for_model, to_model_input
from lookalike_local.samples import SamplePhoto

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 50_000_000}


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def decode(data: bytes, **overrides: int) -> DecodedImage:
    return decode_image(data, **{**LIMITS, **overrides})


@pytest.fixture(scope="module")
def chelsea(photos: list[SamplePhoto]) -> Image.Image:
    return next(p for p in photos if p.name == "chelsea").open_rgb()


def png_header_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims a huge canvas: a decompression bomb's calling card."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- refusals -------------------------------------------------------------------------------


def test_empty_object_is_rejected() -> None:
    with pytest.raises(EmptyImage) as caught:
        decode(b"")
    assert caught.value.reason == "empty"


def test_object_over_the_byte_limit_is_rejected_before_decoding(chelsea: Image.Image) -> None:
    data = encode(chelsea, "JPEG")
    with pytest.raises(ImageTooLarge) as caught:
        decode(data, max_bytes=len(data) - 1)
    assert caught.value.reason == "too_large"
    assert str(len(data)) in caught.value.message


def test_text_is_not_an_image() -> None:
    with pytest.raises(NotAnImage) as caught:
        decode(b"product_id,price\nshoe-1,12.50\n")
    assert caught.value.reason == "not_an_image"


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"8BPS\x00\x01" + b"\x00" * 64, "PSD"),
        (b"%PDF-1.7\n" + b"\x00" * 64, "PDF"),
        (b"\x00\x00\x01\x00\x01\x00" + b"\x00" * 64, "ICO"),
        (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, "HEIC"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "SVG"),
    ],
)
def test_known_formats_outside_the_allow_list_are_unsupported(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedFormat, match=name) as caught:
        decode(data)
    assert caught.value.reason == "unsupported_format"


def test_real_format_outside_the_allow_list_is_not_decoded(chelsea: Image.Image) -> None:
    # Pillow can write TGA, but uploads are not allowed to reach its decoder.
    with pytest.raises(NotAnImage):
        decode(encode(chelsea, "TGA"))


def test_truncated_jpeg_is_rejected(chelsea: Image.Image) -> None:
    data = encode(chelsea, "JPEG", quality=90)
    with pytest.raises(TruncatedImage) as caught:
        decode(data[: len(data) // 2], draft_size=None)
    assert caught.value.reason == "truncated"


def test_truncated_png_is_rejected(chelsea: Image.Image) -> None:
    data = encode(chelsea, "PNG")
    with pytest.raises(ImageRejected) as caught:
        decode(data[: len(data) // 2])
    assert caught.value.reason in {"truncated", "corrupt"}


def test_decompression_bomb_header_is_rejected_without_allocating() -> None:
    bomb = png_header_declaring(100_000, 100_000)  # 10 gigapixels in ~100 bytes
    assert len(bomb) < 200
    with pytest.raises(TooManyPixels) as caught:
        decode(bomb)
    assert caught.value.reason == "too_many_pixels"


def test_pixel_limit_is_the_configured_one(chelsea: Image.Image) -> None:
    data = encode(chelsea, "PNG")  # 451 x 300
    with pytest.raises(TooManyPixels):
        decode(data, max_pixels=451 * 300 - 1)
    assert decode(data, max_pixels=451 * 300).width == 451


def test_corrupt_jpeg_body_is_rejected(chelsea: Image.Image) -> None:
    data = bytearray(encode(chelsea, "JPEG"))
    data[200:] = b"\xff" * (len(data) - 200)  # header intact, entropy-coded data destroyed
    with pytest.raises(ImageRejected):
        decode(bytes(data), draft_size=None)


def test_every_rejection_has_a_reason_code() -> None:
    reasons = {cls.reason for cls in ImageRejected.__subclasses__()}
    assert reasons == {
        "empty",
        "too_large",
        "too_many_pixels",
        "not_an_image",
        "unsupported_format",
        "truncated",
        "corrupt",
    }
    assert CorruptImage.reason == "corrupt"


# --- odd but valid images ---------------------------------------------------------------------


def test_exif_orientation_is_applied(chelsea: Image.Image) -> None:
    # Stored sideways with orientation 6 ("rotate 90 CW to view"): the decoder must turn it back.
    sideways = chelsea.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode(encode(sideways, "JPEG", exif=exif.tobytes(), quality=95), draft_size=None)
    assert decoded.image.size == chelsea.size
    assert (decoded.width, decoded.height) == chelsea.size
    difference = np.abs(np.asarray(decoded.image, np.int16) - np.asarray(chelsea, np.int16)).mean()
    assert difference < 6


def test_alpha_is_flattened_onto_white() -> None:
    transparent = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    transparent.paste((0, 0, 255, 255), (16, 16, 48, 48))
    decoded = decode(encode(transparent, "PNG")).image
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((32, 32)) == (0, 0, 255)


def test_palette_with_transparency_is_flattened(chelsea: Image.Image) -> None:
    palette = chelsea.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    palette.info["transparency"] = 0
    decoded = decode(encode(palette, "PNG", transparency=0)).image
    assert decoded.mode == "RGB"


def test_cmyk_jpeg_becomes_rgb(chelsea: Image.Image) -> None:
    decoded = decode(encode(chelsea.convert("CMYK"), "JPEG", quality=95), draft_size=None).image
    assert decoded.mode == "RGB"
    difference = np.abs(np.asarray(decoded, np.int16) - np.asarray(chelsea, np.int16)).mean()
    assert difference < 12


def test_16_bit_png_is_scaled_not_clipped() -> None:
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    decoded = decode(encode(Image.fromarray(ramp), "PNG")).image
    pixels = np.asarray(decoded)
    assert decoded.mode == "RGB"
    assert pixels.max() >= 250  # a clip to 255 would make almost everything white
    assert pixels[0, 0, 0] == 0
    assert 100 < pixels[32, 0, 0] < 160


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), color) for color in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = decode(data).image
    assert decoded.getpixel((16, 16)) == (255, 0, 0)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_allowed_formats_decode(chelsea: Image.Image, fmt: str) -> None:
    decoded = decode(encode(chelsea, fmt))
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == chelsea.size


def test_jpeg_draft_mode_shrinks_decoding_but_reports_original_size(chelsea: Image.Image) -> None:
    big = chelsea.resize((chelsea.width * 4, chelsea.height * 4))
    decoded = decode(encode(big, "JPEG"), draft_size=256)
    assert (decoded.width, decoded.height) == big.size
    assert min(decoded.image.size) >= 256
    assert decoded.image.size[0] < big.size[0]


# --- preprocessing --------------------------------------------------------------------------


def test_center_crop_keeps_the_middle(chelsea: Image.Image) -> None:
    cropped = resize_for_model(chelsea, 224, "center_crop", 0.875)
    squashed = resize_for_model(chelsea, 224, "squash", 0.875)
    assert cropped.size == squashed.size == (224, 224)
    assert not np.array_equal(np.asarray(cropped), np.asarray(squashed))


def test_model_input_is_normalised_nchw() -> None:
    white = Image.new("RGB", (300, 200), (255, 255, 255))
    black = Image.new("RGB", (50, 80), (0, 0, 0))
    preprocessing = Preprocessing(
        size=224, mean=(127.0,) * 3, std=(128.0,) * 3, crop_fraction=0.875, default_resize_mode="squash"
    )
    batch = to_model_input([white, black], preprocessing, "squash")
    assert batch.shape == (2, 3, 224, 224)
    assert batch.dtype == np.float32
    assert np.allclose(batch[0], (255 - 127) / 128)
    assert np.allclose(batch[1], -127 / 128)
