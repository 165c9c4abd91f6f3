"""The develop-model template for text: word2vec trained on your own unlabelled corpus.

The source task is predicting words from their neighbours in plenty of unlabelled
text (gensim's `Word2Vec`); the reused part is the learnt vectors, which initialise
the target classifier's embedding exactly as GloVe does
(`templates.models.embeddings.embedding_matrix`, `templates.models.text_classifiers`).

As for every developed source model, its skill is checked, not assumed: the vectors
are scored on a word-similarity list (Spearman correlation with human ratings, e.g.
gensim's ``wordsim353.tsv``) or on analogies (``questions-words.txt``), and so are
random vectors for the same vocabulary (the mean of `RANDOM_DRAWS` draws), the naive
baseline. Vectors that are not
clearly better are refused (`templates.training.develop.UnskilledSourceModelError`) unless
the caller overrides it.

The vectors and the check are saved as word2vec text and JSON (no pickles), and a
later call with the same folder, corpus and settings reuses them without retraining.

`add_in_domain_vectors` is the two approaches together: word2vec trained on the
task's own training texts, concatenated beside pretrained vectors such as GloVe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from typing import TYPE_CHECKING

import numpy as np

from templates.data.errors import CookbookError
from templates.data.files import atomic_path, write_json
from templates.data.tokenization import tokenize
from templates.models.word_vectors import (
    concatenate_word_vectors,
    keyed_vectors,
    load_word_vectors,
)

if TYPE_CHECKING:  # gensim is imported where vectors are trained
    from gensim.models import KeyedVectors
from templates.training.develop import (
    SourceCheck,
    UnskilledSourceModelError,
    _enforce,
    read_saved_check,
)

VECTORS_FILE = "word2vec.txt"
CHECK_FILE = "word2vec_check.json"
SOURCE_FILE = "word2vec_source.json"
EVALUATIONS = ("similarity", "analogy")
# add_in_domain_vectors(when="auto"): on SST-2, 6,920 training sentences (135,000 words)
# gained 2.6 points of validation accuracy from in-domain vectors, 1,000 sentences
# (20,000 words) nothing (docs/results.md).
IN_DOMAIN_MINIMUM_WORDS = 50_000
IN_DOMAIN_CHOICES = ("auto", "on", "off")


def gensim_test_file(name: str) -> str:
    """Path of an evaluation file shipped with gensim (``wordsim353.tsv``...)."""
    from gensim.test.utils import datapath

    return datapath(name)


def read_corpus(path: str | os.PathLike, encoding: str = "utf-8") -> list[list[str]]:
    """One tokenised sentence per non-empty line of a text file (`tokenize`'s rule)."""
    with open(path, encoding=encoding) as handle:
        return [tokens for tokens in (tokenize(line) for line in handle) if tokens]


def score_vectors(
    vectors: KeyedVectors, evaluation: str = "similarity", evaluation_file: str | None = None,
    minimum_covered: int = 10,
) -> tuple[float, int]:
    """Score word vectors on word pairs (Spearman) or analogies (accuracy).

    Returns:
        ``(score, covered)``: the score and how many pairs or questions it used.

    Raises:
        ValueError: fewer than ``minimum_covered`` items use words the vectors know,
            so the score would say nothing.
    """
    if evaluation not in EVALUATIONS:
        raise CookbookError(f"evaluation must be one of {EVALUATIONS}; got {evaluation!r}.")
    if evaluation == "similarity":
        path = evaluation_file or gensim_test_file("wordsim353.tsv")
        covered = _covered_pairs(vectors, path)
        if covered >= minimum_covered:
            _, spearman, _ = vectors.evaluate_word_pairs(path, case_insensitive=True,
                                                         restrict_vocab=len(vectors))
            return float(spearman.statistic if hasattr(spearman, "statistic")
                         else spearman[0]), covered
    else:
        path = evaluation_file or gensim_test_file("questions-words.txt")
        score, sections = vectors.evaluate_word_analogies(
            path, restrict_vocab=len(vectors), case_insensitive=True)
        total = sections[-1] if sections else {"correct": [], "incorrect": []}
        covered = len(total["correct"]) + len(total["incorrect"])
        if covered >= minimum_covered:
            return float(score), covered
    raise CookbookError(
        f"Only {covered} items of {path} use words these vectors know (at least "
        f"{minimum_covered} needed): the {evaluation} check cannot judge them. Use a "
        "larger corpus, a lower min_count, or an evaluation file in the corpus's domain."
    )


def _covered_pairs(vectors: KeyedVectors, path: str) -> int:
    count = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#"):
                continue
            parts = line.strip().split("\t")
            if len(parts) >= 3 and all(word.lower() in vectors.key_to_index
                                       for word in parts[:2]):
                count += 1
    return count


def random_vectors_like(vectors: KeyedVectors, seed: int = 0) -> KeyedVectors:
    """The naive baseline: random vectors, same words and per-dimension scale."""
    matrix = np.asarray(vectors.vectors)
    generator = np.random.default_rng(seed)
    random = generator.standard_normal(matrix.shape) * matrix.std(axis=0) + matrix.mean(axis=0)
    return keyed_vectors(vectors.index_to_key, random.astype(np.float32))


def develop_word_vectors(
    corpus: Iterable[Sequence[str]] | str | os.PathLike,
    vector_size: int = 50,
    window: int = 5,
    min_count: int = 2,
    epochs: int = 20,
    seed: int = 0,
    evaluation: str | None = "similarity",
    evaluation_file: str | None = None,
    margin: float = 0.1,
    allow_unskilled: bool = False,
    directory: str | os.PathLike | None = None,
) -> tuple[KeyedVectors, SourceCheck | None]:
    """Train word2vec on an unlabelled corpus and check it beats random vectors.

    Args:
        corpus: Tokenised sentences, or a text file (one sentence per line).
        vector_size, window, min_count, epochs: gensim `Word2Vec` settings.
        seed: Seed for word2vec (trained on one worker, so runs repeat) and for the
            random baseline.
        evaluation: ``"similarity"`` (Spearman on word pairs), ``"analogy"``, or
            ``None``: no check (the vectors are judged downstream instead, for example
            by a classifier's validation accuracy), and ``check`` is ``None``.
        evaluation_file: The pairs or questions file; gensim's ``wordsim353.tsv`` or
            ``questions-words.txt`` when omitted.
        margin: How far above the random vectors' score the trained ones must be.
        allow_unskilled: Return unskilled vectors instead of raising.
        directory: Where ``word2vec.txt``, ``word2vec_check.json`` and
            ``word2vec_source.json`` (a digest of the corpus, the settings) are saved;
            when they exist for the same corpus and settings they are reused and nothing
            is trained (the check is enforced again).

    Returns:
        ``(vectors, check)``.

    Raises:
        UnskilledSourceModelError: the vectors are not clearly better than random.
    """
    sentences = (read_corpus(corpus) if isinstance(corpus, (str, os.PathLike))
                 else [list(sentence) for sentence in corpus])
    if not sentences:
        where = f" {os.fspath(corpus)!r}" if isinstance(corpus, (str, os.PathLike)) else ""
        raise CookbookError(f"The word2vec corpus{where} is empty: it needs one sentence of "
                            "text per line.")
    source = {"corpus": _fingerprint(sentences), "vector_size": vector_size,
              "window": window, "min_count": min_count, "epochs": epochs, "seed": seed,
              "evaluation": evaluation, "evaluation_file": evaluation_file}
    vectors_path = check_path = source_path = None
    if directory is not None:
        vectors_path = os.path.join(directory, VECTORS_FILE)
        check_path = os.path.join(directory, CHECK_FILE)
        source_path = os.path.join(directory, SOURCE_FILE)
        if (os.path.isfile(vectors_path) and _saved_source(source_path) == source
                and (evaluation is None or os.path.isfile(check_path))):
            check = (None if evaluation is None
                     else read_saved_check(check_path, margin, allow_unskilled))
            return load_word_vectors(vectors_path, cache_dir=False, progress=False), check

    counts = Counter(word for sentence in sentences for word in sentence)
    if not any(count >= min_count for count in counts.values()):
        where = f" {os.fspath(corpus)!r}" if isinstance(corpus, (str, os.PathLike)) else ""
        raise CookbookError(f"The word2vec corpus{where} has no word that occurs {min_count} "
                            f"times or more ({len(counts)} distinct words): there is nothing "
                            "to learn vectors for. Use a larger corpus or a lower min_count.")
    from gensim.models import Word2Vec

    model = Word2Vec(sentences, vector_size=vector_size, window=window, min_count=min_count,
                     epochs=epochs, seed=seed, workers=1, sg=1)
    vectors = model.wv
    check = None if evaluation is None else _check_against_random(
        vectors, evaluation, evaluation_file, margin, seed)
    if directory is not None:
        with atomic_path(vectors_path) as temporary:
            vectors.save_word2vec_format(temporary, binary=False)
        if check is not None:
            write_json(check_path, dataclasses.asdict(check))
        write_json(source_path, source)
    if check is not None:
        _enforce(check, allow_unskilled, check_path)
    return vectors, check


# Random vector sets averaged into the naive baseline.
RANDOM_DRAWS = 5


def _check_against_random(vectors: KeyedVectors, evaluation: str, evaluation_file, margin: float,
                          seed: int) -> SourceCheck:
    score, covered = score_vectors(vectors, evaluation, evaluation_file)
    # One draw of random vectors scores anywhere from -0.22 to 0.08 on wordsim353
    # (SST-2's vocabulary, seeds 0-3 and 1337): the baseline is the mean of several.
    baseline = float(np.mean([
        score_vectors(random_vectors_like(vectors, seed + draw), evaluation,
                      evaluation_file)[0] for draw in range(RANDOM_DRAWS)]))
    metric = ("Spearman correlation with human similarity ratings" if evaluation == "similarity"
              else "analogy accuracy") + f" ({covered} items)"
    return SourceCheck(score, baseline, margin, score >= baseline + margin,
                       baseline="random vectors", metric=metric)


def _fingerprint(sentences: Sequence[Sequence[str]]) -> str:
    """A digest of the tokenised corpus: saved vectors are reused only for the same text."""
    digest = hashlib.sha256()
    for sentence in sentences:
        digest.update(("\x1f".join(sentence) + "\n").encode("utf-8"))
    return digest.hexdigest()


def _saved_source(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def add_in_domain_vectors(
    vectors: KeyedVectors,
    texts: Sequence[str],
    when: str = "auto",
    seed: int = 0,
    directory: str | os.PathLike | None = None,
) -> tuple[KeyedVectors, bool]:
    """Put word2vec trained on the task's own texts beside pretrained vectors.

    GloVe knows what a word means in general; word2vec on the training texts (labels
    unused) knows how this task's texts use it. Each word gets both vectors
    (`templates.models.word_vectors.concatenate_word_vectors`). Word similarity says little
    about that use, so the in-domain vectors are not checked on it
    (``evaluation=None``): the classifier's validation accuracy chose them, and a
    comparison with scratch measures the whole.

    Args:
        vectors: The pretrained vectors.
        texts: The training texts (never the validation or test texts).
        when: ``"on"``, ``"off"``, or ``"auto"``: on when ``texts`` hold at least
            `IN_DOMAIN_MINIMUM_WORDS` words (fewer teach word2vec too little).
        seed: word2vec's seed.
        directory: Where the in-domain vectors are saved and reused from.

    Returns:
        ``(vectors, added)``: the concatenated vectors (or ``vectors`` unchanged) and
        whether the in-domain ones were added.
    """
    if when not in IN_DOMAIN_CHOICES:
        raise CookbookError(f"when must be one of {IN_DOMAIN_CHOICES}; got {when!r}.")
    if when == "off":
        return vectors, False
    sentences = [tokenize(text) for text in texts]
    if when == "auto" and sum(map(len, sentences)) < IN_DOMAIN_MINIMUM_WORDS:
        return vectors, False
    in_domain, _ = develop_word_vectors(sentences, seed=seed, evaluation=None,
                                        directory=directory)
    return concatenate_word_vectors(vectors, in_domain), True


# The word-vector sources a text recipe can train on or rank (--vector-source,
# --select-from): the pretrained vectors (GloVe by default), word2vec on the training
# texts, both side by side, and random vectors of the pretrained ones' words and scale.
VECTOR_SOURCES = ("glove", "word2vec", "glove+word2vec", "random")


def word_vector_source(name: str, pretrained: Callable[[], KeyedVectors],
                       texts: Sequence[str], seed: int = 0,
                       directory: str | os.PathLike | None = None) -> KeyedVectors:
    """The vectors of one of `VECTOR_SOURCES`.

    Args:
        name: ``"glove"`` (``pretrained()``), ``"word2vec"`` (trained on ``texts``, the
            training texts, labels unused), ``"glove+word2vec"`` (both, each word's
            vectors side by side) or ``"random"`` (`random_vectors_like` the pretrained).
        pretrained: Loads the pretrained vectors (called only when needed).
        texts: The training texts.
        seed: word2vec's and the random vectors' seed.
        directory: Where the in-domain word2vec vectors are saved and reused from.
    """
    if name not in VECTOR_SOURCES:
        raise CookbookError(f"Unknown word-vector source {name!r}; choose from "
                            f"{', '.join(VECTOR_SOURCES)}.")
    if name == "glove":
        return pretrained()
    if name == "random":
        return random_vectors_like(pretrained(), seed=seed)
    if name == "word2vec":
        vectors, _ = develop_word_vectors([tokenize(text) for text in texts], seed=seed,
                                          evaluation=None, directory=directory)
        return vectors
    vectors, _ = add_in_domain_vectors(pretrained(), texts, "on", seed=seed,
                                       directory=directory)
    return vectors


__all__ = [
    "VECTOR_SOURCES",
    "word_vector_source",
    "IN_DOMAIN_CHOICES",
    "IN_DOMAIN_MINIMUM_WORDS",
    "UnskilledSourceModelError",
    "add_in_domain_vectors",
    "develop_word_vectors",
    "random_vectors_like",
    "read_corpus",
    "score_vectors",
]
