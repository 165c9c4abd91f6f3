"""Epochs that depend only on the seed and the epoch number.

An interrupted run resumes from its last finished epoch (`templates.checkpoints`). For
the resumed run to end with the same weights as an uninterrupted one, everything random
in epoch ``e`` must be a function of ``(seed, e)`` alone, not of how many epochs this
process has already run:

* the order of the training examples: `templates.batches.ShuffledArrays` (NumPy
  arrays, any backend), `templates.batches.array_batches` (the same orders, through
  `tf.data` on the TensorFlow backend) and `templates.epoch_shuffle.shuffle_each_epoch`
  (`tf.data`) draw epoch ``e``'s order from ``epoch_seed(seed, e)``;
* dropout masks and random augmentation: the `EpochSeeds` callback re-seeds every
  `keras.random.SeedGenerator` in the model at the start of each epoch.

The data objects learn the epoch from `EpochSeeds`, which broadcasts it to every live
one. Without the callback they count epochs themselves, so a plain ``fit`` still sees a
new order every epoch.

Everything here is plain Keras 3 and runs on any backend. The data objects live in
`templates.batches` (any backend) and `templates.epoch_shuffle` (TensorFlow); both
import this module, and it imports neither.
"""

from __future__ import annotations

import weakref
from typing import Protocol

import keras
import numpy as np

from templates.layers import iterate_layers

SEED_MULTIPLIER = 1_000_003
SEED_MODULUS = 2**31 - 1


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` in a run seeded with ``seed`` (a non-negative int)."""
    return (int(seed) * SEED_MULTIPLIER + int(epoch)) % SEED_MODULUS


class EpochListener(Protocol):
    """Anything whose randomness follows the epoch number."""

    def set_epoch(self, epoch: int) -> None: ...


_listeners: weakref.WeakSet = weakref.WeakSet()


def register_epoch_listener(listener: EpochListener) -> None:
    """Have `EpochSeeds` tell ``listener`` the epoch about to start (held weakly)."""
    _listeners.add(listener)


def broadcast_epoch(epoch: int) -> None:
    """Tell every live epoch-seeded dataset that epoch ``epoch`` starts."""
    for listener in list(_listeners):
        listener.set_epoch(epoch)


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
    and tells every `ShuffledArrays` / `shuffle_each_epoch` dataset which epoch starts.

    Args:
        seed: The run's seed.
    """

    def __init__(self, seed: int):
        super().__init__()
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed}.")
        self.seed = int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        broadcast_epoch(epoch)
        reseed_generators(self.model, epoch_seed(self.seed, epoch))


def permutation(size: int, seed: int | None, epoch: int) -> np.ndarray:
    """The order of ``size`` examples in epoch ``epoch`` of a run seeded with ``seed``
    (``None``: a fresh random order)."""
    generator_seed = None if seed is None else epoch_seed(seed, epoch)
    return np.random.default_rng(generator_seed).permutation(size)


def check_arrays(inputs, labels, batch_size: int, what: str) -> int:
    """Validate in-memory training arrays; return the number of examples."""
    if len(inputs) != len(labels):
        raise ValueError(
            f"{what}: inputs and labels differ in length: {len(inputs)} vs {len(labels)}.")
    if len(inputs) == 0:
        raise ValueError(f"{what} needs at least one example.")
    if batch_size < 1:
        raise ValueError(f"{what}: batch_size must be at least 1; got {batch_size}.")
    return len(labels)
