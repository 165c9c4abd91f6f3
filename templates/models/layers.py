"""Walking a model's layers, nested models included."""

from __future__ import annotations

from collections.abc import Iterable

import keras


def iterate_layers(model: keras.layers.Layer) -> Iterable[keras.layers.Layer]:
    """Yield every layer inside ``model``, descending into nested models."""
    for layer in getattr(model, "layers", ()):
        yield layer
        if getattr(layer, "layers", None):
            yield from iterate_layers(layer)
