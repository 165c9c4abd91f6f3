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

The data objects learn the epoch from the `EpochSeeds` callback of the ``fit`` that reads
them: a ``fit`` call names its data in the callback (``following_epochs(callbacks,
data)``), so its reader sees which datasets it re-seeds; nothing is registered
process-wide. Without the callback they count epochs themselves, so a plain ``fit``
still sees a new order every epoch.

Everything here is plain Keras 3 and runs on any backend. The data objects live in
`templates.batches` (any backend) and `templates.epoch_shuffle` (TensorFlow); both
import this module, and it imports neither.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

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


def epoch_followers(data: Any) -> list[EpochListener]:
    """What in ``data`` draws its order from the epoch number.

    ``data`` itself when it has ``set_epoch`` (a `templates.batches.ShuffledArrays`); for
    a `tf.data` pipeline, the epoch counter of every `shuffle_each_epoch` /
    `array_batches` step in it or upstream of it (``map``, ``batch``, ``prefetch``...
    keep it reachable through their input datasets). Anything else: none.
    """
    if hasattr(data, "set_epoch"):
        return [data]
    found, pending, seen = [], [data], set()
    while pending:
        dataset = pending.pop()
        if dataset is None or id(dataset) in seen:
            continue
        seen.add(id(dataset))
        counter = getattr(dataset, "_epoch_counter", None)
        if counter is not None:
            found.append(counter)
        inputs = getattr(dataset, "_inputs", None)
        if callable(inputs):
            try:
                pending.extend(inputs())
            except (TypeError, NotImplementedError):
                pass
    return found


def set_epoch(data: Any, epoch: int) -> int:
    """Have ``data``'s next pass read epoch ``epoch``'s order; return how many of its
    parts follow the epoch (`epoch_followers`)."""
    followers = epoch_followers(data)
    for follower in followers:
        follower.set_epoch(epoch)
    return len(followers)


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
            raise ValueError(f"seed must be a non-negative integer; got {seed}.")
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
