"""Near-duplicate groups: images whose cosine similarity reaches a threshold, linked transitively.

The graph's edges come from the HNSW index (`VectorSearch.close_neighbours`: per image one k-NN search
bounded by the threshold), never from an all-pairs scan, so the cost grows with n * log n, not
n^2. A group is a connected component of that graph.

Pages are keyset pages over the images in (bucket, key) order: the images after the cursor are
scanned in order, and a group is reported at its smallest member (its "anchor") and only there,
so walking the pages reports every group exactly once, in a stable order, without any state
kept between requests. An image whose neighbour sorts before it is skipped at once (its group
was reported at that neighbour); otherwise its component is explored breadth-first, and dropped
as soon as a member sorting before the image turns up. Approximate search may miss an edge in
one direction only (a finds b, b does not find a); the exploration follows the edges found from
each member, which for near-duplicates (cosine >= 0.9, far inside ef_search) is all of them.

A page scans at most `scan_limit` images, so a catalogue with few duplicates returns short (even
empty) pages with a cursor rather than one slow request; `next_cursor` None means the end.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass

from lookalike.ports import ObjectRef
from lookalike.store import CloseNeighbour, ImageSummary, SearchParameters, VectorSearch

# The default threshold: the lowest at which no different image of the near-duplicate benchmark
# reached its query (docs/CATALOGUE_TOOLS.md, "Near-duplicate groups"). Stricter: ?threshold=0.9.
DEFAULT_THRESHOLD = 0.85
# Neighbours fetched per image: a group larger than this is still found whole, through its
# other members' searches.
NEIGHBOURS_PER_IMAGE = 16
# HNSW candidate list for the duplicate scan. A pair is lost when the search from its smaller
# member misses the other (see the module docstring); recall is worth more than speed here
# (docs/CATALOGUE_TOOLS.md, "Near-duplicate groups", `scripts/duplicates.py --bench`).
DUPLICATE_EF_SEARCH = 200
DEFAULT_PAGE_SIZE = 50  # groups
DEFAULT_SCAN_LIMIT = 2_000  # images scanned per page at most (bounds a request's time)
SCAN_CHUNK = 500  # images per close_neighbours statement


@dataclass(frozen=True, slots=True)
class DuplicateMember:
    image: ImageSummary
    similarity: float  # the best similarity linking it into the group (1.0 for the anchor)

    def as_dict(self) -> dict[str, object]:
        return {
            "bucket": self.image.ref.bucket,
            "key": self.image.ref.key,
            "product_id": self.image.product_id,
            "category": self.image.category,
            "width": self.image.width,
            "height": self.image.height,
            "similarity": round(self.similarity, 4),
        }


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    members: list[DuplicateMember]  # the anchor first, then by key
    max_similarity: float  # of the edges found inside the group
    min_similarity: float

    @property
    def anchor(self) -> ObjectRef:
        return self.members[0].image.ref

    @property
    def products(self) -> list[str]:
        return sorted({member.image.product_id for member in self.members})

    def as_dict(self) -> dict[str, object]:
        return {
            "anchor": {"bucket": self.anchor.bucket, "key": self.anchor.key},
            "size": len(self.members),
            "products": self.products,
            "max_similarity": round(self.max_similarity, 4),
            "min_similarity": round(self.min_similarity, 4),
            "members": [member.as_dict() for member in self.members],
        }


@dataclass(frozen=True, slots=True)
class DuplicatePage:
    groups: list[DuplicateGroup]
    next_cursor: str | None  # None: no images left to scan
    scanned: int  # images scanned for this page


class InvalidCursorError(ValueError):
    """A cursor that `encode_cursor` did not make (the API answers 400)."""


def encode_cursor(ref: ObjectRef) -> str:
    raw = json.dumps([ref.bucket, ref.key], ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> ObjectRef:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        bucket, key = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as error:
        raise InvalidCursorError(f"not a cursor from this API: {cursor[:40]!r}") from error
    if not isinstance(bucket, str) or not isinstance(key, str):
        raise InvalidCursorError(f"not a cursor from this API: {cursor[:40]!r}")
    return ObjectRef(bucket, key)


def _order(ref: ObjectRef) -> tuple[str, str]:
    return (ref.bucket, ref.key)


class _Graph:
    """The edges found so far, fetched from the store on demand and remembered (one page)."""

    def __init__(
        self, search: VectorSearch, threshold: float, category: str | None, ef_search: int | None
    ) -> None:
        self.search = search
        self.threshold = threshold
        self.category = category
        self.edges: dict[ObjectRef, list[CloseNeighbour]] = {}
        self.scan = SearchParameters(
            k=NEIGHBOURS_PER_IMAGE + 1,  # + the image itself, which the search leaves out
            category=category,
            ef_search=ef_search or DUPLICATE_EF_SEARCH,
        )

    def fetch(self, refs: list[ObjectRef]) -> None:
        missing = [ref for ref in refs if ref not in self.edges]
        for start in range(0, len(missing), SCAN_CHUNK):
            chunk = missing[start : start + SCAN_CHUNK]
            for ref in chunk:
                self.edges[ref] = []
            for edge in self.search.close_neighbours(
                chunk, min_similarity=self.threshold, parameters=self.scan
            ):
                self.edges[edge.source].append(edge)

    def group_at(self, anchor: ImageSummary) -> DuplicateGroup | None:
        """The anchor's component if the anchor is its smallest member, else None."""
        members: dict[ObjectRef, ImageSummary] = {anchor.ref: anchor}
        best: dict[ObjectRef, float] = {anchor.ref: 1.0}
        similarities: list[float] = []
        frontier = [anchor.ref]
        while frontier:
            self.fetch(frontier)
            found: list[ObjectRef] = []
            for ref in frontier:
                for edge in self.edges[ref]:
                    target = edge.target.ref
                    if _order(target) < _order(anchor.ref):
                        return None  # reported at that smaller member
                    similarities.append(edge.similarity)
                    best[target] = max(best.get(target, -1.0), edge.similarity)
                    if target not in members:
                        members[target] = edge.target
                        found.append(target)
            frontier = found
        if len(members) < 2:
            return None
        ordered = sorted(members.values(), key=lambda image: _order(image.ref))
        return DuplicateGroup(
            members=[DuplicateMember(image, best[image.ref]) for image in ordered],
            max_similarity=max(similarities),
            min_similarity=min(similarities),
        )


