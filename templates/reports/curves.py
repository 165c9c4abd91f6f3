"""Learning-curve plots (matplotlib, written atomically).
"""

from __future__ import annotations

import os

from templates.data.files import atomic_path


def plot_learning_curves(
    history: dict, path: str | os.PathLike, title: str = "Learning curves"
) -> str:
    """Plot accuracy and loss per epoch, training and validation, phases marked.

    Args:
        history: A record from `merge_histories`.
        path: Destination PNG.
        title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = history["epoch"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("accuracy", "loss")):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            values = history.get(key)
            if values and any(v is not None for v in values):
                points = [(e, v) for e, v in zip(epochs, values) if v is not None]
                axis.plot(*zip(*points), style, markersize=3,
                          label="validation" if key.startswith("val_") else "training")
        phases = history.get("phase", [])
        for index in range(1, len(phases)):
            if phases[index] != phases[index - 1]:
                boundary = epochs[index] - 0.5
                axis.axvline(boundary, color="gray", linestyle=":")
                axis.annotate(f"{phases[index]} starts", (boundary, 0.5),
                              xycoords=("data", "axes fraction"), rotation=90,
                              va="center", ha="right", fontsize=8, color="gray")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.set_title(metric.capitalize())
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
        else:  # a head that needed no training (the nearest class mean)
            axis.text(0.5, 0.5, "no epochs trained", transform=axis.transAxes,
                      ha="center", va="center", color="gray")
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return os.fspath(path)
