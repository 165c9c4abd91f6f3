"""Training batches from in-memory arrays, in orders drawn from ``(seed, epoch)``.

`ShuffledArrays` (a `keras.utils.PyDataset`, any backend) and `array_batches` (the same
orders through `tf.data` on the TensorFlow backend) replace ``fit(x, y, shuffle=True)``
when a resumed run must see the same batches as an uninterrupted one
(`templates.reproducibility`).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from templates.reproducibility import check_arrays, permutation


def array_batches(inputs, labels, batch_size: int = 32, seed: int | None = None,
                  shuffle: bool = True):
    """In-memory ``(inputs, labels)`` arrays as batches for ``fit`` or ``evaluate``.

    Epoch ``e`` sees the examples in the order `ShuffledArrays` draws from
    ``(seed, e)`` (``shuffle=False``: in the arrays' order). On the TensorFlow backend
    the batches come from a `tf.data` pipeline with the same orders
    (`templates.epoch_shuffle.array_batches_dataset`): there Keras reads NumPy arrays
    and a `keras.utils.PyDataset` through a `tf.data` pipeline it rebuilds on every
    pass, about 100 ms per epoch or ``evaluate`` call on 2 CPU cores (against 14 ms,
    `benchmarks.small_run_overheads`), which is most of
    the time of a small head's training. Other backends get a `ShuffledArrays`.
    """
    if keras.backend.backend() == "tensorflow":
        from templates.epoch_shuffle import array_batches_dataset

        return array_batches_dataset(inputs, labels, batch_size, seed, shuffle)
    return ShuffledArrays(inputs, labels, batch_size, seed, shuffle=shuffle)


class ShuffledArrays(keras.utils.PyDataset):
    """Batches of ``(inputs, labels)`` arrays in an order drawn from ``(seed, epoch)``.

    The replacement for ``fit(x, y, shuffle=True)`` when a resumed run must see the same
    order as an uninterrupted one. Pass ``shuffle=False`` to ``fit``: with its default
    ``True``, Keras also permutes the batches with Python's global random state.

    Args:
        inputs: Array of examples (first axis: examples).
        labels: Array of labels, same length.
        batch_size: Examples per batch (the last batch may be smaller).
        seed: Seed of the orders; ``None`` draws a fresh random order every epoch.
        shuffle: ``False`` keeps the arrays' order every epoch (validation batches).
    """

    def __init__(self, inputs, labels, batch_size: int = 32, seed: int | None = None,
                 shuffle: bool = True):
        super().__init__()
        check_arrays(inputs, labels, batch_size, "ShuffledArrays")
        self.inputs = inputs
        self.labels = labels
        self.batch_size = int(batch_size)
        self.seed = seed
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.order = self._order(0)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.labels))
        return permutation(len(self.labels), self.seed, epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from now on."""
        self.epoch = int(epoch)
        self.order = self._order(self.epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int):
        members = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.inputs[members], self.labels[members]

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)
