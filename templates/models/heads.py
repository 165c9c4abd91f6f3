"""Classification heads that sit on top of a reused feature extractor."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from templates.data.errors import CookbookError

POOLINGS = ("avg", "max", "flatten")


def classification_head(
    feature_shape: Sequence[int],
    num_classes: int,
    pooling: str = "avg",
    dropout: float = 0.2,
    hidden_units: Sequence[int] = (),
    name: str = "head",
    multi_label: bool = False,
) -> keras.Model:
    """A small classifier taking a feature map (or feature vector) to class probabilities.

    The output layer computes in float32 even under a mixed-precision policy, so the
    softmax and the loss stay numerically safe.

    Args:
        feature_shape: Shape of one example's features, without the batch axis:
            ``(height, width, channels)`` for a feature map or ``(units,)`` for a vector.
        num_classes: Number of classes (at least 2); the output is a softmax over them.
        pooling: ``"avg"``, ``"max"`` or ``"flatten"``, applied to feature maps.
        dropout: Dropout rate before each dense layer (0 disables it).
        hidden_units: Widths of optional hidden dense layers (ReLU).
        name: Name of the returned model.
        multi_label: One sigmoid per class (any number of labels per example,
            `templates.data.multi_label`) instead of a softmax over them.

    Returns:
        A functional `keras.Model` from features to probabilities of shape
        ``(batch, num_classes)``.
    """
    if int(num_classes) < 2:
        raise CookbookError(f"num_classes must be at least 2; got {num_classes}.")
    if pooling not in POOLINGS:
        raise CookbookError(f"pooling must be one of {POOLINGS}; got {pooling!r}.")
    if not 0.0 <= float(dropout) < 1.0:
        raise CookbookError(f"dropout must be in [0, 1); got {dropout}.")

    features = keras.Input(shape=tuple(feature_shape), name="features")
    x = features
    if len(feature_shape) == 3:
        pool = {
            "avg": keras.layers.GlobalAveragePooling2D,
            "max": keras.layers.GlobalMaxPooling2D,
            "flatten": keras.layers.Flatten,
        }[pooling]
        x = pool(name="pooling")(x)
    elif len(feature_shape) != 1:
        raise CookbookError(
            f"feature_shape must be (height, width, channels) or (units,); got {feature_shape}."
        )
    for index, units in enumerate(hidden_units):
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{index}")(x)
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{index}")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(
        int(num_classes), activation="sigmoid" if multi_label else "softmax",
        dtype="float32", name="predictions"
    )(x)
    return keras.Model(features, outputs, name=name)
