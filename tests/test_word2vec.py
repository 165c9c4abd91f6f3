"""The develop-model template for text: word2vec on a corpus, checked against random."""

import json
import os

import keras
import numpy as np
import pytest

from templates.data.texts import build_vectorizer, token_dataset, vectorize
from templates.data.tokenization import tokenize
from templates.models.embeddings import embedding_matrix
from templates.models.text_classifiers import pretrained_text_classifier
from templates.models.word_vectors import keyed_vectors
from templates.training.develop import UnskilledSourceModelError
from templates.training.phases import train_head
from templates.training.word2vec import (
    IN_DOMAIN_MINIMUM_WORDS,
    add_in_domain_vectors,
    develop_word_vectors,
    random_vectors_like,
    read_corpus,
    score_vectors,
)

TOPICS = {
    "praise": ["good", "great", "lovely", "superb", "wonderful", "brilliant"],
    "scorn": ["bad", "awful", "boring", "poor", "dreadful", "tedious"],
    "food": ["bread", "cheese", "apple", "soup", "rice", "butter"],
    "travel": ["train", "plane", "road", "ticket", "airport", "station"],
}


def topic_corpus(sentences=3000, seed=0, structured=True):
    """Sentences drawn from one topic each (structured) or from all words at random."""
    generator = np.random.default_rng(seed)
    words = [word for topic in TOPICS.values() for word in topic]
    corpus = []
    for _ in range(sentences):
        pool = TOPICS[generator.choice(list(TOPICS))] if structured else words
        corpus.append(list(generator.choice(pool, size=8)))
    return corpus


@pytest.fixture
def pairs_file(tmp_path):
    """Similarity ratings in wordsim353's format: same topic 9, different topics 1."""
    lines = ["# Word 1\tWord 2\tHuman (mean)"]
    words = [(word, name) for name, topic in TOPICS.items() for word in topic]
    for index, (first, first_topic) in enumerate(words):
        for second, second_topic in words[index + 1:]:
            lines.append(f"{first}\t{second}\t{9.0 if first_topic == second_topic else 1.0}")
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_skilful_vectors_are_accepted_saved_and_reused(pairs_file, tmp_path):
    folder = tmp_path / "source"
    vectors, check = develop_word_vectors(topic_corpus(), vector_size=16, epochs=5,
                                          evaluation_file=pairs_file, margin=0.3,
                                          directory=folder)
    assert check.skilful and check.accuracy > 0.6 and abs(check.baseline_accuracy) < 0.3
    assert check.baseline == "random vectors" and "Spearman" in check.metric
    saved = json.loads((folder / "word2vec_check.json").read_text())
    assert saved["accuracy"] == pytest.approx(check.accuracy)
    # Reused from disk (text format, not a pickle): same vectors, no training.
    saved_at = (folder / "word2vec.txt").stat().st_mtime_ns
    again, again_check = develop_word_vectors(topic_corpus(), vector_size=16, epochs=5,
                                              evaluation_file=pairs_file, margin=0.3,
                                              directory=folder)
    assert (folder / "word2vec.txt").stat().st_mtime_ns == saved_at
    assert again_check.accuracy == pytest.approx(check.accuracy)
    np.testing.assert_allclose(np.asarray(again["good"]), vectors["good"], rtol=1e-5)
    # Another corpus in the same folder is trained, not served the stale vectors.
    other, _ = develop_word_vectors(topic_corpus(seed=1), vector_size=16, epochs=5,
                                    evaluation_file=pairs_file, margin=0.3, directory=folder)
    assert not np.allclose(np.asarray(other["good"]), vectors["good"])


def test_unskilled_vectors_are_refused_unless_overridden(pairs_file, tmp_path):
    # Words drawn at random: no topic structure to learn, so the vectors rank the 276
    # pairs no better than random vectors do (both near 0; the margin is 0.3).
    corpus = topic_corpus(structured=False)
    with pytest.raises(UnskilledSourceModelError, match="Spearman.*random vectors"):
        develop_word_vectors(corpus, vector_size=16, epochs=5, evaluation_file=pairs_file,
                             margin=0.3, directory=tmp_path / "source")
    # The refused check is saved for inspection, and refused again on reuse.
    assert os.path.isfile(tmp_path / "source" / "word2vec_check.json")
    with pytest.raises(UnskilledSourceModelError):
        develop_word_vectors(corpus, directory=tmp_path / "source", evaluation_file=pairs_file,
                             margin=0.3)
    _, check = develop_word_vectors(corpus, vector_size=16, epochs=5, margin=0.3,
                                    evaluation_file=pairs_file, allow_unskilled=True)
    assert not check.skilful and abs(check.accuracy) < 0.3


def test_too_few_known_pairs_cannot_judge(tmp_path):
    with pytest.raises(ValueError, match="cannot judge"):
        develop_word_vectors([["alpha", "beta", "gamma"]] * 50, vector_size=8, min_count=1,
                             epochs=1)