def _check(threshold: float, limit: int, scan_limit: int) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if scan_limit < 1:
        raise ValueError(f"scan_limit must be at least 1, got {scan_limit}")


def duplicate_groups_page(
    search: VectorSearch,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    category: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
    scan_limit: int = DEFAULT_SCAN_LIMIT,
    ef_search: int | None = None,
) -> DuplicatePage:
    """One page of groups (at most `limit`), scanning at most `scan_limit` images after the cursor.

    With a category, only images of that category are scanned and linked (duplicates across
    categories are not reported under either).
    """
    _check(threshold, limit, scan_limit)
    after = decode_cursor(cursor) if cursor else None
    graph = _Graph(search, threshold, category, ef_search)
    groups: list[DuplicateGroup] = []
    scanned = 0
    while len(groups) < limit and scanned < scan_limit:
        wanted = min(SCAN_CHUNK, scan_limit - scanned)
        anchors = search.store.images_after(after, limit=wanted, category=category)
        graph.fetch([anchor.ref for anchor in anchors])
        for anchor in anchors:
            scanned += 1
            after = anchor.ref
            edges = graph.edges[anchor.ref]
            # Cheap first test: a neighbour before the anchor means the group was reported there.
            if edges and all(_order(edge.target.ref) > _order(anchor.ref) for edge in edges):
                group = graph.group_at(anchor)
                if group is not None:
                    groups.append(group)
                    if len(groups) == limit:
                        break
        if len(anchors) < wanted and (not anchors or after == anchors[-1].ref):
            return DuplicatePage(groups, None, scanned)  # every image scanned: the end
    return DuplicatePage(groups, encode_cursor(after) if after is not None else None, scanned)


def all_duplicate_groups(
    search: VectorSearch,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    category: str | None = None,
    ef_search: int | None = None,
) -> Iterator[DuplicateGroup]:
    """Every group, in anchor order (the pages, walked to the end)."""
    cursor: str | None = None
    while True:
        page = duplicate_groups_page(
            search,
            threshold=threshold,
            category=category,
            limit=DEFAULT_PAGE_SIZE,
            cursor=cursor,
            ef_search=ef_search,
        )
        yield from page.groups
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
