"""Which product (and category) an uploaded photo belongs to: one pure rule.

1. The object's user metadata wins: `x-amz-meta-product-id` and `x-amz-meta-category`
   (boto3 returns them as `product-id` / `category`). Each field is taken separately, so a
   photo may carry only a product id in its metadata and still get its category from the key.
2. Otherwise the key layout: the key must start with KEY_PREFIX (default `products/`) and the
   rest must match KEY_LAYOUT (default `{category}/{product_id}/{file}`; placeholders
   `{category}`, `{product_id}`, `{file}` each stand for one non-empty path segment, other
   segments are literal; a trailing `{file}` also takes any deeper segments).
3. Otherwise the whole key is the product id and the category is unknown (NULL): every photo
   is searchable, even one uploaded outside the layout.

docs/INGEST.md, "Product id and category", states the same rule for users.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_KEY_PREFIX = "products/"
DEFAULT_KEY_LAYOUT = "{category}/{product_id}/{file}"
PLACEHOLDERS = ("{category}", "{product_id}", "{file}")

# User metadata names as boto3 returns them (S3 lower-cases them and strips x-amz-meta-).
PRODUCT_ID_METADATA = "product-id"
CATEGORY_METADATA = "category"


@dataclass(frozen=True, slots=True)
class KeyLayout:
    prefix: str
    segments: tuple[str, ...]  # placeholders or literal path segments

    @classmethod
    def parse(cls, prefix: str, layout: str) -> KeyLayout:
        segments = tuple(layout.strip("/").split("/"))
        for segment in segments:
            if "{" in segment and segment not in PLACEHOLDERS:
                allowed = ", ".join(PLACEHOLDERS)
                raise ValueError(
                    f"KEY_LAYOUT segment {segment!r} is neither literal text nor one of {allowed}"
                )
            if segment == "":
                raise ValueError(f"KEY_LAYOUT {layout!r} has an empty segment")
        if "{product_id}" not in segments:
            raise ValueError(f"KEY_LAYOUT {layout!r} must contain {{product_id}}")
        if len(set(segments) & set(PLACEHOLDERS)) != sum(segment in PLACEHOLDERS for segment in segments):
            raise ValueError(f"KEY_LAYOUT {layout!r} repeats a placeholder")
        return cls(prefix=prefix, segments=segments)

    def match(self, key: str) -> dict[str, str] | None:
        """The placeholders' values if `key` follows the layout, else None."""
        if not key.startswith(self.prefix):
            return None
        parts = key[len(self.prefix) :].split("/")
        absorbs_rest = self.segments[-1] == "{file}"
        if len(parts) < len(self.segments) or (len(parts) > len(self.segments) and not absorbs_rest):
            return None
        if absorbs_rest:
            last = len(self.segments) - 1
            parts = [*parts[:last], "/".join(parts[last:])]
        values: dict[str, str] = {}
        for segment, part in zip(self.segments, parts, strict=True):
            if part == "":
                return None
            if segment in PLACEHOLDERS:
                values[segment[1:-1]] = part
            elif segment != part:
                return None
        return values


@dataclass(frozen=True, slots=True)
class ProductIdentity:
    product_id: str
    category: str | None


def _metadata_value(metadata: Mapping[str, str], name: str) -> str | None:
    for key, value in metadata.items():
        if key.lower() in {name, f"x-amz-meta-{name}"}:
            stripped = value.strip()
            return stripped or None
    return None


def product_identity(key: str, metadata: Mapping[str, str], layout: KeyLayout) -> ProductIdentity:
    """Apply the rule in the module docstring to an object's (URL-decoded) key and metadata."""
    from_key = layout.match(key) or {}
    metadata_product = _metadata_value(metadata, PRODUCT_ID_METADATA)
    category = _metadata_value(metadata, CATEGORY_METADATA) or from_key.get("category")
    if metadata_product is not None:
        return ProductIdentity(metadata_product, category)
    if "product_id" in from_key:
        return ProductIdentity(from_key["product_id"], category)
    return ProductIdentity(key, category)
