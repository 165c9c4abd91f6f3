"""Metrics for imbalanced classes, as Keras metrics early stopping can watch.

Accuracy rewards a model that always answers the majority class. `BalancedAccuracy`
(the mean recall over the classes present) and `MacroF1` (the unweighted mean F1 over
classes) count every class equally. Both take integer labels and class probabilities,
like ``sparse_categorical_crossentropy``, and accumulate a confusion matrix over the
epoch, so the epoch's value is exact, not a mean of batch values. A recipe's
``--monitor val_balanced_accuracy`` or ``--monitor val_macro_f1`` compiles them in
(`templates.training.compilation.compile_classifier`) and stops early or restores the best epoch by
them; the evaluation report computes the same numbers with scikit-learn.
"""

from __future__ import annotations

import keras
from keras import ops

from templates.data.errors import CookbookError


class _ConfusionMetric(keras.metrics.Metric):
    """Accumulates a ``[true][predicted]`` confusion matrix over an epoch."""

    def __init__(self, num_classes: int, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        if int(num_classes) < 2:
            raise CookbookError(f"{name} needs at least 2 classes; got {num_classes}.")
        self.num_classes = int(num_classes)
        self.matrix = self.add_variable(shape=(self.num_classes, self.num_classes),
                                        initializer="zeros", name="confusion",
                                        dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.num_classes)
        predicted = ops.one_hot(ops.argmax(ops.reshape(y_pred, (-1, self.num_classes)),
                                           axis=-1), self.num_classes)
        if sample_weight is not None:
            true = true * ops.reshape(ops.cast(sample_weight, true.dtype), (-1, 1))
        self.matrix.assign_add(ops.matmul(ops.transpose(true), predicted))

    def reset_state(self):
        self.matrix.assign(ops.zeros((self.num_classes, self.num_classes)))

    def _counts(self):
        hits = ops.diagonal(self.matrix)
        return hits, ops.sum(self.matrix, axis=1), ops.sum(self.matrix, axis=0)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class BalancedAccuracy(_ConfusionMetric):
    """Mean recall over the classes present in the labels seen this epoch."""

    def __init__(self, num_classes: int, name: str = "balanced_accuracy", **kwargs):
        super().__init__(num_classes, name=name, **kwargs)

    def result(self):
        hits, support, _ = self._counts()
        present = ops.cast(support > 0, "float32")
        recall = hits / ops.maximum(support, 1.0)
        return ops.sum(recall * present) / ops.maximum(ops.sum(present), 1.0)


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class MacroF1(_ConfusionMetric):
    """Unweighted mean of the per-class F1 scores (0 for a class never predicted or
    never seen, as scikit-learn's ``zero_division=0``)."""

    def __init__(self, num_classes: int, name: str = "macro_f1", **kwargs):
        super().__init__(num_classes, name=name, **kwargs)

    def result(self):
        hits, support, predicted = self._counts()
        precision = hits / ops.maximum(predicted, 1.0)
        recall = hits / ops.maximum(support, 1.0)
        f1 = 2 * precision * recall / ops.maximum(precision + recall, 1e-12)
        return ops.mean(f1)


def metrics_for(monitor: str, num_classes: int) -> list[keras.metrics.Metric]:
    """The metric ``monitor`` (``"val_balanced_accuracy"``...) needs compiled in, if any."""
    name = monitor[len("val_"):] if monitor.startswith("val_") else monitor
    if name == "balanced_accuracy":
        return [BalancedAccuracy(num_classes)]
    if name == "macro_f1":
        return [MacroF1(num_classes)]
    return []
