"""Freezing: which layers of the reused part train, BatchNormalization always frozen.

`base(x, training=False)` does not keep BatchNormalization frozen once the base is
unfrozen in Keras 3 (keras-team/keras#20285); `freeze_batch_normalization` sets those
layers to ``trainable = False``, which does.
"""

from __future__ import annotations

import keras

from templates.data.errors import CookbookError
from templates.models.layers import iterate_layers


def freeze_batch_normalization(model: keras.layers.Layer) -> int:
    """Put every BatchNormalization layer of ``model`` in inference mode for good.

    Returns:
        How many BatchNormalization layers were frozen.
    """
    count = 0
    for layer in iterate_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            count += 1
    return count


def unfreeze_from(backbone: keras.Model, from_layer: str | int | None) -> int:
    """Make ``from_layer`` and every later layer of ``backbone`` trainable.

    Layers before it stay frozen, and BatchNormalization layers stay frozen everywhere.

    Args:
        backbone: The reused part of the model.
        from_layer: A layer name, an index into ``backbone.layers`` (negative counts from
            the end), or ``None`` to unfreeze every layer.

    Returns:
        The number of trainable weight tensors after unfreezing.
    """
    layers = backbone.layers
    if from_layer is None:
        start = 0
    elif isinstance(from_layer, str):
        names = [layer.name for layer in layers]
        if from_layer not in names:
            raise CookbookError(
                f"Cannot fine-tune from {from_layer!r}: {backbone.name} has no such layer "
                f"(its last layers are {names[-5:]})."
            )
        start = names.index(from_layer)
    elif isinstance(from_layer, int) and not isinstance(from_layer, bool):
        if not -len(layers) <= from_layer < len(layers):
            raise CookbookError(
                f"from_layer={from_layer} is outside {backbone.name}'s {len(layers)} layers."
            )
        start = from_layer % len(layers)
    else:
        raise CookbookError(
            f"from_layer must be a layer name, an index or None; got {from_layer!r}.")
    backbone.trainable = True
    for index, layer in enumerate(layers):
        layer.trainable = index >= start
    freeze_batch_normalization(backbone)
    return len(backbone.trainable_weights)
