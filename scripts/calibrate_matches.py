"""Calibrate the match levels (duplicate, very_similar, similar, weak) of one model version.

    .venv/bin/python scripts/calibrate_matches.py [--model-dir M] [--variant int8] [--resize-mode squash]
        [--dataset DIR ...] [--write-card] [--plot docs/img/match_levels.png]
        [--out docs/bench/match_levels.json]

Embeds, with the production embedder of the model folder, one photo per product of each labelled
folder `DIR/<category>/[<product>/]<image>` (default: the Tux Paint stamps and 1,000 Fashion-MNIST
test images under .data/tune-data, made by `scripts/tune.py --fetch ...`) and edited copies of
some of them (lookalike_tuning.edits); chooses the cut-offs on one half of the products and
measures each level's precision and recall on the other (lookalike_tuning.calibrate says the
rule). --write-card records the cut-offs, with their provenance, in the folder's model_card.json
under match_levels["<variant>/<resize mode>"]: the query function then labels the results of that
model version. Prints a table and, last, one JSON line. Exit status 2: unusable input.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from lookalike_tuning.calibrate import LEVELS, TARGETS, CalibrationOptions
from lookalike_tuning.datasets import DatasetError
from lookalike_tuning.evaluate import MeasurementError
from lookalike_tuning.match_card import calibrate_model_folder
from lookalike_tuning.plots import plot_match_levels
from lookalike_tuning.production import BASE_MODEL_DIR, ModelCardError

REPO_ROOT = Path(__file__).resolve().parents[1]
TUNE_DATA = REPO_ROOT / ".data" / "tune-data"
DEFAULT_DATASETS = (TUNE_DATA / "tuxpaint", TUNE_DATA / "fashion-mnist-t10k-1000")
FETCH_HINT = (
    "fetch them with: .venv/bin/python scripts/tune.py --fetch tuxpaint --data-out .data/tune-data/tuxpaint; "
    ".venv/bin/python scripts/tune.py --fetch fashion-mnist --part t10k --per-class 100 "
    "--data-out .data/tune-data/fashion-mnist-t10k-1000"
)
EXIT_BAD_INPUT = 2


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=BASE_MODEL_DIR, help="a model folder (its card)")
    parser.add_argument("--variant", help="default: the card's default variant")
    parser.add_argument("--resize-mode", choices=("squash", "center_crop"), help="default: the card's")
    parser.add_argument("--dataset", type=Path, action="append", help="labelled folder (repeatable)")
    parser.add_argument("--products-per-dataset", type=int, default=600)
    parser.add_argument("--originals-per-half", type=int, default=160, help="photos given edited copies")
    parser.add_argument("--edits-per-original", type=int, default=5, help="of the edit suite, seeded")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".data" / "calibration-cache")
    parser.add_argument("--write-card", action="store_true", help="record the cut-offs in the model card")
    parser.add_argument("--plot", type=Path, help="similarity distributions with the cut-offs (PNG)")
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    return parser.parse_args(argv)


def table(summary: dict[str, Any]) -> str:
    lines = [f"{'level':<13} {'cut-off':>8} {'target':>7} {'pairs':>6} {'precision':>10} {'recall':>7}"]
    for level in LEVELS:
        row = summary["heldout"][level]
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        lines.append(
            f"{level:<13} {row['cutoff']:>8.4f} {TARGETS[level]:>7.2f} {row['pairs']:>6} "
            f"{precision:>10} {recall:>7}"
        )
    weak = summary["heldout"]["weak"]
    lines.append(f"{'weak':<13} {'':>8} {'':>7} {weak['pairs']:>6}  same kind {weak['same_kind_share']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    datasets = tuple(args.dataset or DEFAULT_DATASETS)
    missing = [str(path) for path in datasets if not path.is_dir()]
    if missing:
        hint = FETCH_HINT if not args.dataset else "give labelled folders DIR/<category>/[<product>/]<image>"
        print(f"error: no dataset folder {', '.join(missing)}; {hint}", file=sys.stderr)
        return EXIT_BAD_INPUT
    options = CalibrationOptions(
        datasets=datasets,
        products_per_dataset=args.products_per_dataset,
        originals_per_half=args.originals_per_half,
        edits_per_original=args.edits_per_original,
        seed=args.seed,
        cache_dir=args.cache_dir,
    )
    # The card and the docs name the command as run from the repository root.
    shown = ["scripts/calibrate_matches.py"]
    shown += [part.replace(str(REPO_ROOT) + "/", "") for part in (sys.argv[1:] if argv is None else argv)]
    try:
        result, entry, version = calibrate_model_folder(
            args.model_dir,
            options,
            variant=args.variant,
            resize_mode=args.resize_mode,
            threads=args.threads,
            command=shlex.join(shown),
            write_card=args.write_card,
        )
    except (DatasetError, MeasurementError, ModelCardError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary: dict[str, Any] = {
        "model_version": version,
        "cutoffs": result.cutoffs,
        "targets": TARGETS,
        "heldout": result.heldout,
        "heldout_per_dataset": result.heldout_per_dataset,
        "data": entry["data"],
        "written_to_card": args.write_card,
        "command": entry["command"],
    }
    if args.plot is not None:
        plot_match_levels(
            args.plot,
            result.calibration_pairs,
            result.cutoffs,
            title=f"{version}: calibration half ({', '.join(d['dataset'] for d in result.data)})",
        )
    print(table(summary), file=sys.stderr)
    line = json.dumps(summary)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
