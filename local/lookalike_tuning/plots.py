"""Plots: same-class vs different-class cosine before and after tuning; the match levels' cut-offs
over the similarity distributions they came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from lookalike_tuning.calibrate import DIFFERENT, DUPLICATE, LEVELS, RELATION_NAMES, SAME_KIND, Pairs
from lookalike_tuning.evaluate import same_vs_different_similarities

FloatArray = npt.NDArray[np.float32]


def plot_similarities(
    path: Path, base: FloatArray, tuned: FloatArray, labels: list[str], *, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for axis, (name, embeddings) in zip(axes, (("base", base), ("tuned", tuned)), strict=True):
        same, different = same_vs_different_similarities(embeddings, labels)
        bins = np.linspace(min(same.min(), different.min()), 1.0, 60)
        axis.hist(different, bins=bins, density=True, alpha=0.6, label="different class")
        axis.hist(same, bins=bins, density=True, alpha=0.6, label="same class")
        axis.set_title(f"{name}: {title}")
        axis.set_xlabel("cosine similarity")
        axis.legend()
    axes[0].set_ylabel("density")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_match_levels(path: Path, pairs: Pairs, cutoffs: dict[str, float], *, title: str) -> None:
    """Similarity distributions of the calibration pairs per relation, one panel per dataset, the
    cut-offs as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(pairs.dataset.tolist()))
    figure, axes = plt.subplots(len(names), 1, figsize=(9, 2.9 * len(names)), sharex=True, squeeze=False)
    bins = np.linspace(max(0.0, float(pairs.similarity.min())), 1.0, 70).tolist()
    styles = {"duplicate": "-", "very_similar": "--", "similar": ":"}
    heights = {"duplicate": 0.97, "very_similar": 0.75, "similar": 0.97}  # the two upper ones are close
    for axis, name in zip(axes[:, 0], names, strict=True):
        mine = pairs.dataset == name
        for relation in (DIFFERENT, SAME_KIND, DUPLICATE):
            values = pairs.similarity[mine & (pairs.relation == relation)]
            label = f"{RELATION_NAMES[relation]} ({len(values)} pairs)"
            axis.hist(values, bins=bins, density=True, alpha=0.55, label=label)
        for level in LEVELS:
            axis.axvline(cutoffs[level], color="black", linestyle=styles[level], linewidth=1.2)
            axis.text(
                cutoffs[level],
                axis.get_ylim()[1] * heights[level],
                f" {level}\n {cutoffs[level]:.3f}",
                fontsize=8,
                va="top",
            )
        axis.set_ylabel("density")
        axis.set_title(name, fontsize=9, loc="left")
        axis.legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("cosine similarity of a query and one of its top-10 results")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
