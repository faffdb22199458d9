"""scripts/tune.py end to end on tiny real data: the sample catalogue's photos as a labelled folder.

Seconds of training: quality is the benchmark's business (docs/TUNING.md), these tests prove the
path. The written folder loads in the production embedder with its card's dimension, the int8
variant is close to fp32, the refusal path (exit 3) and bad input (exit 2) leave nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import ImageOps
from script_runs import run_script, sample_labelled_folder

from lookalike.images import decode_image
from lookalike.model.card import load_model_card
from lookalike.model.embedder import Embedder
from lookalike_local.catalogue import catalogue
from lookalike_tuning.base_weight import GRID, PROBE_WEIGHT, at_weight, choose
from lookalike_tuning.calibrate import MIN_HALF_PRODUCTS
from lookalike_tuning.compose import BasePart, compose
from lookalike_tuning.datasets import read_labelled_folder, split_by_product
from lookalike_tuning.fit import TrainingConfig
from lookalike_tuning.train import head_output, init_head

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
TUNE = REPO_ROOT / "scripts" / "tune.py"
# Small and fast: a 32-d head, few views, few edited copies, few calibration views.
FAST = [
    "--dim", "32", "--hidden", "64", "--epochs", "15", "--batch-size", "32", "--views", "2",
    "--neardup-originals", "2", "--calibration-views", "4", "--test-fraction", "0.3", "--threads", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def catalogue_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR/<category>/<product>/<photo> from the sample catalogue, its broken upload included
    (an unreadable image to skip), less the one category that has a single photo."""
    return sample_labelled_folder(
        tmp_path_factory.mktemp("catalogue"), skip_categories={"collectibles"}, keep_unreadable=True
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tune-cache")


def run_tune(*arguments: str | Path) -> tuple[int, dict[str, Any], str]:
    return run_script(TUNE, *arguments, timeout=240)


def leftovers(parent: Path) -> list[str]:
    return sorted(path.name for path in parent.iterdir()) if parent.exists() else []


@pytest.fixture(scope="module")
def tuned(catalogue_folder: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tuned-model"
    # --force: seconds of training on ~30 photos need not beat the base; the refusal has its own test.
    # --base-weight: the concatenated variant, whose int8 graph has the most to get wrong.
    code, summary, stderr = run_tune(
        "--dataset",
        catalogue_folder,
        "--out",
        out,
        "--cache-dir",
        cache_dir,
        "--force",
        "--base-weight",
        "0.3",
        *FAST,
    )
    assert code == 0, stderr
    assert summary["written"] is True
    assert "food-drink/damaged-upload/truncated.jpg" in stderr  # skipped and listed
    return out


def test_the_written_model_loads_in_the_production_embedder(tuned: Path) -> None:
    card = load_model_card(tuned)
    assert card.embedding_dim == 64  # --dim 32, doubled by the concatenated base part
    assert card.logits_output is None
    assert sorted(card.variants) == ["fp32", "int8"]
    photos = [decode_image(obj.body(), max_bytes=10**8, max_pixels=10**8).image for obj in catalogue()[:6]]
    for variant in ("fp32", "int8"):
        vectors = Embedder(card, variant=variant).embed(photos).vectors
        assert vectors.shape == (6, 64)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    fp32 = Embedder(card, variant="fp32").embed(photos).vectors
    int8 = Embedder(card, variant="int8").embed(photos).vectors
    assert float(np.min(np.sum(fp32 * int8, axis=1))) > 0.9
    assert card.default_variant == "int8"  # the int8 gate passed


def test_the_card_records_parent_data_training_and_both_sets_of_figures(tuned: Path) -> None:
    raw = json.loads((tuned / "model_card.json").read_text())
    base = load_model_card(REPO_ROOT / "layers" / "model" / "model")
    assert raw["parent"] == {"model_version": base.model_version, "card_sha256": base.card_sha256}
    assert raw["model_version"].startswith(f"{base.model_version}+tuned-")
    assert raw["outputs"]["embedding"]["shape"] == ["N", 64]
    assert raw["embedding_dim"] == 64
    assert raw["preprocessing"] == base.raw["preprocessing"] | {"trim_borders": False}
    assert raw["data"]["unreadable_skipped"] == ["food-drink/damaged-upload/truncated.jpg"]
    assert sum(raw["data"]["counts_per_class"].values()) == raw["data"]["images"]
    assert raw["training"]["output_dim"] == 32
    for side in ("base", "tuned"):
        figures = raw["heldout_metrics"][side]
        for key in ("category_map_at_10", "neardup_recall_at_1", "neardup_padded_recall_at_1"):
            assert 0.0 <= figures[key] <= 1.0
    assert raw["heldout_metrics"]["tuned"]["model_version"].startswith(raw["model_version"])
    quantization = raw["variants"]["int8"]["quantization"]
    assert 0.9 < quantization["cosine_to_fp32_mean"] <= 1.0
    for entry in raw["variants"].values():
        data = (tuned / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
    assert not [p for p in tuned.parent.iterdir() if ".partial-" in p.name]


def test_a_heldout_part_too_small_to_calibrate_leaves_the_card_without_match_levels(tuned: Path) -> None:
    """~10 held-out photos cannot say what a similarity means: no cut-offs rather than made-up ones
    (the model then answers match null); docs/TUNING.md."""
    raw = json.loads((tuned / "model_card.json").read_text())
    assert raw["data"]["heldout_images"] < 2 * MIN_HALF_PRODUCTS
    assert "match_levels" not in raw


def test_a_model_worse_than_asked_is_refused_and_nothing_is_written(
    catalogue_folder: Path, cache_dir: Path, tmp_path: Path
) -> None:
    # No head can gain a whole 1.0 of mAP@10: the refusal path, deterministically.
    out = tmp_path / "refused-model"
    code, summary, stderr = run_tune(
        "--dataset", catalogue_folder, "--out", out, "--cache-dir", cache_dir, "--min-map-gain", "1.0", *FAST
    )
    assert code == 3, stderr
    assert "refused" in stderr
    assert summary["written"] is False
    assert summary["refused_because"]
    assert "category_map_at_10" in summary["base"]
    assert "category_map_at_10" in summary["tuned"]
    # The near-duplicate difference's interval (copies resampled by original) brackets the figures'.
    low, high = summary["neardup_difference_ci95"]
    difference = summary["tuned"]["neardup_recall_at_1"] - summary["base"]["neardup_recall_at_1"]
    assert -1.0 <= low - 1e-4 <= difference <= high + 1e-4 <= 1.0
    net = (summary["neardup_gained"] - summary["neardup_lost"]) / summary["neardup_copies"]
    assert net == pytest.approx(difference, abs=1e-4)
    assert leftovers(tmp_path) == []


def write_photos(root: Path, keys: list[str]) -> None:
    body = catalogue()[0].body()
    for key in keys:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(body)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([], "no readable images"),
        (["cats/a.jpg", "cats/b.jpg"], "only one class"),
        (["cats/a.jpg", "cats/b.jpg", "cups/a.jpg"], "fewer than 2 images: cups"),
    ],
)
def test_unusable_folders_exit_2_with_a_message_and_write_nothing(
    tmp_path: Path, keys: list[str], message: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_photos(data, keys)
    models = tmp_path / "models"
    code, summary, stderr = run_tune("--dataset", data, "--out", models / "m", *FAST)
    assert code == 2
    assert message in stderr
    assert message in summary["error"]
    assert leftovers(models) == []


def test_a_pairs_csv_naming_unknown_keys_exits_2(catalogue_folder: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("animals/tabby-cat/front.jpg,animals/tabby-cat/nope.jpg,similar\n")
    code, _, stderr = run_tune(
        "--dataset", catalogue_folder, "--out", tmp_path / "m", "--pairs", pairs, *FAST
    )
    assert code == 2
    assert "animals/tabby-cat/nope.jpg" in stderr
    assert leftovers(tmp_path) == ["pairs.csv"]


def test_an_existing_output_folder_is_never_overwritten(catalogue_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, stderr = run_tune("--dataset", catalogue_folder, "--out", out, *FAST)
    assert code == 2
    assert "exists" in stderr
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(("base_weight", "base_part"), [(0.0, "pca"), (0.4, "pca"), (0.4, "full")])
def test_the_composed_graph_computes_what_the_numpy_head_computes(
    tmp_path: Path, base_weight: float, base_part: BasePart
) -> None:
    """The ONNX head (MatMul/Add/Relu/LpNormalization, optional Concat) equals the trained
    NumPy head applied to the base model's embedding, on real photos."""
    base_card = load_model_card(REPO_ROOT / "layers" / "model" / "model")
    photos = [decode_image(obj.body(), max_bytes=10**8, max_pixels=10**8).image for obj in catalogue()[:8]]
    base = Embedder(base_card, variant="fp32").embed(photos).vectors
    rng = np.random.default_rng(0)
    head = init_head(base.astype(np.float64), output_dim=6, hidden=16, rng=rng)
    head.W2 += rng.normal(0, 0.05, head.W2.shape)  # a head that is not the identity-like start
    path = tmp_path / "head_fp32.onnx"
    compose(base_card.variant("fp32").path, head, path, base_weight=base_weight, base_part=base_part)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == ["embedding"]
    composed = session.run(None, {"input": Embedder(base_card, variant="fp32").preprocess(photos)})[0]
    expected = head_output(head, base, base_weight, base_part)
    assert composed.shape == (8, {"pca": 12, "full": 6 + 1280}[base_part] if base_weight else 6)
    np.testing.assert_allclose(composed, expected, atol=2e-4)


@pytest.mark.parametrize("base_part", ["pca", "full"])
def test_a_graph_composed_at_the_probe_weight_gives_every_weight(tmp_path: Path, base_part: BasePart) -> None:
    """--base-weight auto scores every weight from one graph: its vectors at 0.2 and 0.7 are those
    of graphs composed at 0.2 and 0.7."""
    base_card = load_model_card(REPO_ROOT / "layers" / "model" / "model")
    photos = [decode_image(obj.body(), max_bytes=10**8, max_pixels=10**8).image for obj in catalogue()[:6]]
    embedder = Embedder(base_card, variant="fp32")
    head = init_head(embedder.embed(photos).vectors.astype(np.float64), 6, 0, np.random.default_rng(1))
    batch = embedder.preprocess(photos)

    def composed_at(weight: float) -> np.ndarray:
        path = tmp_path / f"{base_part}-{weight}.onnx"
        compose(base_card.variant("fp32").path, head, path, base_weight=weight, base_part=base_part)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {"input": batch})[0])

    probe = composed_at(PROBE_WEIGHT)
    base_dim = probe.shape[1] - 6
    for weight in (0.2, 0.7):
        np.testing.assert_allclose(at_weight(probe, base_dim, weight), composed_at(weight), atol=1e-5)


@pytest.fixture(scope="module")
def products_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every readable sample photo as three products of its category (itself, mirrored, cropped):
    enough products per class to split a development part off the training part."""
    root = tmp_path_factory.mktemp("products")
    for obj in catalogue():
        if obj.category == "collectibles" or "truncated" in obj.filename:
            continue
        photo = decode_image(obj.body(), max_bytes=10**8, max_pixels=10**8).image
        width, height = photo.size
        copies = {
            obj.product_id: photo,
            f"{obj.product_id}-mirrored": ImageOps.mirror(photo),
            f"{obj.product_id}-cropped": photo.crop((width // 8, height // 8, width, height)),
        }
        for product, image in copies.items():
            path = root / obj.category / product / f"{Path(obj.filename).stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
    return root


def run_auto(folder: Path, out: Path, cache_dir: Path, *arguments: str) -> tuple[int, dict[str, Any], str]:
    return run_tune(
        "--dataset",
        folder,
        "--out",
        out,
        "--cache-dir",
        cache_dir,
        "--base-weight",
        "auto",
        *arguments,
        *FAST,
    )


def test_base_weight_auto_refuses_a_training_part_too_small_to_split(
    catalogue_folder: Path, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "auto"
    code, summary, stderr = run_auto(catalogue_folder, out, cache_dir, "--force")
    assert code == 2, stderr
    assert "--base-weight auto" in summary["error"]
    assert "give --base-weight a number instead" in summary["error"]
    assert leftovers(tmp_path) == []


def test_base_weight_auto_chooses_on_a_development_part_and_records_it(
    products_folder: Path, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "auto"
    code, summary, stderr = run_auto(products_folder, out, cache_dir, "--force")
    assert code == 0, stderr
    card = json.loads((out / "model_card.json").read_text())
    choice = card["training"]["base_weight_choice"]
    assert [entry["weight"] for entry in choice["grid"]] == list(GRID)
    assert choice["weight"] == card["training"]["base_weight"] == summary["base_weight"]
    assert choice["weight"] == choose(choice["grid"], choice["tolerance"])
    for entry in choice["grid"]:
        low, high = entry["neardup_difference_ci95"]
        difference = entry["neardup_recall_at_1"] - choice["base"]["neardup_recall_at_1"]
        assert low - 1e-4 <= difference <= high + 1e-4
        net = (entry["neardup_gained"] - entry["neardup_lost"]) / entry["neardup_copies"]
        assert net == pytest.approx(difference, abs=1e-4)
    # The development part comes out of the training part, never out of the held-out part.
    assert choice["development_images"] + choice["trained_images"] == summary["train_images"]
    assert summary["heldout_images"] == heldout_without_extra(products_folder)
    assert card["embedding_dim"] == (64 if choice["weight"] > 0 else 32)
    assert load_model_card(out).embedding_dim == card["embedding_dim"]
    assert "choosing on" in stderr


def heldout_without_extra(folder: Path) -> int:
    dataset = read_labelled_folder(folder)
    return len(split_by_product(dataset.images, test_fraction=0.3, seed=TrainingConfig().seed).test)


def test_a_pairs_csv_joins_the_loss_and_trimming_joins_the_card(
    catalogue_folder: Path, cache_dir: Path, tmp_path: Path
) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "key_a,key_b,label\n"
        "space/astronaut-portrait/front.jpg,space/launch-rocket/front.jpg,similar\n"
        "animals/tabby-cat/front.jpg,vehicles/red-motorcycle/front.jpg,different\n"
        "nature/garden-flower/front.jpg,medical/retina-scan/front.jpg,different\n"
    )
    extra = tmp_path / "extra"  # two more classes, for training only
    for category in ("space", "animals"):
        shutil.copytree(catalogue_folder / category, extra / f"more-{category}")
    extra_images = sum(1 for path in extra.rglob("*") if path.is_file())
    out = tmp_path / "with-pairs"
    code, summary, stderr = run_tune(
        "--extra-train",
        extra,
        "--dataset",
        catalogue_folder,
        "--out",
        out,
        "--cache-dir",
        cache_dir,
        "--pairs",
        pairs,
        "--trim-borders",
        "--force",
        *FAST,
    )
    assert code == 0, stderr
    assert "pairs:" in stderr  # how many pairs fell inside the training part
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["pairs_csv"] == "pairs.csv"
    assert "pair contrastive" in card["training"]["loss"]
    assert summary["written"] is True
    assert card["data"]["extra_train"]["images"] == extra_images
    assert f"({extra_images} of them from --extra-train)" in stderr
    # The extra folder only trains: the held-out part is the dataset's own.
    assert (
        card["data"]["heldout_images"] == summary["heldout_images"] == heldout_without_extra(catalogue_folder)
    )
    # Trained on trimmed views, so the model trims what it embeds in production too.
    assert card["preprocessing"]["trim_borders"] is True
    assert Embedder(load_model_card(out)).preprocessing.trim_borders


def test_development_only_prints_the_development_figures_and_writes_nothing(
    products_folder: Path, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models" / "never-written"
    code, summary, stderr = run_auto(products_folder, out, cache_dir, "--development-only")
    assert code == 0, stderr
    assert summary["written"] is False
    assert summary["development_only"] is True
    choice = summary["base_weight_choice"]
    assert [entry["weight"] for entry in choice["grid"]] == list(GRID)
    assert choice["development_images"] + choice["trained_images"] == summary["train_images"]
    assert leftovers(out.parent) == []
    code, _, stderr = run_tune("--dataset", products_folder, "--out", out, "--development-only", *FAST)
    assert code == 2
    assert "--development-only needs --base-weight auto" in stderr
