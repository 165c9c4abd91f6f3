"""Multi-label classification: examples that carry any number of labels.

A multi-label model ends in one sigmoid per label (``classification_head(...,
multi_label=True)``) and trains on multi-hot targets with binary cross-entropy; the
templates tell it from a single-label model by that last activation (`is_multi_label`),
so the same phases, plan, checkpoints and recipes train both.

    transfer = pretrained_model("mobilenet", num_classes=3, multi_label=True)
    run = run_transfer(transfer, train, validation, TransferPlan())   # multi-hot labels
    thresholds = choose_thresholds(*predict_multi_label(transfer.model, validation))
    multi_label_report(transfer.model, test, names, "runs/x/evaluation", thresholds)

(`predict_multi_label` and `multi_label_report` live in `templates.reports.evaluation`.)

While training, ``accuracy`` is the exact-match (subset) accuracy at 0.5: an example
counts only when every one of its labels is right; ``micro_f1`` and ``macro_f1`` are
compiled too (``--monitor val_micro_f1``). After training, each label gets its own
decision threshold, the one with the best F1 on validation data (`choose_thresholds`),
and the report gives micro / macro F1, per-label precision and recall, and the mean
average precision (threshold-free), from scikit-learn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from templates.data.errors import CookbookError
from templates.data.files import write_json

SEPARATOR = "|"
THRESHOLDS_FILE = "thresholds.json"


def is_multi_label(model: keras.Model) -> bool:
    """Whether ``model`` ends in sigmoids (multi-label) rather than a softmax: the
    activation of its last layer that has one, looking inside nested models (a head, a
    flip-averaging wrapper)."""
    return _output_activation(model) == "sigmoid"


def _output_activation(model) -> str | None:
    for layer in reversed(getattr(model, "layers", [])):
        if isinstance(layer, keras.Model):
            found = _output_activation(layer)
            if found is not None:
                return found
        activation = getattr(layer, "activation", None)
        if activation is not None:
            return getattr(activation, "__name__", None)
    return None


def multi_hot(label_lists: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """``[[0, 2], [1]]`` -> ``[[1, 0, 1], [0, 1, 0]]`` (float32)."""
    targets = np.zeros((len(label_lists), int(num_classes)), dtype="float32")
    for row, labels in enumerate(label_lists):
        for label in labels:
            if not 0 <= int(label) < num_classes:
                raise CookbookError(f"Label {label} is outside 0..{num_classes - 1}.")
            targets[row, int(label)] = 1.0
    return targets


def split_labels(text: str) -> list[str]:
    """``"cats|dogs"`` -> ``["cats", "dogs"]`` (stripped, empty parts dropped, once each)."""
    return list(dict.fromkeys(part.strip() for part in text.split(SEPARATOR) if part.strip()))


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class ExactMatchAccuracy(keras.metrics.MeanMetricWrapper):
    """Share of examples whose every label is right at ``threshold`` (subset accuracy)."""

    def __init__(self, threshold: float = 0.5, name: str = "accuracy", dtype=None):
        super().__init__(fn=_exact_match, name=name, dtype=dtype, threshold=threshold)
        self.threshold = threshold

    def get_config(self):
        return {"threshold": self.threshold, "name": self.name, "dtype": self.dtype}


def _exact_match(y_true, y_pred, threshold=0.5):
    predicted = ops.cast(y_pred >= threshold, "float32")
    wrong = ops.abs(predicted - ops.cast(y_true, "float32"))
    return ops.cast(ops.max(wrong, axis=-1) == 0, "float32")


def training_metrics() -> list[keras.metrics.Metric]:
    """What a multi-label model compiles: exact match (as ``accuracy``), micro and macro
    F1 at 0.5."""
    return [ExactMatchAccuracy(),
            keras.metrics.F1Score(average="micro", threshold=0.5, name="micro_f1"),
            keras.metrics.F1Score(average="macro", threshold=0.5, name="macro_f1")]


def choose_thresholds(probabilities: np.ndarray, targets: np.ndarray,
                      grid: Sequence[float] = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))
                      ) -> list[float]:
    """Each label's decision threshold: the one of ``grid`` with the best F1 on these
    (validation) examples; 0.5 for a label they never show."""
    from sklearn.metrics import f1_score

    thresholds = []
    for label in range(targets.shape[1]):
        if targets[:, label].sum() == 0:
            thresholds.append(0.5)
            continue
        scores = [f1_score(targets[:, label], probabilities[:, label] >= threshold,
                           zero_division=0) for threshold in grid]
        best = max(scores)  # ties: the threshold nearest 0.5
        candidates = [t for t, score in zip(grid, scores) if score == best]
        thresholds.append(float(min(candidates, key=lambda t: (abs(t - 0.5), t))))
    return thresholds


def multi_label_scores(probabilities: np.ndarray, targets: np.ndarray,
                       thresholds: Sequence[float], class_names: Sequence[str]
                       ) -> dict[str, Any]:
    """Exact-match accuracy, micro and macro F1, per-label precision / recall / F1 /
    support / average precision, and the mean average precision (labels present)."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    if probabilities.shape != targets.shape or targets.shape[1] != len(class_names):
        raise CookbookError(f"Predictions {probabilities.shape}, targets {targets.shape} and "
                            f"{len(class_names)} label names do not match.")
    predicted = (probabilities >= np.asarray(thresholds)[None, :]).astype(int)
    truth = targets.astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, average=None, zero_division=0)
    micro = precision_recall_fscore_support(truth, predicted, average="micro",
                                            zero_division=0)
    per_label, precisions = {}, []
    for index, name in enumerate(class_names):
        average_precision = (float(average_precision_score(truth[:, index],
                                                           probabilities[:, index]))
                             if truth[:, index].any() else None)
        if average_precision is not None:
            precisions.append(average_precision)
        per_label[name] = {"precision": float(precision[index]), "recall": float(recall[index]),
                           "f1": float(f1[index]), "support": int(support[index]),
                           "threshold": float(thresholds[index]),
                           "average_precision": average_precision}
    return {
        "exact_match": float(np.mean((predicted == truth).all(axis=1))),
        "micro": {"precision": float(micro[0]), "recall": float(micro[1]),
                  "f1": float(micro[2])},
        "macro": {measure: float(np.mean([row[measure] for row in per_label.values()]))
                  for measure in ("precision", "recall", "f1")},
        "mean_average_precision": float(np.mean(precisions)) if precisions else None,
        "per_label": per_label, "examples": int(len(targets)),
    }


def write_thresholds(thresholds: Sequence[float], class_names: Sequence[str],
                     directory: str | os.PathLike) -> str:
    """``thresholds.json`` beside a saved model: ``{label name: threshold}``; its
    presence tells `templates.export.predictor.Predictor` the model is multi-label."""
    path = os.path.join(os.fspath(directory), THRESHOLDS_FILE)
    write_json(path, {name: float(value) for name, value in zip(class_names, thresholds)})
    return path
