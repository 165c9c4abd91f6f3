"""Seeded batches: every epoch's order drawn from ``(seed, epoch)`` alone.

* `epoch_seed` / `permutation`: the order of an epoch; `set_epoch` tells every data
  source that follows epochs (`EpochListener`) which epoch begins.
* `ShuffledArrays` / `array_batches`: in-memory arrays as a `keras.utils.PyDataset`
  (any backend); `LengthBucketedBatches` and `PairBatches`: token ids, each batch as
  wide as its longest text (`variable_length_dataset` makes them `tf.data` pipelines).
* `shuffle_each_epoch` / `array_batches_dataset`: the same rule for `tf.data`
  pipelines (TensorFlow imported only when called).

So a run resumed at epoch ``e`` sees exactly the batches an uninterrupted run saw.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, Protocol

import keras
import numpy as np

from templates.data.errors import CookbookError

if TYPE_CHECKING:  # TensorFlow is imported only by the tf.data functions below
    import tensorflow as tf


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

    ``data`` itself when it has ``set_epoch`` (a `templates.data.batches.ShuffledArrays`); for
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


def permutation(size: int, seed: int | None, epoch: int) -> np.ndarray:
    """The order of ``size`` examples in epoch ``epoch`` of a run seeded with ``seed``
    (``None``: a fresh random order)."""
    generator_seed = None if seed is None else epoch_seed(seed, epoch)
    return np.random.default_rng(generator_seed).permutation(size)


def check_arrays(inputs, labels, batch_size: int, what: str) -> int:
    """Validate in-memory training arrays; return the number of examples."""
    if len(inputs) != len(labels):
        raise CookbookError(
            f"{what}: inputs and labels differ in length: {len(inputs)} vs {len(labels)}.")
    if len(inputs) == 0:
        raise CookbookError(f"{what} needs at least one example.")
    if batch_size < 1:
        raise CookbookError(f"{what}: batch_size must be at least 1; got {batch_size}.")
    return len(labels)


def array_batches(inputs, labels, batch_size: int = 32, seed: int | None = None,
                  shuffle: bool = True, dtype: str | None = None):
    """In-memory (or memory-mapped) ``(inputs, labels)`` arrays as batches for ``fit``
    or ``evaluate``; ``dtype`` casts each batch's inputs (uint8 images to float32).

    Epoch ``e`` sees the examples in the order `ShuffledArrays` draws from
    ``(seed, e)`` (``shuffle=False``: in the arrays' order). On the TensorFlow backend
    the batches come from a `tf.data` pipeline with the same orders
    (`templates.data.batches.array_batches_dataset`): there Keras reads NumPy arrays
    and a `keras.utils.PyDataset` through a `tf.data` pipeline it rebuilds on every
    pass, about 100 ms per epoch or ``evaluate`` call on 2 CPU cores (against 14 ms,
    `benchmarks.small_run_overheads`), which is most of
    the time of a small head's training. Other backends get a `ShuffledArrays`.
    """
    if keras.backend.backend() == "tensorflow":
        return array_batches_dataset(inputs, labels, batch_size, seed, shuffle, dtype)
    return ShuffledArrays(inputs, labels, batch_size, seed, shuffle=shuffle, dtype=dtype)


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
        dtype: Cast each batch's inputs to it (``None``: as stored); uint8 images stay
            uint8 in memory and reach the model as float32.
    """

    def __init__(self, inputs, labels, batch_size: int = 32, seed: int | None = None,
                 shuffle: bool = True, dtype: str | None = None):
        super().__init__()
        self.dtype = dtype
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
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        return self.gather(self.order, index)

    def gather(self, order: np.ndarray, index: int):
        """Batch ``index`` of the epoch whose order is ``order``, inputs cast to ``dtype``."""
        members = order[index * self.batch_size:(index + 1) * self.batch_size]
        if not self.shuffle:  # a slice: contiguous reads of a memory-mapped file
            members = slice(int(members[0]), int(members[-1]) + 1)
        inputs = self.inputs[members]
        return (inputs if self.dtype is None else np.asarray(inputs, self.dtype),
                np.asarray(self.labels[members]))

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)


