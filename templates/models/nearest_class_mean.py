"""A head with nothing to train: each class is the mean of its examples' features.

With one or two labelled photos per class a trained head has almost nothing to learn
from; the nearest class mean (Mensink et al. 2013; the "prototype" of few-shot
learning) needs no training at all: an example belongs to the class whose mean
(unit-length) feature vector is closest in angle. It is a Keras model with the shape of
`templates.models.heads.classification_head`'s, so it can stand in for a trained head:

    features, labels = head_training_features(transfer, train)
    head = nearest_class_mean_head(features, labels)
    probabilities = head.predict(test_features)

Or, inside a run, the recipe's own head starts as that classifier (`imprint_class_means`,
the plan's ``head_init="class_means"``): with ``head_epochs=0`` it stays it, and the
model saves, reloads and predicts like any other run.
"""

from __future__ import annotations

import keras
import numpy as np

from templates.data.errors import CookbookError

# Cosines lie in [-1, 1]; scaled by this before the softmax, the probabilities of a
# cosine-similarity classifier spread out (the argmax does not depend on it).
SCALE = 10.0


def pooled_unit_vectors(features: np.ndarray) -> np.ndarray:
    """Feature maps averaged over their positions (vectors left as they are), scaled to
    unit length."""
    vectors = np.asarray(features, dtype="float32")
    if vectors.ndim > 2:
        vectors = vectors.reshape(len(vectors), -1, vectors.shape[-1]).mean(axis=1)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def nearest_class_mean_head(features: np.ndarray, labels, num_classes: int | None = None,
                            name: str = "nearest_class_mean") -> keras.Model:
    """A head whose class scores are the cosine similarities to each class's mean
    feature vector (a softmax of ``SCALE`` times them).

    Args:
        features: The frozen part's features of the labelled examples: vectors or
            feature maps (averaged over positions, as the trained head pools them).
        labels: Their integer labels.
        num_classes: Number of classes (default: the largest label + 1).
        name: Name of the model.

    Returns:
        A `keras.Model` from one example's features to class probabilities.

    Raises:
        CookbookError: when a class has no example.
    """
    labels = np.asarray(labels)
    if np.ndim(features) not in (2, 4):
        raise CookbookError(f"A nearest-class-mean head reads feature vectors or feature maps "
                            f"(2 or 4 axes); these features have shape {np.shape(features)}.")
    if labels.ndim != 1:
        raise CookbookError("A nearest-class-mean head needs one integer label per example.")
    num_classes = int(num_classes or labels.max() + 1)
    vectors = pooled_unit_vectors(features)
    missing = [label for label in range(num_classes) if not (labels == label).any()]
    if missing:
        raise CookbookError(f"A nearest-class-mean head needs an example of every class; "
                            f"classes {missing} have none.")
    means = np.stack([vectors[labels == label].mean(axis=0) for label in range(num_classes)])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    inputs = keras.Input(shape=np.shape(features)[1:], name="features")
    pooled = keras.layers.GlobalAveragePooling2D()(inputs) if len(inputs.shape) == 4 else inputs
    unit = keras.layers.UnitNormalization()(pooled)
    scores = keras.layers.Dense(num_classes, use_bias=False, trainable=False,
                                name="class_means")
    outputs = keras.layers.Softmax(dtype="float32")(scores(unit))
    scores.set_weights([SCALE * means.T])
    return keras.Model(inputs, outputs, name=name)


# The layers a head may have for its output layer to become the nearest class mean:
# only averaging and dropout before its one dense layer (no hidden layer to imprint).
IMPRINTABLE = ("InputLayer", "GlobalAveragePooling2D", "Dropout", "Dense")


def imprint_class_means(head: keras.Model, features: np.ndarray, labels) -> None:
    """Start ``head``'s output layer as the nearest class mean (weight imprinting, Qi et
    al. 2018): each class's weights point along the mean of its examples' unit-length
    features, the biases are 0.

    The head then ranks the classes exactly as `nearest_class_mean_head` does (an
    example's length scales all its class scores alike), so with no training at all it
    is that classifier; training (``head_epochs``) starts from it instead of from random
    weights. The weights are scaled so that an example of average length gets ``SCALE``
    times its cosines as scores.

    Args:
        head: A `templates.models.heads.classification_head` without hidden layers
            (averaging, dropout, one softmax layer).
        features: The frozen part's features of the training examples (`templates.training
            .phases.head_training_features`).
        labels: Their integer labels.

    Raises:
        CookbookError: when the head has other layers (hidden layers, a text CNN, max
            pooling), is multi-label, or a class has no example.
    """
    kinds = [type(layer).__name__ for layer in head.layers]
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    if any(kind not in IMPRINTABLE for kind in kinds) or len(dense) != 1:
        raise CookbookError(
            f"head_init='class_means' needs a head of averaging, dropout and one dense "
            f"layer; {head.name!r} has {', '.join(kinds)}.")
    output = dense[0]
    if getattr(output.activation, "__name__", "") != "softmax":
        raise CookbookError("head_init='class_means' needs one label per example (a softmax "
                            "head); this head is multi-label.")
    labels = np.asarray(labels).reshape(-1)
    classes = int(output.units)
    vectors = np.asarray(features, dtype="float32")
    if vectors.ndim > 2:
        vectors = vectors.reshape(len(vectors), -1, vectors.shape[-1]).mean(axis=1)
    lengths = np.linalg.norm(vectors, axis=1)
    missing = [label for label in range(classes) if not (labels == label).any()]
    if missing:
        raise CookbookError(f"head_init='class_means' needs a training example of every "
                            f"class; classes {missing} have none.")
    unit = vectors / np.maximum(lengths[:, None], 1e-12)
    means = np.stack([unit[labels == label].mean(axis=0) for label in range(classes)])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    scale = SCALE / max(float(lengths.mean()), 1e-12)
    output.set_weights([scale * means.T.astype("float32"), np.zeros(classes, "float32")])
