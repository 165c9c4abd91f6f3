"""Backbone input preprocessing as a Keras layer, so it travels inside saved models.

Putting preprocessing in the model (instead of in the data pipeline) means a saved
`.keras` file or SavedModel takes plain 0..255 RGB images, and nobody has to remember
which of the four conventions a backbone was trained with.
"""

from __future__ import annotations

import keras
from keras import ops

from templates.data.errors import CookbookError
from templates.models.backbones import PREPROCESSING_MODES

# ImageNet statistics used by keras.applications.imagenet_utils.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class BackbonePreprocessing(keras.layers.Layer):
    """Turns 0..255 RGB images into what a backbone expects.

    Args:
        mode: ``"caffe"``, ``"tf"``, ``"torch"`` or ``"inside_model"`` (identity: the
            backbone preprocesses its own inputs). See `templates.models.backbones`.
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise CookbookError(
                f"Unknown preprocessing mode {mode!r}; expected one of {PREPROCESSING_MODES}."
            )
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(TORCH_MEAN_RGB, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(TORCH_STD_RGB, dtype=self.compute_dtype)
            return (images / 255.0 - mean) / std
        if self.mode == "caffe":
            bgr = ops.flip(images, axis=-1)
            return bgr - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