def test_unchecked_vectors_for_downstream_judging_are_saved_and_reused(tmp_path):
    # evaluation=None: no word-similarity verdict (a corpus this small could not be
    # judged at all), the vectors are still saved and reused for the same corpus.
    corpus = [["alpha", "beta", "gamma"]] * 50
    vectors, check = develop_word_vectors(corpus, vector_size=8, min_count=1, epochs=1,
                                          evaluation=None, directory=tmp_path)
    assert check is None and vectors.vector_size == 8
    assert not (tmp_path / "word2vec_check.json").exists()
    saved_at = (tmp_path / "word2vec.txt").stat().st_mtime_ns
    again, _ = develop_word_vectors(corpus, vector_size=8, min_count=1, epochs=1,
                                    evaluation=None, directory=tmp_path)
    assert (tmp_path / "word2vec.txt").stat().st_mtime_ns == saved_at
    np.testing.assert_allclose(np.asarray(again["beta"]), vectors["beta"], rtol=1e-5)
    # Asking for the check afterwards trains and judges (it cannot judge these).
    with pytest.raises(ValueError, match="cannot judge"):
        develop_word_vectors(corpus, vector_size=8, min_count=1, epochs=1,
                             directory=tmp_path)


def test_in_domain_vectors_are_added_from_enough_words_on(tmp_path):
    pretrained = keyed_vectors(["good", "bread"], np.eye(2, 3, dtype=np.float32))
    texts = [" ".join(sentence) for sentence in topic_corpus(sentences=400)]  # 3,200 words
    unchanged, added = add_in_domain_vectors(pretrained, texts, "auto")
    assert unchanged is pretrained and not added  # below IN_DOMAIN_MINIMUM_WORDS
    assert add_in_domain_vectors(pretrained, texts * 20, "off") == (pretrained, False)
    both, added = add_in_domain_vectors(pretrained, texts * 20, "auto", directory=tmp_path)
    assert added and 20 * 3200 >= IN_DOMAIN_MINIMUM_WORDS
    assert both.vector_size == 3 + 50 and (tmp_path / "word2vec.txt").is_file()
    assert both.index_to_key[:2] == ["good", "bread"] and "soup" in both.key_to_index
    forced, added = add_in_domain_vectors(pretrained, texts, "on")
    assert added and forced.vector_size == 53
    with pytest.raises(ValueError, match="when must be one of"):
        add_in_domain_vectors(pretrained, texts, "always")
    # Forced on a text where no word repeats: one clear sentence, not gensim's error.
    with pytest.raises(ValueError, match="no word that occurs 2 times"):
        add_in_domain_vectors(pretrained, ["one two", "three four"], "on")


def test_developed_vectors_initialise_a_classifier_that_reads_unseen_words(pairs_file):
    # Source: unlabelled topic sentences. Target: a few labelled sentences that use
    # only "good"/"great" and "bad"/"awful"; test words never appear in them.
    keras.utils.set_random_seed(0)
    vectors, _ = develop_word_vectors(topic_corpus(), vector_size=16, epochs=5,
                                      evaluation_file=pairs_file)
    train_texts = ["good", "great", "good great", "bad", "awful", "bad awful"] * 6
    train_labels = np.array([1, 1, 1, 0, 0, 0] * 6)
    vectorizer = build_vectorizer(train_texts, sequence_length=4,
                                  extra_vocabulary=vectors.index_to_key)
    matrix = embedding_matrix(vectorizer.get_vocabulary(), vectors)
    transfer = pretrained_text_classifier(matrix, 2, 4, "pooled", units=8, dropout=0.0)
    train = token_dataset(vectorize(vectorizer, train_texts), train_labels, 6, shuffle=True,
                          seed=0)
    train_head(transfer, train, epochs=40, learning_rate=1e-2, seed=0, verbose=0)
    unseen = ["lovely superb", "wonderful", "boring dreadful", "tedious"]
    predictions = transfer.model.predict(vectorize(vectorizer, unseen), verbose=0)
    assert predictions.argmax(axis=1).tolist() == [1, 1, 0, 0]


@pytest.mark.acceptance  # a published result (docs/results.md) on real sentences
def test_real_corpus_similarity_passes_and_analogies_refuse(sst2_dir, tmp_path):
    # word2vec on the 9,613 SST-2 sentences (labels unused): enough for word
    # similarity to beat random vectors on gensim's wordsim353 (0.134 vs 0.018), far
    # too little for analogies, which the check refuses.
    corpus = [sentence for split in ("train", "dev", "test")
              for sentence in read_corpus(sst2_dir / f"stsa.binary.{split}")]
    assert len(corpus) == 9613 and corpus[0][0] == "1"
    corpus = [sentence[1:] for sentence in corpus]  # drop the label token
    with pytest.raises(UnskilledSourceModelError, match="analogy accuracy"):
        develop_word_vectors(corpus, evaluation="analogy", directory=tmp_path)
    # The refused vectors were saved with their check; reuse them (no retraining) and
    # judge them on word similarity instead.
    vectors, check = develop_word_vectors(corpus, evaluation="analogy", allow_unskilled=True,
                                          directory=tmp_path)
    assert not check.skilful and check.accuracy < 0.05
    similarity, covered = score_vectors(vectors, "similarity")
    baseline, _ = score_vectors(random_vectors_like(vectors), "similarity")
    assert covered > 100 and similarity > baseline + 0.1


def test_tokenize_matches_the_glove_rule():
    assert tokenize("It's GREAT, isn't it?!") == ["it's", "great", ",", "isn't", "it", "?", "!"]
