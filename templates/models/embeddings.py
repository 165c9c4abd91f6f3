"""Pretrained word vectors turned into a Keras embedding layer for a model's vocabulary.

`embedding_matrix` aligns word vectors to a `keras.layers.TextVectorization`
vocabulary (index 0 is padding, index 1 the out-of-vocabulary token) and reports how
many words it found. `PretrainedEmbedding` is the layer, with three ways to train it:

* ``"frozen"``: no row changes (the layer has no trainable weights);
* ``"trainable"``: every row is tuned;
* ``"missing_only"``: rows that came from the vectors stay fixed, rows that had no
  pretrained vector (and the out-of-vocabulary row) are learnt.

``anchor_strength`` regularises a tuned embedding towards where it started (L2-SP, Li et
al. 2018, for the rows a batch uses): the training words' vectors may move, but not so
far from the pretrained ones that words seen only at test time, which keep their
pretrained vectors, stop being comparable.

``trainable_rows`` keeps rows the training data never reaches (a vocabulary extended
with the vectors' most frequent words, so test words the training texts never showed
still get a meaning) in a separate fixed table: they would get no gradient anyway,
and the optimiser no longer updates, nor keeps moments for, them every step.

Plain Keras 3 (`keras.ops`), so it runs on any backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from templates.data.errors import CookbookError

PADDING_INDEX = 0
MISSING_ROWS = ("random", "zeros")
TRAINABLE_MODES = ("frozen", "trainable", "missing_only")


@dataclasses.dataclass
class EmbeddingMatrix:
    """A matrix for a vocabulary, and which of its rows came from pretrained vectors.

    Attributes:
        matrix: ``(len(vocabulary), dimension)`` float32; row 0 (padding) is zeros.
        pretrained_rows: Boolean mask of rows copied from the vectors.
        vocabulary: The vocabulary, in index order.
        hits: Words found as they are.
        case_folded_hits: Words found only after lower-casing.
        misses: Words found in neither form (padding and OOV tokens not counted).
        missing_examples: A few missing words, for the report.
    """

    matrix: np.ndarray
    pretrained_rows: np.ndarray
    vocabulary: list[str]
    hits: int
    case_folded_hits: int
    misses: int
    missing_examples: list[str]

    @property
    def coverage(self) -> float:
        """Fraction of real vocabulary words that received a pretrained vector."""
        total = self.hits + self.case_folded_hits + self.misses
        return (self.hits + self.case_folded_hits) / total if total else 0.0

    @property
    def oov_rate(self) -> float:
        """Fraction of real vocabulary words with no pretrained vector."""
        return 1.0 - self.coverage

    def report(self) -> dict[str, Any]:
        """The hit/miss figures as a JSON-ready dict."""
        return {
            "vocabulary_size": len(self.vocabulary),
            "hits": self.hits,
            "case_folded_hits": self.case_folded_hits,
            "misses": self.misses,
            "coverage": round(self.coverage, 4),
            "oov_rate": round(self.oov_rate, 4),
            "missing_examples": self.missing_examples,
        }


def embedding_matrix(
    vocabulary: Sequence[str],
    vectors,
    missing: str = "random",
    case_fold: bool = True,
    seed: int | None = 0,
    reserved_tokens: int = 2,
    normalize: bool = False,
) -> EmbeddingMatrix:
    """Build an embedding matrix for ``vocabulary`` from gensim ``vectors``.

    Args:
        vocabulary: Words in index order, e.g. ``TextVectorization.get_vocabulary()``.
            The first ``reserved_tokens`` entries (padding ``""`` and ``"[UNK]"``) are not
            looked up.
        vectors: A gensim `KeyedVectors` (or anything with ``key_to_index``, ``vectors``).
        missing: What rows without a pretrained vector get: ``"random"`` (normal noise
            with the vectors' own per-dimension mean and spread, so they sit among the
            real vectors) or ``"zeros"``. The OOV row is treated as missing.
        case_fold: Look a word up lower-cased when its exact form is missing.
        seed: Seed for the random rows.
        reserved_tokens: Leading vocabulary entries that are not words.
        normalize: Scale every pretrained vector to unit length (cosine geometry, the
            one GloVe's similarities are measured in). Raw GloVe vectors have norms
            of about 3-8 that grow with word frequency; unit rows keep the classifier's
            first layer from keying on frequency and train more steadily. Random rows
            then follow the normalised vectors' scale.

    Returns:
        An `EmbeddingMatrix`. Padding (row 0) is always zeros.
    """
    if missing not in MISSING_ROWS:
        raise CookbookError(f"missing must be one of {MISSING_ROWS}; got {missing!r}.")
    vocabulary = list(vocabulary)
    if len(vocabulary) <= reserved_tokens:
        raise CookbookError(
            f"The vocabulary has {len(vocabulary)} entries, none of them words; adapt the "
            "TextVectorization layer on the training texts first."
        )
    table = np.asarray(vectors.vectors)
    key_to_index = vectors.key_to_index
    words = vocabulary[reserved_tokens:]
    # One dictionary lookup per vocabulary word (tens of thousands), never a loop over
    # the vectors' own vocabulary (hundreds of thousands).
    exact = np.fromiter((key_to_index.get(word, -1) for word in words), dtype=np.int64,
                        count=len(words))
    folded = np.full(len(words), -1, dtype=np.int64)
    if case_fold:
        folded = np.fromiter(
            (key_to_index.get(word.lower(), -1) if index < 0 else -1
             for word, index in zip(words, exact)), dtype=np.int64, count=len(words))
    source = np.where(exact >= 0, exact, folded)
    found = source >= 0

    dimension = table.shape[1]
    generator = np.random.default_rng(seed)

    def rows_of(indices):
        rows = np.asarray(table[indices], dtype=np.float32)
        if normalize:
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
            rows = rows / np.where(norms > 0, norms, 1.0)
        return rows

    if missing == "random":
        sample = rows_of(np.sort(generator.choice(len(table), size=min(len(table), 20000),
                                                  replace=False)))
        mean, spread = sample.mean(axis=0), sample.std(axis=0)
        matrix = (generator.standard_normal((len(vocabulary), dimension)) * spread + mean)
    else:
        matrix = np.zeros((len(vocabulary), dimension))
    matrix = matrix.astype(np.float32)
    rows = np.flatnonzero(found) + reserved_tokens
    matrix[rows] = rows_of(source[found])
    matrix[PADDING_INDEX] = 0.0
    pretrained_rows = np.zeros(len(vocabulary), dtype=bool)
    pretrained_rows[rows] = True
    missing_words = [word for word, hit in zip(words, found) if not hit]
    return EmbeddingMatrix(
        matrix=matrix,
        pretrained_rows=pretrained_rows,
        vocabulary=vocabulary,
        hits=int((exact >= 0).sum()),
        case_folded_hits=int(((exact < 0) & (folded >= 0)).sum()),
        misses=len(missing_words),
        missing_examples=missing_words[:20],
    )


def random_embedding_matrix(
    vocabulary_size: int, like: np.ndarray, seed: int | None = 0
) -> np.ndarray:
    """Random rows at the scale of ``like`` (a pretrained matrix): the scratch baseline."""
    generator = np.random.default_rng(seed)
    sample = like[PADDING_INDEX + 1:]
    matrix = generator.standard_normal((vocabulary_size, like.shape[1])) * sample.std(axis=0)
    matrix = (matrix + sample.mean(axis=0)).astype(np.float32)
    matrix[PADDING_INDEX] = 0.0
    return matrix


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class PretrainedEmbedding(keras.layers.Layer):
    """An embedding layer initialised from pretrained vectors, with selectable freezing.

    Args:
        input_dim: Vocabulary size.
        output_dim: Vector dimension.
        trainable_mode: ``"frozen"``, ``"trainable"`` or ``"missing_only"`` (see the
            module docstring). Setting ``layer.trainable = False`` freezes every mode;
            setting it back to ``True`` restores ``trainable_mode`` (a ``"frozen"``
            layer's table is not a trainable weight, so it stays fixed).
        matrix: Initial ``(input_dim, output_dim)`` values; not part of the config
            (the values are weights, saved with the model).
        pretrained_rows: Boolean mask of rows that came from pretrained vectors (kept
            fixed in ``"missing_only"`` mode); saved as a non-trainable weight.
        mask_zero: Produce a padding mask from index 0, like `keras.layers.Embedding`.
        trainable_rows: Only rows ``0 .. trainable_rows - 1`` can be trained; the rest
            (for example words added to the vocabulary from the vectors, beyond the
            training texts' words) live in a fixed table, ``fixed_embeddings``. Pass
            the largest token id of the training data plus one: rows above it get no
            gradient, so the results are the same, and training is faster (fine-tuning
            with 100,000 extra GloVe words: 89 -> 28 ms per step on 2 CPU cores,
            `benchmarks.small_run_overheads`). ``None``: every row is in ``embeddings``.
        anchor_strength: While training, add ``anchor_strength`` times the mean squared
            distance between each looked-up trainable vector and its initial value
            (over the batch's words, padding excluded) to the loss (0: no pull). The
            initial values are kept as a fixed weight, ``anchor``.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        trainable_mode: str = "trainable",
        matrix: np.ndarray | None = None,
        pretrained_rows: np.ndarray | None = None,
        mask_zero: bool = False,
        trainable_rows: int | None = None,
        anchor_strength: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if anchor_strength < 0:
            raise CookbookError(f"anchor_strength must be 0 or more; got {anchor_strength}.")
        if trainable_mode not in TRAINABLE_MODES:
            raise CookbookError(
                f"trainable_mode must be one of {TRAINABLE_MODES}; got {trainable_mode!r}.")
        if matrix is not None and tuple(np.shape(matrix)) != (int(input_dim), int(output_dim)):
            raise CookbookError(
                f"matrix has shape {np.shape(matrix)}, expected ({input_dim}, {output_dim}).")
        if pretrained_rows is not None and len(pretrained_rows) != int(input_dim):
            raise CookbookError(
                f"pretrained_rows has {len(pretrained_rows)} entries, expected {input_dim}.")
        if trainable_rows is not None and not 1 <= int(trainable_rows) <= int(input_dim):
            raise CookbookError(
                f"trainable_rows must lie in 1..input_dim ({input_dim}); got {trainable_rows}.")
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.trainable_mode = trainable_mode
        self.matrix = matrix
        self.pretrained_rows = pretrained_rows
        self.mask_zero = bool(mask_zero)
        self.trainable_rows = None if trainable_rows is None else int(trainable_rows)
        self.anchor_strength = float(anchor_strength)
        self.supports_masking = self.mask_zero
        shape = (self.input_dim, self.output_dim)
        split = self.input_dim if self.trainable_rows is None else self.trainable_rows
        initial = matrix
        if split < self.input_dim and matrix is None:
            # Draw the whole table at once, as without the split, so a seeded model
            # starts from the same rows either way.
            initial = keras.ops.convert_to_numpy(
                keras.initializers.get("uniform")(shape, dtype="float32"))
        self.embeddings = self.add_weight(
            shape=(split, self.output_dim), name="embeddings",
            initializer=_constant_or(None if initial is None else initial[:split], "uniform"),
            trainable=trainable_mode != "frozen",
        )
        self.fixed_embeddings = None
        if split < self.input_dim:
            self.fixed_embeddings = self.add_weight(
                shape=(self.input_dim - split, self.output_dim), name="fixed_embeddings",
                initializer=_constant_or(initial[split:], "zeros"), trainable=False,
            )
        self.anchor = None
        if self.anchor_strength:
            self.anchor = self.add_weight(
                shape=(split, self.output_dim), name="anchor",
                initializer=_constant_or(None if initial is None else initial[:split],
                                         "zeros"), trainable=False)
            if initial is None:
                self.anchor.assign(self.embeddings)
        rows = None if pretrained_rows is None else np.asarray(pretrained_rows, np.float32)
        self.fixed_rows = self.add_weight(
            shape=(self.input_dim, 1), name="fixed_rows",
            initializer=_constant_or(None if rows is None else rows[:, None], "zeros"),
            trainable=False,
        )
        self.built = True

    def call(self, inputs, training=None):
        table = self.embeddings
        split = table.shape[0]
        if self.trainable_mode == "missing_only" and self.trainable:
            fixed = keras.ops.cast(self.fixed_rows[:split], table.dtype)
            table = fixed * keras.ops.stop_gradient(table) + (1.0 - fixed) * table
        inputs = keras.ops.cast(inputs, "int32")
        if training and self.anchor is not None and self.trainable:
            # Only the rows this batch uses (a word's pull grows with its use), and
            # rows beyond `split` are fixed anyway.
            used = keras.ops.minimum(inputs, split - 1)
            moved = (keras.ops.take(table, used, axis=0)
                     - keras.ops.take(self.anchor, used, axis=0))
            words = keras.ops.cast(keras.ops.not_equal(inputs, PADDING_INDEX), moved.dtype)
            distance = keras.ops.sum(keras.ops.square(moved), axis=-1) * words
            self.add_loss(self.anchor_strength * keras.ops.sum(distance)
                          / keras.ops.maximum(keras.ops.sum(words), 1.0))
        if self.fixed_embeddings is None:
            return keras.ops.take(table, inputs, axis=0)
        # Two lookups and a choice: concatenating the tables would make the gradient
        # (and the work per step) as large as the whole vocabulary again.
        reachable = keras.ops.take(table, keras.ops.minimum(inputs, split - 1), axis=0)
        beyond = keras.ops.take(self.fixed_embeddings, keras.ops.maximum(inputs - split, 0),
                                axis=0)
        return keras.ops.where(keras.ops.expand_dims(inputs < split, -1), reachable, beyond)

    def table(self) -> np.ndarray:
        """The whole ``(input_dim, output_dim)`` table, both parts, as NumPy."""
        parts = [self.embeddings] + ([self.fixed_embeddings]
                                     if self.fixed_embeddings is not None else [])
        return np.concatenate([keras.ops.convert_to_numpy(part) for part in parts])

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return keras.ops.not_equal(inputs, PADDING_INDEX)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            trainable_mode=self.trainable_mode,
            mask_zero=self.mask_zero,
            trainable_rows=self.trainable_rows,
            anchor_strength=self.anchor_strength,
        )
        return config


def _constant_or(values, default: str):
    if values is None:
        return default
    return keras.initializers.Constant(np.asarray(values, dtype=np.float32))
