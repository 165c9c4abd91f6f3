"""Embedding matrices, PretrainedEmbedding's freeze modes, text classifiers and text data."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from templates.data.texts import (
    TextDataError,
    build_vectorizer,
    encode_labels,
    load_text_splits,
    read_text_examples,
    split_examples,
    subset_examples,
    token_dataset,
    vectorize,
)
from templates.models.embeddings import PretrainedEmbedding, embedding_matrix
from templates.models.text_classifiers import (
    ARCHITECTURES,
    pretrained_text_classifier,
    scratch_text_classifier,
)
from templates.models.tokenized_text import string_model
from templates.models.word_vectors import keyed_vectors
from templates.training.compilation import compile_classifier
from templates.training.phases import fine_tune, train_head
from templates.training.saving import load_model, save_model

POSITIVE = ["good", "great", "fun", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor"]


def sentiment_vectors(dimension=8, seed=0):
    """Vectors where sentiment is one direction: a purpose-built 'pretrained' space."""
    generator = np.random.default_rng(seed)
    words = POSITIVE + NEGATIVE + ["the", "film", "was", "a", "plot", "Movie"]
    matrix = generator.normal(scale=0.3, size=(len(words), dimension)).astype(np.float32)
    matrix[: len(POSITIVE), 0] += 2.0
    matrix[len(POSITIVE): len(POSITIVE) + len(NEGATIVE), 0] -= 2.0
    return keyed_vectors(words, matrix)


def test_embedding_matrix_counts_hits_case_folds_and_fills_missing_rows():
    keyed = sentiment_vectors()
    vocabulary = ["", "[UNK]", "good", "BAD", "movie", "zzzz", "qqqq"]
    result = embedding_matrix(vocabulary, keyed, missing="random", seed=0)
    assert (result.hits, result.case_folded_hits, result.misses) == (1, 1, 3)
    # Case folding only lower-cases the vocabulary word: "movie" misses "Movie".
    assert result.missing_examples == ["movie", "zzzz", "qqqq"]
    np.testing.assert_array_equal(result.matrix[2], keyed["good"])
    np.testing.assert_array_equal(result.matrix[3], keyed["bad"])  # via case folding
    np.testing.assert_array_equal(result.matrix[0], 0.0)           # padding
    assert result.pretrained_rows.tolist() == [False, False, True, True, False, False, False]
    # Random rows sit at the vectors' own scale, not at Keras's +-0.05.
    spread = np.asarray(keyed.vectors).std(axis=0)
    random_rows = result.matrix[[1, 4, 5, 6]]
    assert 0.3 < random_rows.std(axis=0).mean() / spread.mean() < 3.0
    assert result.report()["oov_rate"] == pytest.approx(3 / 5)

    zeros = embedding_matrix(vocabulary, keyed, missing="zeros")
    np.testing.assert_array_equal(zeros.matrix[[1, 4, 5, 6]], 0.0)
    with pytest.raises(ValueError, match="missing must be one of"):
        embedding_matrix(vocabulary, keyed, missing="mean")
    with pytest.raises(ValueError, match="none of them words"):
        embedding_matrix(["", "[UNK]"], keyed)


def tiny_model(layer):
    ids = keras.Input(shape=(3,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(layer(ids))
    model = keras.Model(ids, keras.layers.Dense(2, activation="softmax")(pooled))
    compile_classifier(model, 0.05)
    return model


@pytest.mark.parametrize("mode", ["frozen", "trainable", "missing_only"])
def test_trainable_modes_change_exactly_the_rows_they_promise(mode):
    keras.utils.set_random_seed(0)
    matrix = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    pretrained = np.array([False, False, True, True, False, False])
    layer = PretrainedEmbedding(6, 4, trainable_mode=mode, matrix=matrix,
                                pretrained_rows=pretrained)
    layer.trainable = True  # as fine_tune does; "frozen" must stay frozen anyway
    model = tiny_model(layer)
    ids = np.array([[1, 2, 4], [3, 5, 1], [2, 3, 4], [5, 4, 2]] * 4)
    labels = np.array([0, 1, 0, 1] * 4)
    model.fit(ids, labels, epochs=5, verbose=0)
    after = layer.embeddings.numpy()
    changed = ~np.isclose(after, matrix).all(axis=1)
    if mode == "frozen":
        assert layer.trainable_weights == [] and not changed.any()
    elif mode == "trainable":
        assert changed[1:].all()
    else:
        assert not changed[pretrained].any()   # pretrained rows fixed
        assert changed[[1, 4, 5]].all()        # missing rows and OOV learnt
    assert not changed[0]  # padding never appears in the data


@pytest.mark.parametrize("mode", ["trainable", "missing_only"])
def test_rows_beyond_trainable_rows_stay_fixed_and_change_no_result(mode):
    # Training ids reach rows 0..4 only; rows 5..7 (say, words added from the vectors)
    # get no gradient, so keeping them in a fixed table must train exactly the same
    # rows to exactly the same values, and still look them up at prediction time.
    matrix = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    pretrained = np.array([False, False, True, True, False, True, True, False])
    ids = np.array([[1, 2, 4], [3, 4, 1], [2, 3, 4], [4, 4, 2]] * 4)
    labels = np.array([0, 1, 0, 1] * 4)

    def trained(trainable_rows):
        keras.utils.set_random_seed(0)
        layer = PretrainedEmbedding(8, 4, trainable_mode=mode, matrix=matrix,
                                    pretrained_rows=pretrained,
                                    trainable_rows=trainable_rows)
        model = tiny_model(layer)
        model.fit(ids, labels, epochs=5, verbose=0, shuffle=False)
        return layer, model

    split, split_model = trained(5)
    whole, whole_model = trained(None)
    assert tuple(split.embeddings.shape) == (5, 4)
    assert [tuple(weight.shape) for weight in split.trainable_weights] == [(5, 4)]
    np.testing.assert_allclose(split.table(), whole.embeddings.numpy(), atol=1e-6)
    np.testing.assert_array_equal(split.fixed_embeddings.numpy(), matrix[5:])
    assert not np.allclose(split.table()[1], matrix[1])  # the check can fail: rows moved
    beyond = np.array([[6, 7, 2]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(split(beyond))[0],
                               split.table()[[6, 7, 2]], atol=1e-7)
    np.testing.assert_allclose(split_model.predict(beyond, verbose=0),
                               whole_model.predict(beyond, verbose=0), atol=1e-6)

    clone = PretrainedEmbedding.from_config(split.get_config())
    assert clone.trainable_rows == 5 and tuple(clone.fixed_embeddings.shape) == (3, 4)
    with pytest.raises(ValueError, match=r"trainable_rows must lie in 1..input_dim \(8\)"):
        PretrainedEmbedding(8, 4, trainable_rows=9)


def test_anchor_strength_holds_tuned_vectors_near_their_pretrained_values(tmp_path):
    matrix = np.random.default_rng(2).normal(size=(8, 4)).astype(np.float32)
    ids = np.array([[1, 2, 4], [3, 4, 1], [2, 3, 0], [4, 4, 2]] * 4)
    labels = np.array([0, 1, 0, 1] * 4)

    def moved(strength):
        keras.utils.set_random_seed(0)
        layer = PretrainedEmbedding(8, 4, matrix=matrix, trainable_rows=6,
                                    anchor_strength=strength)
        model = tiny_model(layer)
        model.fit(ids, labels, epochs=20, verbose=0, shuffle=False)
        return layer, np.linalg.norm(layer.table()[1:5] - matrix[1:5], axis=1)

    free, free_distance = moved(0.0)
    held, held_distance = moved(10.0)
    assert free.anchor is None and tuple(held.anchor.shape) == (6, 4)
    assert (held_distance < 0.5 * free_distance).all(), (held_distance, free_distance)
    np.testing.assert_array_equal(held.anchor.numpy(), matrix[:6])  # the anchor stays
    # Inference adds no loss; the setting survives saving.
    held(ids[:1], training=False)
    assert not held.losses
    clone = PretrainedEmbedding.from_config(held.get_config())
    assert clone.anchor_strength == 10.0
    with pytest.raises(ValueError, match="anchor_strength must be 0 or more"):
        PretrainedEmbedding(8, 4, anchor_strength=-1)


def test_a_split_scratch_table_starts_from_the_same_random_rows():
    def table(trainable_rows):
        keras.utils.set_random_seed(3)
        model = scratch_text_classifier(30, 4, 2, 5, "cnn", filters=2, kernel_sizes=(2,),
                                        trainable_rows=trainable_rows)
        return model.get_layer("embedding").table()

    np.testing.assert_array_equal(table(12), table(None))


def test_pretrained_embedding_config_round_trip_and_mask():
    layer = PretrainedEmbedding(5, 3, trainable_mode="missing_only", mask_zero=True, name="e")
    clone = PretrainedEmbedding.from_config(layer.get_config())
    assert (clone.input_dim, clone.output_dim, clone.trainable_mode, clone.mask_zero) == (
        5, 3, "missing_only", True)
    mask = layer.compute_mask(np.array([[0, 2, 0]]))
    assert keras.ops.convert_to_numpy(mask).tolist() == [[False, True, False]]
    with pytest.raises(ValueError, match="trainable_mode must be one of"):
        PretrainedEmbedding(5, 3, trainable_mode="partly")
    with pytest.raises(ValueError, match=r"matrix has shape \(2, 2\)"):
        PretrainedEmbedding(5, 3, matrix=np.zeros((2, 2)))


def sentiment_texts(count, seed):
    generator = np.random.default_rng(seed)
    texts, labels = [], []
    for index in range(count):
        positive = index % 2 == 0
        word = generator.choice(POSITIVE if positive else NEGATIVE)
        filler = generator.choice(["the film was", "a plot", "the movie was"])
        texts.append(f"{filler} {word}")
        labels.append(int(positive))
    return texts, np.array(labels, dtype=np.int32)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_each_architecture_transfers_unseen_words_through_the_vectors(architecture):
    # Training sentences use 3 of the 5 words per class; the test sentences use the
    # other 2, which training never showed. Only the pretrained vectors can tell.
    keras.utils.set_random_seed(0)
    keyed = sentiment_vectors()
    train_texts, train_labels = sentiment_texts(80, 0)
    held_out = {"lovely", "superb", "boring", "poor"}
    keep = [not any(word in text for word in held_out) for text in train_texts]
    train_texts = [text for text, k in zip(train_texts, keep) if k]
    train_labels = train_labels[np.array(keep)]
    test_texts = [f"the film was {word}" for word in ("lovely", "superb", "boring", "poor")]
    test_labels = np.array([1, 1, 0, 0])

    vectorizer = build_vectorizer(train_texts, sequence_length=6,
                                  extra_vocabulary=keyed.index_to_key)
    matrix = embedding_matrix(vectorizer.get_vocabulary(), keyed, seed=0)
    train_ids = vectorize(vectorizer, train_texts)
    # The held-out words come after every training word: their rows live in the fixed
    # part of the table (as the recipe does it), and still carry their meaning.
    trainable_rows = int(train_ids.max()) + 1
    assert trainable_rows < len(vectorizer.get_vocabulary())
    transfer = pretrained_text_classifier(matrix, 2, 6, architecture, filters=8,
                                          kernel_sizes=(1, 2), units=8, dropout=0.1,
                                          trainable_rows=trainable_rows)
    train = token_dataset(train_ids, train_labels, 8, shuffle=True, seed=0)
    history = train_head(transfer, train, epochs=30, learning_rate=1e-2, seed=0, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    predictions = transfer.model.predict(vectorize(vectorizer, test_texts), verbose=0)
    assert (predictions.argmax(axis=1) == test_labels).all()

    # Fine-tuning unfreezes the embedding (every row in "trainable" mode).
    before = transfer.backbone.get_layer("embedding").embeddings.numpy().copy()
    fine_tune(transfer, train, epochs=2, learning_rate=1e-3, from_layer=None, verbose=0)
    assert not np.allclose(transfer.backbone.get_layer("embedding").embeddings.numpy(), before)


def test_scratch_classifier_is_the_same_architecture_with_random_rows():
    matrix = embedding_matrix(["", "[UNK]", "good", "bad"], sentiment_vectors())
    transfer = pretrained_text_classifier(matrix, 2, 5, "cnn", filters=4, kernel_sizes=(2,))
    scratch = scratch_text_classifier(4, 8, 2, 5, "cnn", filters=4, kernel_sizes=(2,))
    assert transfer.model.count_params() == scratch.count_params()
    rows = scratch.get_layer("embedding").embeddings.numpy()
    assert np.abs(rows).max() <= 0.05  # Keras's default uniform initialiser
    with pytest.raises(ValueError, match="Unknown text architecture 'rnn'"):
        scratch_text_classifier(4, 8, 2, 5, "rnn")
    with pytest.raises(ValueError, match="kernel_sizes"):
        scratch_text_classifier(4, 8, 2, 5, "cnn", kernel_sizes=(9,))


def test_string_model_round_trips_through_keras_file(tmp_path):
    keras.utils.set_random_seed(0)
    keyed = sentiment_vectors()
    texts, labels = sentiment_texts(40, 1)
    vectorizer = build_vectorizer(texts, extra_vocabulary=keyed.index_to_key)
    matrix = embedding_matrix(vectorizer.get_vocabulary(), keyed)
    sequence_length = vectorizer.get_config()["output_sequence_length"]
    ids = vectorize(vectorizer, texts)
    transfer = pretrained_text_classifier(matrix, 2, sequence_length, "bilstm", units=4,
                                          trainable_mode="missing_only",
                                          trainable_rows=int(ids.max()) + 1)
    train = token_dataset(ids, labels, 8)
    train_head(transfer, train, epochs=2, verbose=0)
    model = string_model(vectorizer, transfer.model)
    raw = tf.constant([["The film was GOOD!"], ["a plot, awful."]])
    expected = model.predict(raw, verbose=0)
    path = save_model(model, tmp_path / "text.keras")
    reloaded = load_model(path)  # safe mode: no Python code in the file
    np.testing.assert_allclose(reloaded.predict(raw, verbose=0), expected, atol=1e-6)
    layer = reloaded.get_layer(transfer.model.name).get_layer(
        transfer.backbone.name).get_layer("embedding")
    assert layer.trainable_mode == "missing_only"
    np.testing.assert_array_equal(layer.fixed_rows.numpy()[:, 0], matrix.pretrained_rows)
    assert layer.trainable_rows == int(ids.max()) + 1 < len(matrix.vocabulary)
    np.testing.assert_array_equal(layer.table(), matrix.matrix)  # head training only


def test_vectorizer_standardises_like_glove_and_extends_the_vocabulary():
    vectorizer = build_vectorizer(["Hello, WORLD!", "it's fine"], sequence_length=5,
                                  extra_vocabulary=["zebra", "new york", "hello"])
    vocabulary = vectorizer.get_vocabulary()
    assert vocabulary[:2] == ["", "[UNK]"]
    assert {"hello", "world", ",", "!", "it's", "zebra"} <= set(vocabulary)
    assert "new york" not in vocabulary and vocabulary.count("hello") == 1
    ids = vectorize(vectorizer, ["hello zebra qwerty"])
    assert ids.shape == (1, 5) and ids[0, 2] == 1 and ids[0, 3] == 0


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def test_reading_labelled_text_files_and_folders(tmp_path):
    tsv = write(tmp_path / "train.tsv",
                b"pos\tgreat film\n\nneg\tawful\nneg\t\n\tno label\nneutral\tfine, I guess\n")
    examples = read_text_examples(tsv)
    assert examples.texts == ["great film", "awful", "fine, I guess"]
    assert examples.labels == ["pos", "neg", "neutral"]
    assert examples.skipped == [("line 4", "no text"), ("line 5", "no label")]

    sst = write(tmp_path / "stsa.binary.train", b"1 a stirring , funny film\n0 dull .\n")
    assert read_text_examples(sst).labels == ["1", "0"]

    folder = tmp_path / "reviews"
    for label, text in (("pos", "lovely"), ("neg", "boring"), ("neg", "")):
        os.makedirs(folder / label, exist_ok=True)
        (folder / label / f"{len(os.listdir(folder / label))}.txt").write_text(text)
    examples = read_text_examples(folder)
    assert sorted(zip(examples.labels, examples.texts)) == [("neg", "boring"), ("pos", "lovely")]
    assert [reason for _, reason in examples.skipped] == ["empty"]


def test_labels_in_a_csv_file(tmp_path):
    # A spreadsheet export: header in any column order, quoted commas and line breaks,
    # a byte-order mark; rows without a label or a text are skipped and named.
    csv_file = write(tmp_path / "reviews.csv", (
        '\ufefflabel,text,source\npos,"great film, truly",web\nneg,awful,web\n'
        ',no label here,web\nneg,,web\n\nneutral,"fine\nI guess",mail\n').encode())
    examples = read_text_examples(csv_file)
    assert examples.texts == ["great film, truly", "awful", "fine\nI guess"]
    assert examples.labels == ["pos", "neg", "neutral"]
    assert examples.skipped == [("line 4", "no label"), ("line 5", "no text")]
    with pytest.raises(ValueError, match="bad.csv: the first line must name the columns"):
        read_text_examples(write(tmp_path / "bad.csv", b"review,stars\ngood,5\n"))


def test_skipped_lines_are_counted_whichever_way_the_splits_are_made(tmp_path):
    # A file with a line without a tab: the line is skipped, and the count survives the
    # validation/test splits and the --train-size subset (each skipped line once).
    lines = [f"{'pos' if index % 2 else 'neg'}\tsentence number {index}" for index in range(40)]
    lines.insert(7, "a line with no tab at all")
    path = write(tmp_path / "train.tsv", ("\n".join(lines) + "\n").encode())
    examples = read_text_examples(path)
    assert examples.skipped == [("line 8", "no tab, unlike the file's other lines")]
    assert len(examples) == 40
    train, test = split_examples(examples, 0.1, seed=0)
    train, validation = split_examples(train, 0.1, seed=1)
    assert (len(train), len(validation), len(test)) == (32, 4, 4)
    train = subset_examples(train, 20, seed=2)
    parts = (train, validation, test)
    assert [where for part in parts for where, _ in part.skipped] == ["line 8"]


def test_load_text_splits_takes_missing_splits_off_training_and_counts_skips(tmp_path):
    lines = [f"{'pos' if index % 2 else 'neg'}\tsentence number {index}" for index in range(40)]
    lines.insert(3, "pos\t")
    path = write(tmp_path / "train.tsv", ("\n".join(lines) + "\n").encode())
    splits = load_text_splits(path, seed=0, train_size=20)
    assert [len(part) for part in (splits.train, splits.validation, splits.test)] == [20, 4, 4]
    assert splits.skipped == [{"source": splits.train.source, "where": "line 4",
                               "reason": "no text"}]
    assert splits.class_names == ["neg", "pos"] and splits.paths["test"] is None
    for name, examples in (("train", splits.train), ("test", splits.test)):
        assert [splits.class_names[i] for i in splits.labels[name]] == examples.labels
    # The test set does not depend on --train-size.
    assert load_text_splits(path, seed=0).test.texts == splits.test.texts


def test_bad_text_data_gives_clear_errors(tmp_path):
    latin = write(tmp_path / "latin.tsv", "pos\tcafé\n".encode("latin-1"))
    with pytest.raises(TextDataError, match="latin.tsv line 1: bytes that are not valid utf-8"):
        read_text_examples(latin)
    assert read_text_examples(latin, encoding="latin-1").texts == ["café"]

    train = read_text_examples(write(tmp_path / "train.tsv", b"a\tx\nb\ty\n"))
    test = read_text_examples(write(tmp_path / "test.tsv", b"a\tx\nc\tz\n"))
    with pytest.raises(TextDataError, match=r"test.tsv: labels \['c'\] never appear"):
        encode_labels(train, test)
    single = read_text_examples(write(tmp_path / "one.tsv", b"a\tx\na\ty\n"))
    with pytest.raises(TextDataError, match="at least two classes"):
        encode_labels(single)
    with pytest.raises(TextDataError, match="holds no labelled text"):
        read_text_examples(write(tmp_path / "empty.tsv", b"\n\n"))
    with pytest.raises(FileNotFoundError):
        read_text_examples(tmp_path / "missing.tsv")
    # A very long document is cut to the sequence length, not an error.
    vectorizer = build_vectorizer(["word " * 5000, "short"], sequence_length=16)
    assert vectorize(vectorizer, ["word " * 5000]).shape == (1, 16)


def test_normalized_rows_have_unit_length_and_random_rows_follow():
    keyed = sentiment_vectors()
    vocabulary = ["", "[UNK]", "good", "bad", "film", "zzzz"]
    result = embedding_matrix(vocabulary, keyed, normalize=True, seed=0)
    norms = np.linalg.norm(result.matrix, axis=1)
    np.testing.assert_allclose(norms[result.pretrained_rows], 1.0, rtol=1e-5)
    np.testing.assert_allclose(result.matrix[2], keyed["good"] / np.linalg.norm(keyed["good"]),
                               rtol=1e-5)
    assert 0.3 < norms[5] < 3.0  # a random row, at the normalised scale
    assert norms[0] == 0.0


def test_token_batches_follow_the_same_seeded_orders_as_on_other_backends():
    """On TensorFlow the token batches are a tf.data pipeline, elsewhere a ShuffledArrays:
    epoch e's batches are the same permutation of (seed, e) in both, so TensorFlow and
    JAX runs of a text recipe train on the same batches."""
    from templates.data.batches import ShuffledArrays, set_epoch

    ids = np.arange(50 * 4).reshape(50, 4).astype("int32")
    labels = (np.arange(50) % 2).astype("int32")
    pipeline = token_dataset(ids, labels, 8, shuffle=True, seed=4)
    reference = ShuffledArrays(ids, labels, 8, 4)
    orders = []
    for epoch in range(2):
        set_epoch(reference, epoch)
        expected = [reference[index][0] for index in range(len(reference))]
        found = [np.asarray(x) for x, _ in pipeline]
        assert len(found) == len(expected) == 7
        for a, b in zip(found, expected):
            np.testing.assert_array_equal(a, b)
        orders.append(np.concatenate(found)[:, 0])
    assert not np.array_equal(orders[0], orders[1])  # a new order each epoch
