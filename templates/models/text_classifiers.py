"""Text classifiers on pretrained word vectors: the pretrained-model template for text.

The reused part is the embedding (token ids to a sequence of word vectors) and the new
head is one of the architectures in `ARCHITECTURES`. The result is the same
`templates.models.transfer_model.TransferModel` the image template builds, so the same phases
train it: `train_head` with the embedding frozen (its output is cached, so each epoch
only runs the head), then `fine_tune` with the embedding unfrozen at a lower rate.

    matrix = embedding_matrix(vectorizer.get_vocabulary(), load_word_vectors("glove.6B.50d"))
    transfer = pretrained_text_classifier(matrix, num_classes=2, sequence_length=64)
    train_head(transfer, train_ids, validation_ids, epochs=10)
    fine_tune(transfer, train_ids, validation_ids, epochs=3, learning_rate=1e-4)

Models here take integer token ids, so they run on any Keras backend;
`templates.models.tokenized_text.string_model` adds the (TensorFlow) vectorisation in front.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.settings import setting
from templates.models.embeddings import (
    TRAINABLE_MODES,
    EmbeddingMatrix,
    PretrainedEmbedding,
    random_embedding_matrix,
)
from templates.models.heads import classification_head
from templates.models.transfer_model import TransferModel


@dataclasses.dataclass(frozen=True)
class TextArchitecture:
    """One row of the architecture table.

    Attributes:
        name: What users pass (``--architecture NAME``).
        description: One line for help texts.
        masks_padding: Whether it reads the padding mask (recurrent layers do).
    """

    name: str
    description: str
    masks_padding: bool = False


ARCHITECTURES: dict[str, TextArchitecture] = {
    "pooled": TextArchitecture(
        "pooled", "bag of embeddings: average and max pooling over words, then dense"),
    "cnn": TextArchitecture(
        "cnn", "Kim (2014): Conv1D of widths 3, 4 and 5, max over time, dropout 0.5"),
    "bilstm": TextArchitecture(
        "bilstm", "bidirectional LSTM over the words", masks_padding=True),
    "bigru": TextArchitecture(
        "bigru", "bidirectional GRU over the words", masks_padding=True),
}


def get_architecture(name: str) -> TextArchitecture:
    """Look up ``name`` in `ARCHITECTURES` (case-insensitive)."""
    key = str(name).lower()
    if key not in ARCHITECTURES:
        raise CookbookError(
            f"Unknown text architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[key]


def text_head(
    sequence_length: int,
    dimension: int,
    num_classes: int,
    architecture: str = "cnn",
    filters: int = 100,
    kernel_sizes: Sequence[int] = (3, 4, 5),
    units: int = 64,
    dropout: float = 0.5,
    embedding_dropout: float = 0.0,
    name: str = "head",
    multi_label: bool = False,
) -> keras.Model:
    """The new part of a text classifier: word-vector sequences to class probabilities.

    Args:
        sequence_length: Tokens per example (padded).
        dimension: Word-vector dimension.
        num_classes: Number of classes.
        architecture: A key of `ARCHITECTURES`.
        filters: Conv1D filters per kernel size (``"cnn"``).
        kernel_sizes: Conv1D widths (``"cnn"``).
        units: Recurrent units per direction (``"bilstm"``/``"bigru"``), hidden units
            for ``"pooled"``.
        dropout: Dropout before the output layer.
        embedding_dropout: Rate of whole word-vector channels dropped at the input
            (`SpatialDropout1D`); a regulariser for small data.
        name: Model name.
        multi_label: One sigmoid per class instead of a softmax (`templates.data.multi_label`).

    Returns:
        A functional model from ``(sequence_length, dimension)`` floats to
        ``(num_classes,)`` probabilities (float32 output, like the image heads).
    """
    spec = get_architecture(architecture)
    inputs = keras.Input(shape=(int(sequence_length), int(dimension)), name="word_vectors")
    if spec.masks_padding:
        # Padding rows of the embedding are zeros; Masking turns them into a mask so
        # the recurrent layers skip them instead of reading dozens of empty steps.
        # It comes first, so the mask is computed before any channel is dropped.
        sequences = keras.layers.Masking(mask_value=0.0, name="padding_mask")(inputs)
    else:
        sequences = inputs
    if embedding_dropout:
        sequences = keras.layers.SpatialDropout1D(embedding_dropout,
                                                  name="embedding_dropout")(sequences)
    if spec.name == "pooled":
        average = keras.layers.GlobalAveragePooling1D(name="average")(sequences)
        maximum = keras.layers.GlobalMaxPooling1D(name="maximum")(sequences)
        features = keras.layers.Concatenate(name="pooled")([average, maximum])
        hidden = (int(units),)
    elif spec.name == "cnn":
        if not kernel_sizes:
            raise CookbookError("kernel_sizes must name at least one width.")
        if min(kernel_sizes) < 1 or max(kernel_sizes) > sequence_length:
            raise CookbookError(
                f"kernel_sizes {tuple(kernel_sizes)} must lie in 1..sequence_length "
                f"({sequence_length}).")
        branches = []
        for width in kernel_sizes:
            x = keras.layers.Conv1D(int(filters), int(width), activation="relu",
                                    name=f"conv_{width}")(sequences)
            branches.append(keras.layers.GlobalMaxPooling1D(name=f"max_over_time_{width}")(x))
        features = (branches[0] if len(branches) == 1
                    else keras.layers.Concatenate(name="features")(branches))
        hidden = ()
    else:
        recurrent = keras.layers.LSTM if spec.name == "bilstm" else keras.layers.GRU
        features = keras.layers.Bidirectional(recurrent(int(units)), name=spec.name)(sequences)
        hidden = ()
    feature_width = int(features.shape[-1])
    classifier = classification_head((feature_width,), num_classes, dropout=dropout,
                                     hidden_units=hidden, name="classifier",
                                     multi_label=multi_label)
    return keras.Model(inputs, classifier(features), name=name)


def embedding_backbone(
    sequence_length: int,
    layer: PretrainedEmbedding,
    name: str = "embedding_backbone",
    static_layer: PretrainedEmbedding | None = None,
) -> keras.Model:
    """The reused part: token ids ``(sequence_length,)`` to word vectors.

    With ``static_layer`` (Kim's multichannel model), each token's vector is the
    static layer's vector followed by ``layer``'s: ``2 * dimension`` values, of which
    only the second half can change when fine-tuning.
    """
    token_ids = keras.Input(shape=(int(sequence_length),), dtype="int32", name="token_ids")
    vectors = layer(token_ids)
    if static_layer is not None:
        vectors = keras.layers.Concatenate(name="channels")([static_layer(token_ids), vectors])
    return keras.Model(token_ids, vectors, name=name)


def pretrained_text_classifier(
    embedding: EmbeddingMatrix,
    num_classes: int,
    sequence_length: int,
    architecture: str = "cnn",
    trainable_mode: str = "trainable",
    dropout: float = 0.5,
    filters: int = 100,
    kernel_sizes: Sequence[int] = (3, 4, 5),
    units: int = 64,
    embedding_dropout: float = 0.0,
    class_names: Sequence[str] | None = None,
    trainable_rows: int | None = None,
    static_channel: bool = False,
    multi_label: bool = False,
    anchor_strength: float = 0.0,
) -> TransferModel:
    """A text classifier whose embedding comes from pretrained word vectors.

    Args:
        embedding: From `templates.models.embeddings.embedding_matrix`.
        num_classes: Number of classes.
        sequence_length: Tokens per example.
        architecture: A key of `ARCHITECTURES`.
        trainable_mode: What fine-tuning may change in the embedding: ``"trainable"``
            (every row), ``"missing_only"`` (rows with no pretrained vector) or
            ``"frozen"`` (nothing). Head training always keeps it frozen.
        dropout, filters, kernel_sizes, units, embedding_dropout: see `text_head`.
        class_names: Optional class names, in label order.
        trainable_rows: Rows fine-tuning can reach (the largest training token id
            plus one); the rest stay in a fixed table (`PretrainedEmbedding`).
            ``None``: every row.
        static_channel: Kim (2014)'s multichannel model: a second copy of the
            vectors that never trains sits beside the fine-tuned one, so words the
            training texts never showed (whose rows do not move) still meet the
            vectors their neighbours started from. The head reads ``2 * dimension``
            values per word.
        multi_label: One sigmoid per class instead of a softmax (`templates.data.multi_label`).
        anchor_strength: Pull fine-tuned vectors back towards the pretrained ones
            (`PretrainedEmbedding`; 0: no pull).

    Returns:
        A `TransferModel` (``backbone`` = the embedding, frozen; ``head`` = the
        architecture; ``model`` takes ``(sequence_length,)`` int token ids).
    """
    if class_names is not None and len(class_names) != int(num_classes):
        raise CookbookError(
            f"class_names has {len(class_names)} names but num_classes={num_classes}.")
    vocabulary_size, dimension = embedding.matrix.shape
    layer = PretrainedEmbedding(vocabulary_size, dimension, trainable_mode=trainable_mode,
                                matrix=embedding.matrix,
                                pretrained_rows=embedding.pretrained_rows,
                                trainable_rows=trainable_rows,
                                anchor_strength=anchor_strength, name="embedding")
    static_layer = None
    if static_channel:
        static_layer = PretrainedEmbedding(vocabulary_size, dimension, trainable_mode="frozen",
                                           matrix=embedding.matrix, name="static_embedding")
    backbone = embedding_backbone(sequence_length, layer, static_layer=static_layer)
    backbone.trainable = False
    width = dimension * (2 if static_channel else 1)
    head = text_head(sequence_length, width, num_classes, architecture, filters=filters,
                     kernel_sizes=kernel_sizes, units=units, dropout=dropout,
                     embedding_dropout=embedding_dropout, multi_label=multi_label)
    return TransferModel(backbone, head, fine_tune_from=None, class_names=class_names,
                         name="text_classifier", input_name="token_ids")


def scratch_text_classifier(
    vocabulary_size: int,
    dimension: int,
    num_classes: int,
    sequence_length: int,
    architecture: str = "cnn",
    like: np.ndarray | None = None,
    seed: int | None = 0,
    dropout: float = 0.5,
    filters: int = 100,
    kernel_sizes: Sequence[int] = (3, 4, 5),
    units: int = 64,
    embedding_dropout: float = 0.0,
    trainable_rows: int | None = None,
    static_channel: bool = False,
    multi_label: bool = False,
) -> keras.Model:
    """The same architecture with a randomly initialised, trainable embedding.

    Args:
        like: A pretrained matrix whose per-dimension scale the random rows copy; when
            omitted, Keras's default embedding initialiser (uniform in +-0.05) is used.
        seed: Seed for the random rows.
        static_channel: The counterpart of a multichannel pretrained model: one
            trainable random embedding as wide as its two channels together
            (``2 * dimension``), so the head is the same and every embedding value
            trains (a fixed random channel would only handicap the baseline).
        Other arguments: as in `pretrained_text_classifier`.

    Returns:
        A `keras.Model` on ``(sequence_length,)`` int token ids.
    """
    if static_channel:
        dimension = 2 * int(dimension)
        if like is not None:
            like = np.concatenate([like, like], axis=1)
    matrix = None if like is None else random_embedding_matrix(vocabulary_size, like, seed)
    layer = PretrainedEmbedding(vocabulary_size, dimension, trainable_mode="trainable",
                                matrix=matrix, trainable_rows=trainable_rows,
                                name="embedding")
    backbone = embedding_backbone(sequence_length, layer)
    head = text_head(sequence_length, dimension, num_classes, architecture, filters=filters,
                     kernel_sizes=kernel_sizes, units=units, dropout=dropout,
                     embedding_dropout=embedding_dropout, multi_label=multi_label)
    return keras.Model(backbone.inputs, head(backbone.outputs[0]), name="text_classifier_scratch")


@dataclasses.dataclass
class TextClassifierSettings:
    """The classifier a word-vector run trains (the GloVe recipe's classifier flags)."""

    architecture: str = setting("cnn", "Classifier on the embedding (cnn: Kim 2014).",
                                choices=tuple(sorted(ARCHITECTURES)))
    filters: int = setting(200, "Convolution filters per kernel width (cnn).", minimum=1)
    multichannel: bool = setting(False, "Kim's multichannel model: a static copy of the "
                                 "vectors beside the fine-tuned one.")
    units: int = setting(64, "Recurrent units per direction (bilstm, bigru) and hidden "
                         "units (pooled).", minimum=1)
    embedding_dropout: float = setting(0.25, "SpatialDropout1D rate on the word vectors.",
                                       minimum=0, below=1)
    embedding_training: str = setting(
        "trainable", "What fine-tuning may change: every row, only rows without a "
        "pretrained vector (missing_only), or nothing (frozen).", choices=TRAINABLE_MODES)
    anchor_strength: float = setting(
        0.0, "While fine-tuning, pull each used word vector towards its pretrained value "
        "(L2-SP; this times the mean squared distance is added to the loss).", minimum=0)


def text_classifier(data, settings: TextClassifierSettings | None = None,
                    multi_label: bool = False, scratch: bool = False):
    """The classifier ``settings`` describe on ``data``'s vectors (a
    `templates.models.tokenized_text.TokenizedText`): a `TransferModel`, or with
    ``scratch`` the same network on randomly initialised embeddings (a `keras.Model`).

    Fine-tuning can only reach the rows of words in the training texts; the other rows
    (most of a GloVe vocabulary) stay in a fixed table, which makes each step several
    times faster and changes no result (those rows get no gradient).
    """
    settings = settings or TextClassifierSettings()
    options = dict(filters=settings.filters, units=settings.units,
                   static_channel=settings.multichannel, multi_label=multi_label,
                   embedding_dropout=settings.embedding_dropout,
                   trainable_rows=data.trainable_rows)
    num_classes = len(data.splits.class_names)
    if scratch:
        return scratch_text_classifier(len(data.vocabulary), data.matrix.matrix.shape[1],
                                       num_classes, data.sequence_length,
                                       settings.architecture, **options)
    return pretrained_text_classifier(
        data.matrix, num_classes, data.sequence_length, settings.architecture,
        trainable_mode=settings.embedding_training, class_names=data.splits.class_names,
        anchor_strength=settings.anchor_strength, **options)
