"""`tf.data` shuffling whose order depends only on the seed and the epoch (TensorFlow).

``dataset.shuffle(..., reshuffle_each_iteration=True)`` draws each epoch's order from
how many epochs the dataset has already served, so a run resumed at epoch ``e`` would see
epoch 0's order again. `shuffle_each_epoch` draws epoch ``e``'s order from
``epoch_seed(seed, e)`` instead; the epoch comes from the
`templates.reproducibility.EpochSeeds` callback, or from its own counter when no
callback sets it. Anything before the shuffle (a ``cache()`` included) is computed once.
"""

from __future__ import annotations

import tensorflow as tf

from templates.reproducibility import SEED_MODULUS, SEED_MULTIPLIER, register_epoch_listener


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
    register_epoch_listener(counter)

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
    shuffled._epoch_counter = counter  # keeps the (weakly registered) counter alive
    return shuffled
