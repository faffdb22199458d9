"""The plot the issue asks for: same-class vs different-class cosine, before and after tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

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
