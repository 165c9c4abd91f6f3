"""Labelled texts as token ids, with a vocabulary aligned to pretrained word vectors.

The text counterpart of what `templates.data.images.image_dataset` does for photos: the
step between the loaded splits (`templates.data.texts.load_text_splits`) and a model
whose embedding starts from word vectors. `tokenize_for_vectors` builds a vocabulary
on the training texts (`templates.data.texts.build_vectorizer`) (plus, optionally, the most
frequent words of the vectors, so test words never seen in training keep their
pretrained meaning), aligns the vectors to its vocabulary
(`templates.models.embeddings.embedding_matrix`) and turns every split into token ids once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.tokenization import standard_token_counts
from templates.data.vocabulary import Vocabulary
from templates.data.texts import (
    TextSplits,
    build_vectorizer,
    count_cut_texts,
    describe_cut_texts,
    token_dataset,
    unknown_token_rate,
    vectorize,
)
from templates.models.embeddings import EmbeddingMatrix, embedding_matrix

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class TokenizedText:
    """Texts ready for an embedding model: token ids per split and aligned vectors.

    Attributes:
        splits: The texts, integer labels, skipped lines and paths.
        vectorizer: Texts to token ids: a `keras.layers.TextVectorization` on
            TensorFlow (put in front of the trained model by
            `templates.models.tokenized_text.string_model`, so the saved model takes strings), a
            `templates.data.vocabulary.Vocabulary` on other backends.
        matrix: The pretrained vectors, one row per vocabulary entry.
        ids: Token ids per split, shape ``(examples, sequence_length)``.
    """

    splits: TextSplits
    vectorizer: Any
    matrix: EmbeddingMatrix
    ids: dict[str, np.ndarray]

    @property
    def vocabulary(self) -> list[str]:
        """Token ``i`` of the ids is ``vocabulary[i]``."""
        return self.vectorizer.get_vocabulary()

    @property
    def sequence_length(self) -> int:
        """Tokens per text (longer texts are cut, shorter ones padded)."""
        return int(self.ids["train"].shape[1])

    @functools.cached_property
    def texts_cut(self) -> dict[str, int]:
        """Texts of each split longer than `sequence_length` words (`count_cut_texts`)."""
        return count_cut_texts(self.splits, self.sequence_length, standard_token_counts)

    @property
    def trainable_rows(self) -> int:
        """Rows of the embedding the training texts reach (ids below this).

        Fine-tuning gives no gradient to the other rows (the vectors' extra words), so
        they can stay in a fixed table (`templates.models.embeddings.PretrainedEmbedding`).
        """
        return int(self.ids["train"].max()) + 1

    def batches(self, split: str, batch_size: int, shuffle: bool = False,
                seed: int | None = None, rows: np.ndarray | None = None):
        """``(token ids, labels)`` batches of ``split`` (``"train"``, ``"validation"``,
        ``"test"``), or of its ``rows`` only (a label-count curve's subset); ``shuffle``
        with ``seed`` draws each epoch's order from ``(seed, epoch)``."""
        if split not in SPLITS:
            raise CookbookError(f"split must be one of {SPLITS}; got {split!r}.")
        ids, labels = self.ids[split], np.asarray(self.splits.labels[split])
        if rows is not None:
            ids, labels = ids[rows], labels[rows]
        return token_dataset(ids, labels, batch_size, shuffle=shuffle, seed=seed)

    def report(self) -> dict[str, Any]:
        """Figures for metrics.json: vocabulary, coverage, unknown words, lengths."""
        return {
            "vocabulary_size": len(self.vocabulary), "oov_rate": round(self.matrix.oov_rate, 4),
            "test_unknown_token_rate": round(unknown_token_rate(self.ids["test"]), 4),
            "embedding": self.matrix.report(), "sequence_length": self.sequence_length,
            "texts_cut": self.texts_cut,
            "class_names": self.splits.class_names,
            "examples": {name: len(getattr(self.splits, name)) for name in SPLITS},
            "skipped_lines": self.splits.skipped,
            **({"data_notes": self.splits.notes} if self.splits.notes else {}),
        }

    def summary(self) -> str:
        """Three lines for the console: the data, the vocabulary and its coverage, and
        the texts cut to the sequence length."""
        splits, matrix = self.splits, self.matrix
        return (f"{splits.describe()}\n"
                f"Vocabulary {len(self.vocabulary)} words, {self.sequence_length} tokens per "
                f"text; {matrix.coverage:.1%} have a pretrained vector "
                f"({matrix.case_folded_hits} after lower-casing), e.g. missing: "
                f"{matrix.missing_examples[:5]}\n"
                f"{describe_cut_texts(self.texts_cut, splits)}")


def tokenize_for_vectors(
    splits: TextSplits,
    vectors,
    sequence_length: int | None = None,
    extra_vocabulary: int = 0,
    normalize: bool = True,
    seed: int = 0,
) -> TokenizedText:
    """Turn ``splits`` into token ids over a vocabulary aligned to ``vectors``.

    Args:
        splits: From `templates.data.texts.load_text_splits`.
        vectors: Word vectors (`templates.models.word_vectors.load_word_vectors`, or any
            gensim ``KeyedVectors``).
        sequence_length: Tokens per text; the 95th percentile of the training texts'
            lengths when ``None``.
        extra_vocabulary: Also add the vectors' ``N`` most frequent words (0: the
            training words only).
        normalize: Scale the pretrained vectors to unit length.
        seed: Seeds the random rows of words without a pretrained vector.
    """
    if extra_vocabulary < 0:
        raise CookbookError(f"extra_vocabulary must be 0 or more; got {extra_vocabulary}.")
    vectorizer = build_vectorizer(splits.train.texts, sequence_length=sequence_length,
                                  extra_vocabulary=vectors.index_to_key[:extra_vocabulary])
    matrix = embedding_matrix(vectorizer.get_vocabulary(), vectors, missing="random",
                              seed=seed, normalize=normalize)
    ids = {name: vectorize(vectorizer, getattr(splits, name).texts) for name in SPLITS}
    return TokenizedText(splits=splits, vectorizer=vectorizer, matrix=matrix, ids=ids)


def string_model(vectorizer, model: keras.Model, name: str | None = None) -> keras.Model:
    """The model users load: on TensorFlow, ``model`` (on token ids) behind
    ``vectorizer``, taking raw strings; on other backends, which have no string tensors,
    ``model`` itself, with the vocabulary written beside it (``vocabulary.txt``,
    `templates.export.outputs.write_model_outputs`) for the predictor to tokenise with."""
    if isinstance(vectorizer, Vocabulary):
        return model
    texts = keras.Input(shape=(1,), dtype="string", name="texts")
    token_ids = vectorizer(texts)
    return keras.Model(texts, model(token_ids), name=name or f"{model.name}_on_text")
