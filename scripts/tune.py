"""Tune Lookalike's embedding to one catalogue: a projection head on the frozen ONNX backbone,
trained with contrastive losses, written as a new model folder with held-out before/after figures.

    .venv/bin/python scripts/tune.py --dataset DIR --out MODEL_DIR [--pairs PAIRS.csv]
        [--holdout-classes A,B | --measure-per-class N] [--epochs N] [--dim 256] [--hidden 512] [--force] ...
    .venv/bin/python scripts/tune.py --fetch fashion-mnist|tuxpaint|openclipart --data-out DIR [--per-class N]
    .venv/bin/python scripts/tune.py --fetch catalogue --data-out DIR

--fetch catalogue exports the live catalogue: categories and product ids from the store
(DATABASE_URL; unset: the local stack's embedded database), photos from the bucket (S3_ENDPOINT_URL
for moto/MinIO; unset: AWS). Uncategorised images are left out and counted.

DIR is a labelled folder `DIR/<category>/[<product>/]<image>`. The last line printed is one JSON
object: the held-out figures of the base and the tuned model (or, with --fetch, what was written).
Exit status: 0 written; 2 unusable input (nothing written); 3 the tuned model is worse than the base
on held-out data (figures printed, nothing written; --force writes it anyway).
See docs/TUNING.md for the loop: export training data -> tune -> evaluate -> publish -> re-embed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from lookalike_tuning.catalogue_export import ExportSummary as CatalogueExport
from lookalike_tuning.catalogue_export import export_catalogue
from lookalike_tuning.datasets import DatasetError
from lookalike_tuning.evaluate import MeasurementError
from lookalike_tuning.fit import TrainingConfig
from lookalike_tuning.options import TuneOptions
from lookalike_tuning.pipeline import RefusedError, tune
from lookalike_tuning.production import ModelCardError
from lookalike_tuning.sources import (
    FASHION_PACKAGE,
    OPENCLIPART_PACKAGE,
    STAMPS_PACKAGE,
    STAMPS_SUBDIR,
    fetch_debian_package,
    materialise_fashion_mnist,
    materialise_openclipart,
    materialise_stamps,
    package_dir,
)
from lookalike_tuning.unfreeze import DEFAULT_BACKBONE_LEARNING_RATE, UnfreezeError, UnfreezeSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / ".data"
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3


def base_weight_argument(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        weight = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) or 'auto', got {value!r}") from None
    if not 0 <= weight < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) or 'auto', got {value}")
    return weight


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="labelled folder DIR/<category>/[<product>/]<image>")
    source.add_argument(
        "--fetch",
        choices=("fashion-mnist", "tuxpaint", "openclipart", "catalogue"),
        help="materialise a public data set, or export the live catalogue",
    )
    parser.add_argument("--out", type=Path, help="the new model folder (must not exist)")
    parser.add_argument("--data-out", type=Path, help="with --fetch: the labelled folder to write")
    parser.add_argument("--per-class", type=int, default=500, help="with --fetch fashion-mnist")
    parser.add_argument(
        "--part", choices=("train", "t10k"), default="train", help="with --fetch fashion-mnist"
    )
    parser.add_argument("--name", default="tuned", help="file name stem of the ONNX files")
    parser.add_argument("--pairs", type=Path, help="CSV key_a,key_b,similar|different (keys: paths in DIR)")
    parser.add_argument("--holdout-classes", default="", help="comma-separated classes never trained on")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of each class's products held out"
    )
    parser.add_argument(
        "--measure-per-class",
        type=int,
        help="measure on N held-out products per class (a seeded choice; the rest of the held-out "
        "part is neither trained on nor measured): held-out parts of one size across data set sizes",
    )
    parser.add_argument("--views", type=int, default=3, help="cached views per image (1 clean + augmented)")
    parser.add_argument(
        "--neardup-originals", type=int, default=60, help="held-out photos given edited copies"
    )
    parser.add_argument("--calibration-views", type=int, default=50, help="int8 calibration views")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--cache-dir", type=Path, default=DATA_DIR / "tune-cache")
    parser.add_argument("--trim-borders", action="store_true", help="trim plain borders before embedding")
    parser.add_argument(
        "--min-map-gain", type=float, default=0.0, help="refuse unless mAP@10 gains this much"
    )
    parser.add_argument("--force", action="store_true", help="write the model even when it is worse")
    parser.add_argument(
        "--base-weight",
        type=base_weight_argument,
        default=0.0,
        help="> 0: concatenate the base model's view (--base-part) with this cosine weight; 'auto': "
        "choose it on a development part of the training images (trains twice)",
    )
    parser.add_argument(
        "--base-part",
        choices=("pca", "full", "trunk"),
        default="pca",
        help="with --base-weight: the base model's PCA view (D doubles), its whole embedding (D + 1280), "
        "or with --unfreeze-blocks the frozen trunk's pooled output (D + 192, no extra computation)",
    )
    parser.add_argument(
        "--unfreeze-blocks",
        type=int,
        default=0,
        help="also train the backbone's last N blocks with a linear head (torch, in the export "
        "environment: make export-env)",
    )
    parser.add_argument(
        "--development-only",
        action="store_true",
        help="with --base-weight auto: print the development part's figures and stop (compare "
        "settings without looking at the held-out part); nothing is written",
    )
    parser.add_argument("--backbone-learning-rate", type=float, default=DEFAULT_BACKBONE_LEARNING_RATE)
    parser.add_argument("--base-model-dir", type=Path, help="default: layers/model/model")
    parser.add_argument(
        "--extra-train",
        type=Path,
        help="another labelled folder, added to the training part only (never held out or measured)",
    )
    parser.add_argument("--report", type=Path, help="also write the summary and the full card here (JSON)")
    parser.add_argument(
        "--plot", type=Path, help="PNG: same-class vs different-class cosine, before and after"
    )
    defaults = TrainingConfig()
    parser.add_argument("--dim", type=int, default=defaults.output_dim)
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help="0: a linear head")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument(
        "--temperature", type=float, default=defaults.temperature, help="of the category term"
    )
    parser.add_argument(
        "--instance-temperature",
        type=float,
        default=defaults.instance_temperature,
        help="of the instance term (lower: look-alike photos pushed harder apart)",
    )
    parser.add_argument("--category-weight", type=float, default=defaults.category_weight)
    parser.add_argument("--instance-weight", type=float, default=defaults.instance_weight)
    parser.add_argument("--pair-weight", type=float, default=defaults.pair_weight)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    arguments = parser.parse_args(argv)
    if arguments.dataset is not None and arguments.out is None:
        parser.error("--dataset needs --out MODEL_DIR")
    if arguments.development_only and (arguments.base_weight != "auto" or arguments.plot is not None):
        parser.error("--development-only needs --base-weight auto and draws no --plot")
    if arguments.fetch is not None and arguments.data_out is None:
        parser.error("--fetch needs --data-out DIR")
    return arguments


def fetch_catalogue(partial: Path) -> CatalogueExport:
    # The AWS edge and the local database are only needed here: imported on use.
    from lookalike.settings import get_settings
    from lookalike_aws.runtime import get_store
    from lookalike_aws.s3 import S3ObjectSource
    from lookalike_local.embedded_db import ensure_database_url

    ensure_database_url()
    settings = get_settings()
    return export_catalogue(get_store(), S3ObjectSource(), partial, max_bytes=settings.max_image_bytes)


def fetch(arguments: argparse.Namespace) -> dict[str, Any]:
    out: Path = arguments.data_out
    if out.exists():
        raise DatasetError(f"{out} exists: remove it or choose another folder")
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        if arguments.fetch == "catalogue":
            exported = fetch_catalogue(partial)
            partial.rename(out)
            return {"fetched": "catalogue", **dataclasses.asdict(exported), "out": str(out)}
        if arguments.fetch == "openclipart":
            root = fetch_debian_package(OPENCLIPART_PACKAGE, package_dir(OPENCLIPART_PACKAGE, DATA_DIR))
            written = materialise_openclipart(root, partial)
        elif arguments.fetch == "fashion-mnist":
            root = fetch_debian_package(FASHION_PACKAGE, package_dir(FASHION_PACKAGE, DATA_DIR))
            written = materialise_fashion_mnist(
                root, partial, per_class=arguments.per_class, seed=arguments.seed, part=arguments.part
            )
        else:
            root = fetch_debian_package(STAMPS_PACKAGE, package_dir(STAMPS_PACKAGE, DATA_DIR))
            written = materialise_stamps(root / STAMPS_SUBDIR, partial)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {"fetched": arguments.fetch, "images": written, "out": str(out)}


def write_report(
    arguments: argparse.Namespace,
    argv: list[str] | None,
    summary: dict[str, Any],
    card: dict[str, Any] | None,
) -> None:
    """--report: the command, the JSON summary and (when written) the model card, for docs/bench."""
    if arguments.report is None:
        return
    command = "scripts/tune.py " + " ".join(sys.argv[1:] if argv is None else argv)
    arguments.report.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "summary": summary, "card": card}
    arguments.report.write_text(json.dumps(payload, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    arguments = parse(argv)
    try:
        if arguments.fetch is not None:
            print(json.dumps(fetch(arguments)), flush=True)
            return 0
        options = TuneOptions(
            dataset_dir=arguments.dataset,
            out_dir=arguments.out,
            name=arguments.name,
            pairs_csv=arguments.pairs,
            holdout_classes=tuple(name for name in arguments.holdout_classes.split(",") if name),
            test_fraction=arguments.test_fraction,
            measure_per_class=arguments.measure_per_class,
            views=arguments.views,
            neardup_originals=arguments.neardup_originals,
            calibration_views=arguments.calibration_views,
            threads=arguments.threads,
            cache_dir=arguments.cache_dir,
            trim_borders=arguments.trim_borders,
            min_map_gain=arguments.min_map_gain,
            base_weight=arguments.base_weight,
            base_part=arguments.base_part,
            unfreeze=UnfreezeSettings(arguments.unfreeze_blocks, arguments.backbone_learning_rate)
            if arguments.unfreeze_blocks
            else None,
            force=arguments.force,
            base_model_dir=arguments.base_model_dir,
            extra_train_dir=arguments.extra_train,
            development_only=arguments.development_only,
            training=TrainingConfig(
                output_dim=arguments.dim,
                hidden=arguments.hidden,
                epochs=arguments.epochs,
                batch_size=arguments.batch_size,
                learning_rate=arguments.learning_rate,
                temperature=arguments.temperature,
                instance_temperature=arguments.instance_temperature,
                category_weight=arguments.category_weight,
                instance_weight=arguments.instance_weight,
                pair_weight=arguments.pair_weight,
                seed=arguments.seed,
            ),
        )
        outcome = tune(options)
    except (DatasetError, MeasurementError, ModelCardError, FileExistsError, UnfreezeError) as error:
        print(f"error: {error}", file=sys.stderr)
        print(json.dumps({"error": str(error)}), flush=True)
        return EXIT_BAD_INPUT
    except RefusedError as refused:
        print(f"refused: the tuned model is worse than the base on held-out data: {refused}", file=sys.stderr)
        write_report(arguments, argv, refused.summary, card=None)
        print(json.dumps(refused.summary), flush=True)
        return EXIT_REFUSED
    summary = outcome.summary
    if arguments.plot is not None:
        from lookalike_tuning.plots import plot_similarities

        plot_similarities(
            arguments.plot,
            outcome.base_embeddings,
            outcome.tuned_embeddings,
            outcome.heldout_labels,
            title=f"held-out {arguments.dataset.name}",
        )
    card = None if arguments.development_only else json.loads((arguments.out / "model_card.json").read_text())
    write_report(arguments, argv, summary, card=card)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
