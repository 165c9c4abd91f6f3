"""Model randomness per epoch: dropout and augmentation reseeded from ``(seed, epoch)``.

An interrupted run resumes from its last finished epoch (`templates.training.checkpoints`). For
the resumed run to end with the same weights as an uninterrupted one, everything random
in epoch ``e`` must be a function of ``(seed, e)`` alone, not of how many epochs this
process has already run:

* the order of the training examples: `templates.data.batches.ShuffledArrays` (NumPy
  arrays, any backend), `templates.data.batches.array_batches` (the same orders, through
  `tf.data` on the TensorFlow backend) and `templates.data.batches.shuffle_each_epoch`
  (`tf.data`) draw epoch ``e``'s order from ``epoch_seed(seed, e)``;
* dropout masks and random augmentation: the `EpochSeeds` callback re-seeds every
  `keras.random.SeedGenerator` in the model at the start of each epoch.

The data objects learn the epoch from the `EpochSeeds` callback of the ``fit`` that reads
them: a ``fit`` call names its data in the callback (``following_epochs(callbacks,
data)``), so its reader sees which datasets it re-seeds; nothing is registered
process-wide. Without the callback they count epochs themselves, so a plain ``fit``
still sees a new order every epoch.

Everything here is plain Keras 3 and runs on any backend. The data objects live in
`templates.data.batches` (any backend) and `templates.data.batches` (TensorFlow); both
import this module, and it imports neither.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.batches import EpochListener, epoch_followers, epoch_seed
from templates.models.layers import iterate_layers


def seed_generators(model: keras.layers.Layer) -> list[keras.random.SeedGenerator]:
    """Every `keras.random.SeedGenerator` held by ``model``'s layers, in layer order."""
    found, seen = [], set()
    for layer in [model, *iterate_layers(model)]:
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator) and id(value) not in seen:
                seen.add(id(value))
                found.append(value)
    return found


def reseed_generators(model: keras.layers.Layer, seed: int) -> int:
    """Reset every seed generator of ``model`` to a state derived from ``seed``.

    Returns:
        How many generators were reset.
    """
    generators = seed_generators(model)
    for index, generator in enumerate(generators):
        state = np.array([epoch_seed(seed, index), 0])
        generator.state.assign(keras.ops.convert_to_tensor(state, dtype=generator.state.dtype))
    return len(generators)


class EpochSeeds(keras.callbacks.Callback):
    """Makes each epoch's randomness a function of ``(seed, epoch)``.

    At the start of every epoch it re-seeds the model's dropout and augmentation layers
    and tells the training data it follows (``data``, or `follow`) which epoch starts.

    Args:
        seed: The run's seed.
        data: The ``fit`` call's training data (`epoch_followers` finds what in it
            follows the epoch). `following_epochs` fills it in at the ``fit`` call.
    """

    def __init__(self, seed: int, data: Any = None):
        super().__init__()
        if int(seed) < 0:
            raise CookbookError(f"seed must be a non-negative integer; got {seed}.")
        self.seed = int(seed)
        self.followers: list[EpochListener] = []
        if data is not None:
            self.follow(data)

    def follow(self, data: Any) -> int:
        """Also tell ``data`` the epoch; return how many of its parts follow it."""
        followers = epoch_followers(data)
        self.followers.extend(followers)
        return len(followers)

    def on_epoch_begin(self, epoch, logs=None):
        for follower in self.followers:
            follower.set_epoch(epoch)
        reseed_generators(self.model, epoch_seed(self.seed, epoch))


def following_epochs(callbacks: Iterable[keras.callbacks.Callback], data: Any
                     ) -> list[keras.callbacks.Callback]:
    """``callbacks`` as a list, every `EpochSeeds` among them now following ``data``.

    Write ``fit(data, callbacks=following_epochs(callbacks, data))``: the call then
    shows which data its epochs re-seed.
    """
    callbacks = list(callbacks)
    for callback in callbacks:
        if isinstance(callback, EpochSeeds):
            callback.follow(data)
    return callbacks
