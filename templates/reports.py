"""Training records and learning-curve plots (matplotlib, written atomically)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras

from templates.files import atomic_path


def merge_histories(phases: Sequence[tuple[str, keras.callbacks.History | dict]]) -> dict:
    """Join the histories of successive training phases into one record.

    Args:
        phases: ``(phase name, History or history dict)`` pairs, in training order.

    Returns:
        A JSON-ready dict: ``epoch`` (1-based, continuous across phases), ``phase`` (the
        phase of each epoch) and one list per metric (``accuracy``, ``val_loss``...).
        Metrics a phase did not record are ``None`` for its epochs.
    """
    records = [(name, getattr(h, "history", h)) for name, h in phases]
    metrics: list[str] = []
    for _, history in records:
        metrics.extend(key for key in history if key not in metrics)
    merged: dict[str, list[Any]] = {"epoch": [], "phase": [], **{key: [] for key in metrics}}
    for name, history in records:
        length = max((len(values) for values in history.values()), default=0)
        for index in range(length):
            merged["epoch"].append(len(merged["epoch"]) + 1)
            merged["phase"].append(name)
            for key in metrics:
                values = history.get(key, [])
                merged[key].append(float(values[index]) if index < len(values) else None)
    return merged


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
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return os.fspath(path)
