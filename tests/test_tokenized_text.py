"""`templates.models.tokenized_text`: the text recipe's preparation as a library loader."""

import numpy as np
import pytest
from gensim.models import KeyedVectors

from templates.data.texts import load_text_splits
from templates.models.tokenized_text import tokenize_for_vectors


def test_texts_become_ids_over_a_vocabulary_aligned_to_the_vectors(tmp_path):
    (tmp_path / "train.tsv").write_text(
        "pos\ta fine warm film\nneg\ta dull cold film\npos\tfine fine day\n"
        "no tab on this line\nneg\tcold rain\n", encoding="utf-8")
    (tmp_path / "test.tsv").write_text("pos\tsplendid warm film\nneg\tdreary cold day\n",
                                       encoding="utf-8")
    vectors = KeyedVectors(vector_size=4)
    words = ["the", "splendid", "dreary", "fine", "cold", "film"]
    vectors.add_vectors(words, np.arange(24, dtype="float32").reshape(6, 4) + 1)
    splits = load_text_splits(tmp_path / "train.tsv", test=tmp_path / "test.tsv",
                              validation_fraction=0.25, seed=0)
    data = tokenize_for_vectors(splits, vectors, sequence_length=5, extra_vocabulary=3,
                                seed=0)

    # The training words, then the vectors' 3 most frequent words not among them.
    vocabulary = data.vocabulary
    assert "splendid" in vocabulary and "dreary" in vocabulary and "the" in vocabulary
    assert vocabulary.index("splendid") >= data.trainable_rows  # only extra words above
    assert set(data.ids) == {"train", "validation", "test"}
    assert data.ids["test"].shape == (2, 5) and data.sequence_length == 5
    # A test word seen only in the vectors gets its pretrained row, not the unknown id.
    first_test = data.ids["test"][0].tolist()
    assert vocabulary.index("splendid") in first_test
    row = data.matrix.matrix[vocabulary.index("splendid")]
    expected = vectors["splendid"] / np.linalg.norm(vectors["splendid"])  # unit length
    np.testing.assert_allclose(row, expected, rtol=1e-5)

    report = data.report()
    assert report["examples"] == {"train": len(splits.train),
                                  "validation": len(splits.validation), "test": 2}
    assert len(report["skipped_lines"]) == 1  # the line without a tab, counted
    assert report["vocabulary_size"] == len(vocabulary)
    assert "skipped 1 lines or files" in data.summary()

    batches = data.batches("train", batch_size=2, shuffle=True, seed=1)
    assert sum(int(labels.shape[0]) for _, labels in batches) == len(splits.train)
    with pytest.raises(ValueError, match="split must be one of"):
        data.batches("dev", batch_size=2)
    with pytest.raises(ValueError, match="extra_vocabulary"):
        tokenize_for_vectors(splits, vectors, extra_vocabulary=-1)


def test_texts_longer_than_the_sequence_length_are_counted_not_cut_silently(tmp_path):
    from templates.data.texts import build_vectorizer, vectorize

    texts = ["Good, fine film!", "a b c d e f", "one two three four five six seven",
             "short", "it's a dull -- very dull -- day."]
    (tmp_path / "train.tsv").write_text("".join(f"{'pos' if i % 2 else 'neg'}\t{text}\n"
                                                for i, text in enumerate(texts * 2)),
                                        encoding="utf-8")
    (tmp_path / "test.tsv").write_text("pos\tone two three four five six seven eight\n"
                                       "neg\tbad\n", encoding="utf-8")
    splits = load_text_splits(tmp_path / "train.tsv", test=tmp_path / "test.tsv",
                              validation_fraction=0.2, seed=0)
    vectors = KeyedVectors(vector_size=4)
    vectors.add_vectors(["good", "film"], np.ones((2, 4), dtype="float32"))
    data = tokenize_for_vectors(splits, vectors, sequence_length=5)
    # The tokens counted are the vectoriser's own (punctuation marks are tokens): at a
    # length that cuts nothing, each text's non-padding ids.
    wide = build_vectorizer(splits.train.texts, sequence_length=50)
    assert ((vectorize(wide, texts) != 0).sum(axis=1)).tolist() == [5, 6, 7, 1, 9]
    expected = {name: int(((vectorize(wide, getattr(splits, name).texts) != 0).sum(axis=1)
                           > 5).sum()) for name in ("train", "validation", "test")}
    assert data.texts_cut == {"sequence_length": 5, **expected} and expected["test"] == 1
    assert data.report()["texts_cut"] == data.texts_cut
    assert "Texts longer than 5 tokens" in data.summary().splitlines()[-1]