class LengthBucketedBatches(keras.utils.PyDataset):
    """Batches of token ids, each padded only to its own longest text.

    A transformer's cost grows with the padded length, and most sentences are far
    shorter than the longest: each batch is cut to its longest real text (rounded up to
    a multiple of ``multiple``, so a compiled step is reused across batches). With
    ``shuffle``, epoch ``e``'s order is drawn from ``(seed, e)`` as in `ShuffledArrays`,
    then sorted by length within buckets of ``bucket_batches`` batches (so a batch holds
    texts of similar length), and the batches are shuffled again; without it, the
    examples keep their order (predictions line up with the texts).

    Args:
        inputs: ``{name: (examples, length) array}`` with a boolean ``padding_mask``.
        labels: One label (or multi-hot row) per example.
        batch_size: Examples per batch.
        seed: Seed of the orders (``None``: fresh ones).
        shuffle: Draw a new bucketed order every epoch.
        multiple: Padded lengths are multiples of this.
        bucket_batches: Batches per length bucket.
    """

    def __init__(self, inputs: dict[str, np.ndarray], labels, batch_size: int = 32,
                 seed: int | None = None, shuffle: bool = True, multiple: int = 8,
                 bucket_batches: int = 20):
        super().__init__()
        if "padding_mask" not in inputs:
            raise CookbookError("LengthBucketedBatches needs a padding_mask among the inputs.")
        self.labels = np.asarray(labels)
        check_arrays(inputs["padding_mask"], self.labels, batch_size, "LengthBucketedBatches")
        self.inputs = inputs
        self.batch_size, self.seed, self.shuffle = int(batch_size), seed, bool(shuffle)
        self.multiple, self.bucket_batches = int(multiple), int(bucket_batches)
        self.lengths = np.asarray(inputs["padding_mask"]).sum(axis=1)
        self.width = int(inputs["padding_mask"].shape[1])
        self.epoch = 0
        self.batches = self._batches(0)

    def _batches(self, epoch: int) -> list[np.ndarray]:
        count = len(self.labels)
        if not self.shuffle:
            return [np.arange(start, min(start + self.batch_size, count))
                    for start in range(0, count, self.batch_size)]
        order = permutation(count, self.seed, epoch)
        bucket = self.batch_size * self.bucket_batches
        batches = []
        for start in range(0, count, bucket):
            part = order[start:start + bucket]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[at:at + self.batch_size]
                        for at in range(0, len(part), self.batch_size)]
        shuffled = permutation(len(batches), None if self.seed is None else self.seed + 1,
                               epoch)
        return [batches[index] for index in shuffled]

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from now on."""
        self.epoch = int(epoch)
        self.batches = self._batches(self.epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        members = self.batches[index]
        longest = int(self.lengths[members].max())
        width = min(self.width, max(self.multiple,
                                    -(-longest // self.multiple) * self.multiple))
        return ({name: np.asarray(values[members, :width])
                 for name, values in self.inputs.items()}, self.labels[members])

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def as_tf_dataset(self) -> tf.data.Dataset:
        """The same batches as a `tf.data` pipeline (`variable_length_dataset`)."""
        return variable_length_dataset(self)


class PairBatches(keras.utils.PyDataset):
    """Batches of text pairs and a target per pair, for a two-tower (siamese) model.

    Both sides of a batch are cut to the batch's longest text, as in
    `LengthBucketedBatches` (one width for both: a compiled step is reused for every
    batch of that width, where two widths would multiply the shapes); the inputs are named ``first_NAME`` and ``second_NAME``. With ``seed``, epoch ``e``'s
    order of the pairs is drawn from ``(seed, e)``.

    Args:
        inputs: ``{name: (texts, length) array}`` with a boolean ``padding_mask``: every
            text the pairs index.
        first, second: Row indices into ``inputs``, one of each per pair.
        targets: One target per pair.
        batch_size: Pairs per batch.
        seed: Seed of the orders (``None``: fresh ones).
        multiple: Padded lengths are multiples of this.
    """

    def __init__(self, inputs: dict[str, np.ndarray], first, second, targets,
                 batch_size: int = 16, seed: int | None = None, multiple: int = 8):
        super().__init__()
        if "padding_mask" not in inputs:
            raise CookbookError("PairBatches needs a padding_mask among the inputs.")
        self.first, self.second = np.asarray(first), np.asarray(second)
        self.targets = np.asarray(targets, dtype="float32")
        if not len(self.first) == len(self.second) == len(self.targets):
            raise CookbookError(f"PairBatches: {len(self.first)} first texts, "
                                f"{len(self.second)} second texts and {len(self.targets)} "
                                "targets; they must match.")
        check_arrays(self.first, self.targets, batch_size, "PairBatches")
        self.inputs, self.batch_size, self.seed = inputs, int(batch_size), seed
        self.multiple = int(multiple)
        self.lengths = np.asarray(inputs["padding_mask"]).sum(axis=1)
        self.width = int(inputs["padding_mask"].shape[1])
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from now on."""
        self.epoch = int(epoch)
        self.order = permutation(len(self.targets), self.seed, self.epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.targets) / self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        pairs = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        sides = {"first": self.first[pairs], "second": self.second[pairs]}
        longest = int(max(self.lengths[rows].max() for rows in sides.values()))
        width = min(self.width, max(self.multiple, -(-longest // self.multiple) * self.multiple))
        return ({f"{side}_{name}": np.asarray(values[rows, :width])
                 for side, rows in sides.items() for name, values in self.inputs.items()},
                self.targets[pairs])

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def as_tf_dataset(self) -> tf.data.Dataset:
        """The same batches as a `tf.data` pipeline (`variable_length_dataset`)."""
        return variable_length_dataset(self)


def variable_length_dataset(batches) -> tf.data.Dataset:
    """A `keras.utils.PyDataset` of token-id batches (``(inputs dict, targets)``, each
    batch as wide as its longest text) as a `tf.data` pipeline whose inputs are
    ``(None, None)``: Keras's own adapter fixes the shapes it sees in its first batches,
    so a later, wider batch would be refused. Each pass reads the current epoch's order
    and moves on to the next epoch, as `shuffle_each_epoch` does; ``batches.set_epoch``
    (found by `epoch_followers`) sets it."""
    import tensorflow as tf

    def generate():
        epoch = batches.epoch
        for index in range(len(batches)):
            yield batches[index]
        if batches.epoch == epoch:
            batches.set_epoch(epoch + 1)

    inputs, labels = batches[0]
    signature = ({name: tf.TensorSpec((None, None), tf.as_dtype(values.dtype), name=name)
                  for name, values in inputs.items()},
                 tf.TensorSpec((None, *labels.shape[1:]), tf.as_dtype(labels.dtype)))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(batches)))
    dataset._epoch_counter = batches  # found by epoch_followers
    return dataset


class _EpochCounter:
    """The epoch a dataset's next pass belongs to, as a variable its pipeline reads."""

    def __init__(self):
        import tensorflow as tf

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
    import tensorflow as tf

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
    inputs, labels, batch_size: int = 32, seed: int | None = None, shuffle: bool = True,
    dtype: str | None = None,
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
        dtype: Cast each batch's inputs to it. The inputs then stay a NumPy array (or a
            memory-mapped file) that each batch is gathered from, with no copy into
            TensorFlow: decoded images cached as uint8 are not held twice. Inputs that
            are a `numpy.memmap` (features on disk) are always read that way.
    """
    import tensorflow as tf

    size = check_arrays(inputs, labels, batch_size, "array_batches")
    if dtype is None and isinstance(inputs, np.memmap):
        dtype = str(inputs.dtype)  # a file on disk stays there: gathered batch by batch
    if dtype is not None:
        return _gathered_batches(inputs, labels, batch_size, seed, shuffle, dtype)
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


def _gathered_batches(inputs, labels, batch_size: int, seed: int | None, shuffle: bool,
                      dtype: str) -> tf.data.Dataset:
    """`array_batches_dataset` over arrays TensorFlow does not hold: a `ShuffledArrays`
    gathers each batch (in NumPy), the pipeline asks it for batch ``i`` of its epoch."""
    import tensorflow as tf

    source = ShuffledArrays(inputs, labels, batch_size, seed, shuffle=shuffle, dtype=dtype)
    counter = _EpochCounter()
    shape = (None, *inputs.shape[1:])
    label_shape = (None, *np.shape(labels)[1:])
    label_dtype = tf.as_dtype(np.asarray(labels[:1]).dtype)

    lock = threading.Lock()  # the map's threads share one order per epoch

    def batch(epoch, index):
        with lock:
            if source.epoch != int(epoch):
                source.set_epoch(int(epoch))
            order = source.order
        return source.gather(order, int(index))

    def one_epoch(_):
        epoch = counter.variable.assign_add(1) - 1 if shuffle else tf.constant(0, tf.int64)
        return tf.data.Dataset.range(len(source)).map(lambda index: (epoch, index))

    def load(epoch, index):
        images, batch_labels = tf.numpy_function(batch, [epoch, index],
                                                 (tf.as_dtype(dtype), label_dtype))
        images.set_shape(shape)
        batch_labels.set_shape(label_shape)
        return images, batch_labels

    batches = tf.data.Dataset.from_tensors(0).flat_map(one_epoch)
    # deterministic: batch i of an epoch is the same whatever order the threads finish in.
    batches = batches.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = batches.apply(tf.data.experimental.assert_cardinality(len(source)))
    batches = batches.prefetch(tf.data.AUTOTUNE)
    if shuffle:
        batches._epoch_counter = counter  # found by epoch_followers
    return batches


def steps_per_epoch(batches) -> int:
    """Batches per pass over ``batches``: its ``len`` or its known `tf.data` cardinality.

    Raises:
        ValueError: when neither is known (give ``TransferPlan(steps_per_epoch=...)``).
    """
    try:
        return len(batches)
    except TypeError:
        pass
    cardinality = getattr(batches, "cardinality", None)
    if cardinality is not None:
        count = int(cardinality())
        if count > 0:
            return count
    raise CookbookError(
        "A learning-rate schedule needs the number of batches per epoch, and these "
        "batches do not tell it (no len(), unknown tf.data cardinality): give "
        "TransferPlan(steps_per_epoch=...).")
