"""Grad-CAM (Selvaraju et al. 2017): where an image classifier looked (TensorFlow).

The gradient of the class's log-odds (its logit minus the log-sum-exp of the other
logits) with respect to the last convolutional block's activations, averaged over
space, weighs each channel; the weighted sum of the channels, kept where
positive, is the heat map. The gradient comes from the backend's own machinery
(`tf.GradientTape`, `jax.grad`, PyTorch's autograd), everything else is `keras.ops`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from templates.data.errors import CookbookError


def _backbone_and_layer(model: keras.Model, layer_name: str | None):
    """The nested backbone model of ``model`` and its last 4-D (spatial) layer."""
    backbones = [layer for layer in model.layers if isinstance(layer, keras.Model)
                 and any(len(getattr(inner, "output", np.empty(0)).shape or ()) == 4
                         for inner in layer.layers[1:])]
    if not backbones:
        raise CookbookError(f"{model.name} has no nested convolutional backbone for Grad-CAM.")
    backbone = backbones[0]
    if layer_name is None:
        spatial = [layer for layer in backbone.layers[1:] if len(layer.output.shape) == 4]
        layer_name = spatial[-1].name
    return backbone, backbone.get_layer(layer_name)


def grad_cam_heatmaps(model: keras.Model, images: np.ndarray,
                      layer_name: str | None = None,
                      class_indices: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heat maps (0..1, at the images' size) and the predicted probabilities.

    Args:
        model: A classifier whose top-level layers form a chain (input, preprocessing,
            backbone model, head), like `TransferModel.model` or a saved recipe model.
        images: A batch of raw images (what ``model`` takes).
        layer_name: The backbone layer to explain; default its last spatial layer (the
            last convolutional block).
        class_indices: The class to explain per image; default the predicted one.
    """
    backbone, layer = _backbone_and_layer(model, layer_name)
    to_activations = keras.Model(backbone.inputs, layer.output)
    try:  # the rest of the backbone, from the explained layer's output
        to_features = (_identity if layer.output is backbone.output
                       else keras.Model(layer.output, backbone.output))
    except ValueError as error:
        raise CookbookError(f"Grad-CAM cannot explain {layer.name!r}: the layers after it "
                            f"also read earlier ones ({error}); explain a later layer.") from None
    chain = model.layers[1:]
    position = chain.index(backbone)
    inputs = keras.ops.convert_to_tensor(np.asarray(images, dtype="float32"))
    probabilities = model(inputs, training=False)
    chosen = (keras.ops.argmax(probabilities, axis=1) if class_indices is None
              else keras.ops.convert_to_tensor(np.asarray(list(class_indices), "int32")))
    x = inputs
    for part in chain[:position]:
        x = part(x, training=False)
    activations = to_activations(x, training=False)
    # Explain the class score before the softmax: a confident prediction saturates the
    # softmax, and its gradient vanishes (the usual Grad-CAM practice). Heads ending in
    # a softmax layer are explained through their logits for the call below.
    last = _last_layer(chain[-1])
    activation = getattr(last, "activation", None)
    if activation is keras.activations.softmax:
        last.activation = keras.activations.linear

    def scores(explained):
        x = to_features(explained, training=False)
        for part in chain[position + 1:]:
            x = part(x, training=False)
        # The margin of the class's logit over the others (log-odds): with two classes a
        # model may put all its evidence into one logit, so the other class's own logit
        # would explain nothing.
        chosen_mask = keras.ops.one_hot(chosen, keras.ops.shape(x)[1]) > 0.5
        others = keras.ops.logsumexp(keras.ops.where(chosen_mask, -1e9, x), axis=1)
        return keras.ops.sum(keras.ops.where(chosen_mask, x, 0.0), axis=1) - others

    try:
        gradients = gradient_of_sum(scores, activations)
    finally:
        if activation is not None:
            last.activation = activation
    weights = keras.ops.mean(gradients, axis=(1, 2), keepdims=True)
    maps = keras.ops.relu(keras.ops.sum(weights * activations, axis=-1))
    maps = maps / (keras.ops.max(maps, axis=(1, 2), keepdims=True) + 1e-8)
    height, width = np.shape(images)[1:3]
    maps = keras.ops.image.resize(maps[..., None], (height, width))[..., 0]
    return keras.ops.convert_to_numpy(maps), keras.ops.convert_to_numpy(probabilities)


def _identity(value, training=False):
    return value


def gradient_of_sum(function, inputs):
    """The gradient of ``sum(function(inputs))`` with respect to ``inputs``, on the
    Keras backend's own machinery (rows that do not interact: each row's gradient is its
    own output's)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.grad(lambda value: keras.ops.sum(function(value)))(inputs)
    if backend == "torch":
        import torch

        with torch.enable_grad():
            value = inputs.detach().clone().requires_grad_(True)
            keras.ops.sum(function(value)).backward()
        return value.grad
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(inputs)
        total = keras.ops.sum(function(inputs))
    return tape.gradient(total, inputs)


def _last_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The innermost last layer (descending into nested models)."""
    while isinstance(layer, keras.Model):
        layer = layer.layers[-1]
    return layer


def overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """``image`` (0..255 RGB) with ``heatmap`` (0..1) blended on top in the jet colours."""
    import matplotlib

    colours = matplotlib.colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    return (1 - opacity) * np.asarray(image, dtype="float32") + opacity * colours


def grad_cam_overlays(model: keras.Model, images: np.ndarray, class_names: Sequence[str],
                      true_labels: Sequence[int] | None = None,
                      layer_name: str | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Overlays and captions for `templates.reports.evaluation.evaluation_report`."""
    heatmaps, probabilities = grad_cam_heatmaps(model, images, layer_name)
    overlays, captions = [], []
    for index, (image, heatmap) in enumerate(zip(images, heatmaps)):
        predicted = int(np.argmax(probabilities[index]))
        caption = f"said {class_names[predicted]} ({probabilities[index, predicted]:.0%})"
        if true_labels is not None:
            caption = f"true {class_names[int(true_labels[index])]}, {caption}"
        overlays.append(overlay(image, heatmap))
        captions.append(caption)
    return overlays, captions
