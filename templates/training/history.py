"""Training records: the per-epoch logs of both phases as one history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras


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
