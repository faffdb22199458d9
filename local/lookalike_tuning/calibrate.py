"""Match levels from data: the cosine cut-offs of `duplicate`, `very_similar` and `similar`, per
model version (card + variant + resize mode), measured on held-out images.

The pairs are those a user sees: result lists. For each labelled folder, one photo per product is
the catalogue; some catalogue photos get the near-duplicate edit suite (lookalike_tuning.edits,
padded copies included) and every edited copy searches the catalogue (search by photo); every
catalogue photo searches the others (similar by id). Each (query, one of its top-k results) pair
is a duplicate (the copy's own original), the same kind (same category) or a different kind.

Rule, top down, on the calibration half: a level's cut-off is the lowest similarity at which the
band between it and the level above still has at least the level's target share of right pairs
(TARGETS; duplicate: the copy's own original; very similar and similar: the same kind), taken
per dataset, the highest of them kept. The other half (split by product, never the same images) measures
each level's precision and recall with those cut-offs.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lookalike_tuning import edits as edits_module
from lookalike_tuning.datasets import Dataset, LabelledImage, read_labelled_folder
from lookalike_tuning.edits import edits
from lookalike_tuning.evaluate import MeasurementError
from lookalike_tuning.heldout import embed_bytes, neardup_originals
from lookalike_tuning.production import (
    Embedder,
    MatchCutoffs,
    decode_full,
)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

# Relations of a (query, result) pair, ordered: a duplicate is also of the same kind.
DIFFERENT, SAME_KIND, DUPLICATE = 0, 1, 2
RELATION_NAMES = {DUPLICATE: "duplicate", SAME_KIND: "same kind", DIFFERENT: "different kind"}
# Levels from the top, the relation each one promises, and the share of its pairs that must keep
# the promise on the calibration half.
LEVELS = ("duplicate", "very_similar", "similar")
PROMISE = {"duplicate": DUPLICATE, "very_similar": SAME_KIND, "similar": SAME_KIND}
TARGETS = {"duplicate": 0.95, "very_similar": 0.9, "similar": 0.6}
# A band's precision is judged only once it holds this many pairs (the very first pairs of a band
# are too few to say anything).
MIN_BAND_PAIRS = 25
RESULTS_PER_QUERY = 10
# Each half (calibration, measurement) needs at least this many products.
MIN_HALF_PRODUCTS = 10


@dataclass(frozen=True, slots=True)
class Pairs:
    """(query, result) pairs of one half: similarity, relation, which dataset, which query kind."""

    similarity: FloatArray
    relation: IntArray
    dataset: npt.NDArray[np.str_]
    by_photo: npt.NDArray[np.bool_]  # an edited copy's search (else a catalogue photo's)
    own_similarity: FloatArray  # every edited copy vs its original (in its top k or not)
    own_edit: npt.NDArray[np.str_]

    @staticmethod
    def concat(parts: list[Pairs]) -> Pairs:
        return Pairs(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Pairs)))


def one_photo_per_product(images: list[LabelledImage]) -> list[LabelledImage]:
    seen: set[str] = set()
    kept = []
    for image in images:
        if image.product not in seen:
            seen.add(image.product)
            kept.append(image)
    return kept


def split_halves(
    images: list[LabelledImage], seed: int, limit: int
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """At most `limit` products (seeded), dealt in turn to the two halves category by category:
    each category's products are halved (an odd one out alternates between the halves), and
    calibration and measurement never share a product."""
    rng = np.random.default_rng(seed)
    products = one_photo_per_product(images)
    if len(products) > limit:
        chosen = sorted(int(i) for i in rng.choice(len(products), size=limit, replace=False))
        products = [products[i] for i in chosen]
    halves: tuple[list[LabelledImage], list[LabelledImage]] = ([], [])
    turn = 0
    for category in sorted({image.category for image in products}):
        members = [image for image in products if image.category == category]
        for index in rng.permutation(len(members)):
            halves[turn % 2].append(members[int(index)])
            turn += 1
    for number, half in enumerate(halves):
        if len(half) < MIN_HALF_PRODUCTS or len({image.category for image in half}) < 2:
            raise MeasurementError(
                f"half {number} holds {len(half)} products in {len({i.category for i in half})} categories: "
                f"too few images to calibrate match levels (at least {MIN_HALF_PRODUCTS} products of two "
                "categories per half; the model then answers match null)"
            )
    return halves


def half_pairs(
    name: str,
    catalogue: FloatArray,
    labels: list[str],
    copies: FloatArray,
    targets: IntArray,
    edit_names: list[str],
) -> Pairs:
    label_array = np.asarray(labels)
    if len(labels) < 2:  # no result list: a half of a tiny held-out part
        nothing = np.empty(0, dtype=np.float32)
        empty_str = np.empty(0, dtype=str)
        return Pairs(nothing, np.empty(0, np.int64), empty_str, np.empty(0, bool), nothing, empty_str)
    k = min(RESULTS_PER_QUERY, len(labels) - 1)
    sims: list[FloatArray] = []
    relations: list[IntArray] = []
    photo: list[npt.NDArray[np.bool_]] = []
    # Similar by id: every catalogue photo against the others.
    by_id = catalogue @ catalogue.T
    np.fill_diagonal(by_id, -np.inf)
    top = np.argsort(-by_id, axis=1, kind="stable")[:, :k]
    sims.append(np.take_along_axis(by_id, top, axis=1).ravel())
    relations.append(np.where(label_array[top] == label_array[:, None], SAME_KIND, DIFFERENT).ravel())
    photo.append(np.zeros(top.size, dtype=bool))
    # Search by photo: every edited copy against the catalogue.
    by_copy = copies @ catalogue.T
    top = np.argsort(-by_copy, axis=1, kind="stable")[:, :k]
    relation = np.where(label_array[top] == label_array[targets][:, None], SAME_KIND, DIFFERENT)
    relation[top == targets[:, None]] = DUPLICATE
    sims.append(np.take_along_axis(by_copy, top, axis=1).ravel())
    relations.append(relation.ravel())
    photo.append(np.ones(top.size, dtype=bool))
    similarity = np.concatenate(sims).astype(np.float32)
    return Pairs(
        similarity=similarity,
        relation=np.concatenate(relations).astype(np.int64),
        dataset=np.full(len(similarity), name),
        by_photo=np.concatenate(photo),
        own_similarity=by_copy[np.arange(len(targets)), targets].astype(np.float32),
        own_edit=np.asarray(edit_names, dtype=str),
    )


def band_cutoff(similarity: FloatArray, right: npt.NDArray[np.bool_], upper: float, target: float) -> float:
    """The lowest similarity t at which the band [t, upper) holds at least MIN_BAND_PAIRS pairs
    and at least `target` of them are right; `upper` when no such band exists (the level is then
    never given)."""
    below = similarity < upper
    order = np.argsort(-similarity[below], kind="stable")
    values = similarity[below][order]
    precision = np.cumsum(right[below][order]) / np.arange(1, len(values) + 1)
    good = np.flatnonzero((np.arange(len(values)) >= MIN_BAND_PAIRS - 1) & (precision >= target))
    return upper if len(good) == 0 else float(values[good[-1]])


def choose_cutoffs(pairs: Pairs) -> dict[str, float]:
    """Top down; each level's cut-off is the highest of the datasets' own (band_cutoff of each
    dataset's pairs): the level keeps its promise on every kind of catalogue calibrated on, not
    on their mix (whose similarity scales differ, docs/BENCHMARKS.md "Match levels")."""
    cutoffs: dict[str, float] = {}
    upper = np.inf
    for level in LEVELS:
        per_dataset = []
        for name in dict.fromkeys(pairs.dataset.tolist()):
            mine = pairs.dataset == name
            right = pairs.relation[mine] >= PROMISE[level]
            per_dataset.append(band_cutoff(pairs.similarity[mine], right, float(upper), TARGETS[level]))
        cutoffs[level] = round(min(max(per_dataset), 1.0), 4)
        upper = cutoffs[level]
    return cutoffs


def levels_of(similarity: FloatArray, cutoffs: dict[str, float]) -> npt.NDArray[np.str_]:
    """The level of each similarity, by the rule the query function applies."""
    rule = MatchCutoffs(**cutoffs)
    return np.asarray([rule.level(float(value)) for value in similarity])


def measure(pairs: Pairs, cutoffs: dict[str, float]) -> dict[str, Any]:
    """Per level: pairs given it, precision (share keeping its promise), recall (share of the
    pairs owed the promise that got this level or a higher one)."""
    given = levels_of(pairs.similarity, cutoffs)
    rank = {level: index for index, level in enumerate(LEVELS)}
    figures: dict[str, Any] = {}
    for level in LEVELS:
        mine = given == level
        owed = pairs.relation >= PROMISE[level]
        at_or_above = np.isin(given, LEVELS[: rank[level] + 1])
        figures[level] = {
            "cutoff": cutoffs[level],
            "pairs": int(mine.sum()),
            "precision": round(float(owed[mine].mean()), 4) if mine.any() else None,
            "recall": round(float(at_or_above[owed].mean()), 4) if owed.any() else None,
        }
    weak = given == "weak"
    figures["weak"] = {
        "pairs": int(weak.sum()),
        "same_kind_share": round(float((pairs.relation[weak] >= SAME_KIND).mean()), 4)
        if weak.any()
        else None,
    }
    own = pairs.own_similarity >= cutoffs["duplicate"]
    figures["duplicate"]["copies_found_as_duplicate"] = round(float(own.mean()), 4)
    figures["duplicate"]["per_edit"] = {
        edit: round(float(own[pairs.own_edit == edit].mean()), 3)
        for edit in dict.fromkeys(pairs.own_edit.tolist())
    }
    return figures


@dataclass(frozen=True, slots=True)
class DatasetEmbeddings:
    name: str
    halves: tuple[list[LabelledImage], list[LabelledImage]]
    catalogue: tuple[FloatArray, FloatArray]
    copies: tuple[FloatArray, FloatArray]
    targets: tuple[IntArray, IntArray]  # index into the half's catalogue of each copy's original
    edit_names: tuple[list[str], list[str]]
    list_sha256: str


@dataclass(frozen=True, slots=True)
class CalibrationOptions:
    datasets: tuple[Path, ...]
    products_per_dataset: int = 600
    originals_per_half: int = 160
    # Each original gets this many of the suite's edits (seeded): many originals with a few copies
    # each, not a few with every copy, whose near-identical result lists would count as one.
    edits_per_original: int = 5
    seed: int = 20261202
    cache_dir: Path | None = None


def _cache_key(embedder: Embedder, options: CalibrationOptions, images: list[LabelledImage]) -> str:
    digest = hashlib.sha256(
        f"{embedder.variant.sha256}|{embedder.model_version}|{options.seed}|"
        f"{options.products_per_dataset}|{options.originals_per_half}|{options.edits_per_original}".encode()
    )
    digest.update(inspect.getsource(edits_module).encode())  # a changed edit suite changes the copies
    for image in images:
        digest.update(image.key.encode())
        digest.update(hashlib.sha256(image.path.read_bytes()).digest())
    return digest.hexdigest()[:24]


def embed_dataset(
    dataset: Dataset, embedder: Embedder, options: CalibrationOptions, progress: Callable[[str], None]
) -> DatasetEmbeddings:
    root = dataset.root
    halves = split_halves(dataset.images, options.seed, options.products_per_dataset)
    cache_file = None
    arrays: dict[str, Any] = {}
    if options.cache_dir is not None:
        key = _cache_key(embedder, options, halves[0] + halves[1])
        cache_file = options.cache_dir / f"calibration-{root.name}-{key}.npz"
        if cache_file.is_file():
            progress(f"{root.name}: cached embeddings {cache_file}")
            with np.load(cache_file) as stored:
                arrays = {name: stored[name] for name in stored.files}
    if not arrays:
        for index, half in enumerate(halves):
            progress(f"{root.name}: half {index}: {len(half)} catalogue photos")
            arrays[f"catalogue{index}"] = embed_bytes(embedder, [i.path.read_bytes() for i in half])
            blobs: list[bytes] = []
            targets: list[int] = []
            names: list[str] = []
            rng = np.random.default_rng([options.seed, index])
            for original in neardup_originals(half, options.originals_per_half, options.seed + index):
                photo = decode_full(half[original].path.read_bytes())
                suite = list(edits(photo, seed=options.seed + original, with_padding=True))
                chosen = rng.choice(
                    len(suite), size=min(options.edits_per_original, len(suite)), replace=False
                )
                for edit, data in (suite[int(i)] for i in sorted(chosen)):
                    blobs.append(data)
                    targets.append(original)
                    names.append(edit)
            progress(f"{root.name}: half {index}: {len(blobs)} edited copies")
            arrays[f"copies{index}"] = embed_bytes(embedder, blobs)
            arrays[f"targets{index}"] = np.asarray(targets, dtype=np.int64)
            arrays[f"edits{index}"] = np.asarray(names)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            partial = cache_file.with_suffix(".partial.npz")
            np.savez(partial, **arrays)
            partial.replace(cache_file)
    return DatasetEmbeddings(
        name=root.name,
        halves=halves,
        catalogue=(arrays["catalogue0"], arrays["catalogue1"]),
        copies=(arrays["copies0"], arrays["copies1"]),
        targets=(arrays["targets0"], arrays["targets1"]),
        edit_names=(arrays["edits0"].tolist(), arrays["edits1"].tolist()),
        list_sha256=dataset.list_sha256(),
    )


@dataclass(frozen=True, slots=True)
class Calibration:
    cutoffs: dict[str, float]
    calibration_pairs: Pairs
    heldout_pairs: Pairs
    heldout: dict[str, Any]  # measure() on the held-out half, all datasets
    heldout_per_dataset: dict[str, dict[str, Any]]
    data: list[dict[str, Any]]


def calibrate(
    embedder: Embedder,
    options: CalibrationOptions,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    datasets: list[Dataset] | None = None,
) -> Calibration:
    """Cut-offs and held-out figures on `datasets` (default: options.datasets, read whole; a tuned
    model passes only its held-out images: it has seen the others)."""
    chosen = datasets if datasets is not None else [read_labelled_folder(root) for root in options.datasets]
    embedded = [embed_dataset(dataset, embedder, options, progress) for dataset in chosen]
    halves: list[list[Pairs]] = [[], []]
    for item in embedded:
        for index in (0, 1):
            labels = [image.category for image in item.halves[index]]
            halves[index].append(
                half_pairs(
                    item.name,
                    item.catalogue[index],
                    labels,
                    item.copies[index],
                    item.targets[index],
                    item.edit_names[index],
                )
            )
    calibration, heldout = Pairs.concat(halves[0]), Pairs.concat(halves[1])
    for part, name in ((calibration, "calibration"), (heldout, "held-out")):
        if len(part.similarity) < MIN_BAND_PAIRS or not (part.relation == DUPLICATE).any():
            raise MeasurementError(
                f"the {name} half gives {len(part.similarity)} result pairs: too few images to calibrate "
                "match levels (the model then answers match null)"
            )
    cutoffs = choose_cutoffs(calibration)
    per_dataset = {}
    for item in embedded:
        part = Pairs.concat([pairs for pairs in halves[1] if pairs.dataset[0] == item.name])
        per_dataset[item.name] = measure(part, cutoffs)
    data = [
        {
            "dataset": item.name,
            "list_sha256": item.list_sha256,
            "calibration_products": len(item.halves[0]),
            "heldout_products": len(item.halves[1]),
            "calibration_copies": len(item.copies[0]),
            "heldout_copies": len(item.copies[1]),
        }
        for item in embedded
    ]
    return Calibration(cutoffs, calibration, heldout, measure(heldout, cutoffs), per_dataset, data)
