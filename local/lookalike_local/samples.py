"""Real photos that ship offline inside scikit-image and scikit-learn, for tests and demos."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True, slots=True)
class SamplePhoto:
    name: str
    path: Path
    source: str  # package and file it ships in

    def open_rgb(self) -> Image.Image:
        with Image.open(self.path) as image:
            return image.convert("RGB")

    def jpeg_bytes(self, quality: int = 90, max_side: int | None = None) -> bytes:
        image = self.open_rgb()
        if max_side is not None and max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()


# Colour photographs only (skimage's grayscale/synthetic images would be poor products).
_SKIMAGE_PHOTOS = {
    "chelsea": "chelsea.png",  # a tabby cat
    "coffee": "coffee.png",  # a cup of espresso
    "astronaut": "astronaut.png",  # Eileen Collins, NASA (public domain)
    "rocket": "rocket.jpg",  # a rocket on the launch pad, NASA
    "motorcycle": "motorcycle_left.png",  # a motorcycle (Middlebury stereo set)
    "hubble": "hubble_deep_field.jpg",  # Hubble deep field, NASA
    "retina": "retina.jpg",  # a retina (fundus) photograph
    "ihc": "ihc.png",  # an immunohistochemistry slide
}
_SKLEARN_PHOTOS = {
    "china": "china.jpg",  # a Chinese temple
    "flower": "flower.jpg",  # a flower
}


def sample_photos() -> list[SamplePhoto]:
    """The distinct colour photos, in a fixed order."""
    import skimage.data
    import sklearn.datasets

    skimage_dir = Path(skimage.data.__file__).parent
    sklearn_dir = Path(sklearn.datasets.__file__).parent / "images"
    photos = [
        SamplePhoto(name, skimage_dir / file, f"scikit-image skimage/data/{file}")
        for name, file in _SKIMAGE_PHOTOS.items()
    ]
    photos += [
        SamplePhoto(name, sklearn_dir / file, f"scikit-learn sklearn/datasets/images/{file}")
        for name, file in _SKLEARN_PHOTOS.items()
    ]
    return photos


def sample_photo(name: str) -> SamplePhoto:
    for photo in sample_photos():
        if photo.name == name:
            return photo
    raise KeyError(name)
