"""Where a text run's word vectors come from: pretrained, developed, in-domain or random.

`WordVectorSettings` holds the choices (the GloVe recipe's word-vector flags, one per
field) and `WordVectorSources` turns them into token ids and an embedding matrix:

    sources = WordVectorSources(splits, WordVectorSettings(vectors="glove.6B.100d"),
                                seed=0, directory="runs/glove")
    data, details = sources.choose()          # GloVe + in-domain word2vec (auto)
    random = sources.tokenized("random")      # one named source, e.g. for selection
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

from templates.data.settings import setting
from templates.models.tokenized_text import TokenizedText, tokenize_for_vectors
from templates.models.word_vectors import load_word_vectors
from templates.training.word2vec import (
    EVALUATIONS,
    IN_DOMAIN_CHOICES,
    IN_DOMAIN_MINIMUM_WORDS,
    VECTOR_SOURCES,
    add_in_domain_vectors,
    develop_word_vectors,
    word_vector_source,
)


@dataclasses.dataclass
class WordVectorSettings:
    """Which word vectors a text run trains on, and how its texts become token ids."""

    vectors: str = setting(
        "glove.6B.50d", "Word vectors: a file (GloVe .txt/.zip, word2vec .bin/.txt, "
        "fastText .vec), ARCHIVE.zip::MEMBER, glove.6B.{50,100,200,300}d, or a gensim-data "
        "name such as glove-wiki-gigaword-100.")
    vector_source: str = setting(
        "auto", "Train on one source: glove (--vectors), word2vec (on the training "
        "texts), glove+word2vec, random; auto: --vectors with --in-domain-vectors.",
        choices=("auto", *VECTOR_SOURCES))
    in_domain_vectors: str = setting(
        "auto", "Also train word2vec on the training texts (labels unused) and put its "
        f"vectors beside the pretrained ones; auto: from {IN_DOMAIN_MINIMUM_WORDS:,} "
        "training words on (not with --develop-vectors).", choices=IN_DOMAIN_CHOICES)
    develop_vectors: str | None = setting(
        None, "The develop-model path: train word2vec on this unlabelled text (one "
        "sentence per line) instead of loading --vectors, used only if it beats random "
        "vectors (--develop-evaluation).", metavar="CORPUS")
    develop_evaluation: str = setting(
        "similarity", "How developed vectors are judged against random ones: gensim's "
        "wordsim353 pairs or its analogy questions.", choices=EVALUATIONS)
    allow_unskilled: bool = setting(
        False, "Use developed vectors even when they do not beat random ones.")
    extra_vocabulary: int = setting(
        100000, "Add the N most frequent words of the vectors to the vocabulary (0: "
        "training words only).", minimum=0)
    normalize_vectors: bool = setting(True, "Scale pretrained vectors to unit length.")
    sequence_length: int | None = setting(
        None, "Tokens per text; none: the 95th percentile of training lengths.", minimum=1,
        maximum=100_000)
    words_with_spaces: bool = setting(
        False, "Vector file words may contain spaces (GloVe 840B).")
    trust_pickle: bool = setting(
        False, "Allow gensim native .kv/.model vector files (pickles: they can run code "
        "when loaded).")


class WordVectorSources:
    """The word vectors of a text run, tokenised (`templates.models.tokenized_text`).

    Args:
        splits: The run's `templates.data.texts.TextSplits`.
        settings: `WordVectorSettings`.
        seed: The plan's seed (word2vec, random vectors, the vocabulary's order).
        directory: The run's folder: in-domain word2vec is kept in ``in_domain/``,
            developed vectors in ``word2vec/``.
    """

    def __init__(self, splits, settings: WordVectorSettings, seed: int,
                 directory: str | os.PathLike):
        self.splits, self.settings, self.seed = splits, settings, seed
        self.directory = os.fspath(directory)
        # The pretrained vectors load once (a text file's first load is cached as a
        # memory-mapped array), whichever sources ask for them.
        self.pretrained = functools.cache(lambda: load_word_vectors(
            settings.vectors, words_with_spaces=settings.words_with_spaces,
            trust_pickle=settings.trust_pickle))

    def _tokenize(self, vectors) -> TokenizedText:
        settings = self.settings
        return tokenize_for_vectors(self.splits, vectors, settings.sequence_length,
                                    settings.extra_vocabulary, settings.normalize_vectors,
                                    self.seed)

    def tokenized(self, source: str) -> TokenizedText:
        """The texts on one of `templates.training.word2vec.VECTOR_SOURCES`."""
        return self._tokenize(word_vector_source(
            source, self.pretrained, self.splits.train.texts, self.seed,
            os.path.join(self.directory, "in_domain")))

    def choose(self, source: str | None = None) -> tuple[TokenizedText, dict[str, Any]]:
        """The vectors the settings ask for, tokenised, and what metrics.json records.

        ``source`` (e.g. a selection's pick) or ``vector_source`` names one source;
        else ``develop_vectors`` trains word2vec on the user's corpus, kept only if it
        beats random vectors (refused in one sentence otherwise), or ``vectors`` is
        loaded, with in-domain word2vec beside either as ``in_domain_vectors`` says.
        """
        settings = self.settings
        source = source or settings.vector_source
        details: dict[str, Any] = {"vector_source": source}
        if source != "auto":
            data = self.tokenized(source)
            details["vectors"] = f"{source} ({settings.vectors})"
            in_domain = "word2vec" in source
        else:
            vectors, corpus = None, settings.develop_vectors
            if corpus:
                vectors, check = develop_word_vectors(
                    corpus, evaluation=settings.develop_evaluation, seed=self.seed,
                    allow_unskilled=settings.allow_unskilled,
                    directory=os.path.join(self.directory, "word2vec"))
                print(f"word2vec on {corpus}: {check.metric} {check.accuracy:.3f}, "
                      f"random vectors {check.baseline_accuracy:.3f}.")
                details["source_check"] = dataclasses.asdict(check)
            # Developed vectors already are in-domain, so auto leaves them alone.
            when = ("off" if corpus and settings.in_domain_vectors == "auto"
                    else settings.in_domain_vectors)
            vectors, in_domain = add_in_domain_vectors(
                vectors if corpus else self.pretrained(), self.splits.train.texts, when, seed=self.seed,
                directory=os.path.join(self.directory, "in_domain"))
            data = self._tokenize(vectors)
            details["vectors"] = ((f"word2vec:{corpus}" if corpus else str(settings.vectors))
                                  + (" + in-domain word2vec" if in_domain else ""))
        if in_domain:
            print(f"word2vec on the training texts beside the pretrained vectors: "
                  f"{data.matrix.matrix.shape[1]} dimensions per word.")
        print(data.summary())
        return data, details
