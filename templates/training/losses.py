"""The training loss of a classifier, chosen from its outputs and the plan.

Integer labels train with sparse categorical cross-entropy; with label smoothing,
`SmoothedSparseCrossentropy` (Keras's sparse loss has no smoothing, its one-hot loss
does); a multi-label model (sigmoid outputs) with binary cross-entropy, where smoothing
moves every target towards 0.5.
"""

from __future__ import annotations

import keras
from keras import ops

from templates.data.errors import CookbookError
from templates.data.multi_label import is_multi_label


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels against smoothed targets: the true class gets
    ``1 - label_smoothing + label_smoothing / classes``, every other class
    ``label_smoothing / classes`` (Szegedy et al. 2016). Class weights keep working:
    the labels stay integers."""

    def __init__(self, label_smoothing: float = 0.1, name: str = "smoothed_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise CookbookError(f"label_smoothing must be in [0, 1); got {label_smoothing}.")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        targets = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"),
                              ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(
            targets, ops.reshape(y_pred, ops.shape(targets)),
            label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def classification_loss(model: keras.Model, label_smoothing: float = 0.0):
    """The loss ``model`` trains with: binary cross-entropy for a multi-label model,
    else sparse categorical cross-entropy (smoothed when ``label_smoothing`` > 0)."""
    if is_multi_label(model):
        return (keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
                if label_smoothing else "binary_crossentropy")
    if label_smoothing:
        return SmoothedSparseCrossentropy(label_smoothing)
    return "sparse_categorical_crossentropy"
