"""`tf.data` shuffling whose order depends only on the seed and the epoch (TensorFlow).

``dataset.shuffle(..., reshuffle_each_iteration=True)`` draws each epoch's order from
how many epochs the dataset has already served, so a run resumed at epoch ``e`` would see
epoch 0's order again. `shuffle_each_epoch` draws epoch ``e``'s order from
``epoch_seed(seed, e)`` instead; the epoch comes from the
`templates.reproducibility.EpochSeeds` callback, or from its own counter when no
callback sets it. Anything before the shuffle (a ``cache()`` included) is computed once.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from templates.reproducibility import (
    SEED_MODULUS,
    SEED_MULTIPLIER,
    check_arrays,
    permutation,
)


class _EpochCounter:
    """The epoch a dataset's next pass belongs to, as a variable its pipeline reads."""

    def __init__(self):
        self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

    def set_epoch(self, epoch: int) -> None:
        self.variable.assign(int(epoch))


def shuffle_each_epoch(
    dataset: tf.data.Dataset, size: int, seed: int | None = None
) -> tf.data.Dataset:
    """Shuffle ``dataset`` (of ``size`` elements) with an order per ``(seed, epoch)``.

    Args:
        dataset: Unbatched elements; shuffled with a buffer of ``size``.
        size: Number of elements (the buffer covers all of them: a full shuffle).
        seed: The run's seed; ``None`` keeps TensorFlow's usual random reshuffling.
    """
    if seed is None:
        return dataset.shuffle(size, reshuffle_each_iteration=True)
    counter = _EpochCounter()

    def one_epoch(_):
        # The graph-level seed of this function only (it is being traced, not run
        # eagerly): the order then depends on ``order_seed`` alone, whatever global seed
        # the program set (a global seed of 0 would also trip TensorFlow's seed checks).
        tf.random.set_seed(1)
        epoch = counter.variable.assign_add(1) - 1
        # epoch_seed(seed, epoch), computed in the graph.
        order_seed = (tf.constant(int(seed), tf.int64) * SEED_MULTIPLIER + epoch) % SEED_MODULUS
        return dataset.shuffle(size, seed=order_seed)

    shuffled = tf.data.Dataset.from_tensors(0).flat_map(one_epoch)
    shuffled = shuffled.apply(tf.data.experimental.assert_cardinality(size))
    shuffled._epoch_counter = counter  # found by epoch_followers
    return shuffled


def array_batches_dataset(
    inputs, labels, batch_size: int = 32, seed: int | None = None, shuffle: bool = True
) -> tf.data.Dataset:
    """In-memory arrays as a `tf.data` pipeline, in `ShuffledArrays`' orders.

    Epoch ``e`` reads the examples in the permutation `ShuffledArrays` draws for it
    (NumPy's generator seeded with ``epoch_seed(seed, e)``, computed once per epoch), so
    a model trains on exactly the same batches either way; the epoch comes from
    `EpochSeeds` or the pipeline's own counter, as in `shuffle_each_epoch`. The arrays
    are held as tensors the pipeline gathers from (no copy into a graph).

    Args:
        inputs: Array of examples (first axis: examples).
        labels: Array of labels, same length.
        batch_size: Examples per batch (the last batch may be smaller).
        seed: Seed of the orders; ``None`` draws a fresh order every epoch.
        shuffle: ``False`` keeps the arrays' order (validation or test batches).
    """
    size = check_arrays(inputs, labels, batch_size, "array_batches")
    inputs, labels = tf.convert_to_tensor(inputs), tf.convert_to_tensor(labels)
    if not shuffle:
        return tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(batch_size)
    counter = _EpochCounter()

    def order(epoch):
        return permutation(size, seed, int(epoch)).astype(np.int64)

    def one_epoch(_):
        epoch = counter.variable.assign_add(1) - 1
        indices = tf.numpy_function(order, [epoch], tf.int64, stateful=True)
        indices.set_shape([size])
        return tf.data.Dataset.from_tensor_slices(indices).batch(batch_size)

    def gather(indices):
        return tf.gather(inputs, indices), tf.gather(labels, indices)

    batches = tf.data.Dataset.from_tensors(0).flat_map(one_epoch).map(gather)
    batches = batches.apply(tf.data.experimental.assert_cardinality(-(-size // batch_size)))
    batches._epoch_counter = counter  # found by epoch_followers
    return batches
