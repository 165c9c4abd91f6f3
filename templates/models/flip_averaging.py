"""Test-time augmentation: average an image classifier's predictions over flips.

`flip_averaged(model)` returns a model that classifies each image and its mirror image
and averages the two probability vectors. It costs two forward passes per image (twice
the inference time, no extra weights), and it is an ordinary Keras model: saved,
reloaded in safe mode and served like the model it wraps. Cats and dogs, like most
photos, look as natural mirrored as not; do not use it where left and right carry the
label (text in images, some medical scans).
"""

from __future__ import annotations

import keras

from templates.data.errors import CookbookError


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class HorizontalFlip(keras.layers.Layer):
    """Mirror images (``(batch, height, width, channels)``) left to right, always."""

    def call(self, images):
        return keras.ops.flip(images, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


def flip_averaged(model: keras.Model, name: str | None = None) -> keras.Model:
    """``model``'s probabilities averaged over each image and its mirror image.

    Args:
        model: An image classifier taking ``(batch, height, width, channels)``.
        name: The new model's name (``MODEL_flip_averaged`` by default).

    Returns:
        A model with the same inputs and outputs; ``model``'s weights are shared.
    """
    if len(model.input_shape) != 4:
        raise CookbookError(f"flip_averaged needs an image model (4-D inputs); {model.name} "
                            f"takes {model.input_shape}.")
    inputs = keras.Input(shape=model.input_shape[1:], name="images")
    mirrored = HorizontalFlip(name="mirror")(inputs)
    outputs = keras.layers.Average(name="flip_average")([model(inputs), model(mirrored)])
    return keras.Model(inputs, outputs, name=name or f"{model.name}_flip_averaged")
