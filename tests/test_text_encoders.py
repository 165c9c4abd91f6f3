"""`templates.models.text_encoders` and its recipe: keras-hub text presets and TF-Hub text modules.

keras-hub presets cannot be downloaded here: the tests write a tiny two-layer BERT with
random weights, its tokenizer's vocabulary taken from the training sentences, to a
temporary folder (``Backbone.save_to_preset`` and ``preprocessor.save_to_preset``) and
load it as a user loads a downloaded preset. The TF-Hub module is the SavedModel
`tests/test_hub.py` builds.
"""

import collections
import json
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from templates.models.backbones import WeightsUnavailableError
from templates.models.text_encoders import (
    fitted_sequence_length,
    pretrained_text_encoder,
)
from templates.models.transfer_model import unfreeze
from templates.training.plan import TransferPlan
from templates.training.run import run_transfer
from templates.training.saving import load_model, save_model

POSITIVE = ["good", "great", "fun", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "dull", "boring", "weak"]
FILLER = ["the", "film", "plot", "was", "a", "very", "acting", "story", "is", "and"]


def tiny_bert_preset(folder, sentences, words=3000, sequence_length=64):
    """A two-layer keras-hub BERT (random weights) whose WordPiece vocabulary is the
    most frequent words of ``sentences``, saved as a preset folder."""
    import keras_hub

    counts = collections.Counter(word for sentence in sentences
                                 for word in re.findall(r"[a-z0-9]+|[^a-z0-9\s]", sentence.lower()))
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
        word for word, _ in counts.most_common(words)]
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary), num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=sequence_length)
    backbone.save_to_preset(str(folder))
    preprocessor.save_to_preset(str(folder))
    return folder


def keyword_sentences(count, seed):
    """Sentences whose label is whether their one sentiment word is positive."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 2).astype("int32")
    sentences = []
    for label in labels:
        words = list(rng.choice(FILLER, size=rng.integers(3, 8)))
        words.insert(int(rng.integers(0, len(words) + 1)),
                     str(rng.choice(POSITIVE if label else NEGATIVE)))
        sentences.append(" ".join(words))
    return sentences, labels


@pytest.fixture(scope="module")
def keyword_preset(tmp_path_factory):
    sentences, _ = keyword_sentences(200, seed=0)
    return tiny_bert_preset(tmp_path_factory.mktemp("bert") / "preset", sentences)


def trainable_count(model):
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def test_a_bert_preset_is_fine_tuned_after_its_head_and_saved_for_raw_strings(
        keyword_preset, tmp_path):
    texts, labels = keyword_sentences(160, seed=1)
    held_texts, held_labels = keyword_sentences(64, seed=2)
    transfer = pretrained_text_encoder(str(keyword_preset), 2, fit_texts=texts,
                                       class_names=["negative", "positive"])
    # Sentences of at most 10 words: 16 tokens fit them all (with [CLS] and [SEP]).
    assert transfer.sequence_length == 16
    assert transfer.model.trainable_weights == transfer.head.trainable_weights
    encoder_before = [keras.ops.convert_to_numpy(w).copy() for w in transfer.encoder.weights]
    train = transfer.batches(texts, labels, batch_size=16, shuffle=True, seed=1)
    held = transfer.batches(held_texts, held_labels, batch_size=32)
    run = run_transfer(transfer, train, held, TransferPlan(
        head_epochs=3, fine_tune_epochs=6, learning_rate=1e-2, fine_tune_learning_rate=1e-3,
        patience=0, restore_best=False, seed=1))
    # The keyword is learnable from the random encoder only once it is fine-tuned.
    print("HEAD", run.phases["head"].scores)
    assert run.phases["fine_tune"].scores["val_accuracy"] >= 0.9, run.history
    assert any(not np.allclose(keras.ops.convert_to_numpy(w), before)
               for w, before in zip(transfer.encoder.weights, encoder_before))
    # Raw strings in; the .keras round trip loads in safe mode with the tokenizer inside.
    classifier = transfer.string_classifier()
    save_model(classifier, tmp_path / "model.keras")
    reloaded = load_model(tmp_path / "model.keras")
    strings = np.array(held_texts[:6], dtype=object)
    np.testing.assert_allclose(reloaded.predict_on_batch(strings),
                               classifier.predict_on_batch(strings), atol=1e-5)
    # The predictor reads the tokeniser inside the saved pipeline and says which texts
    # the model read only to its 16 tokens.
    from templates.export.predictor import Predictor

    (tmp_path / "labels.txt").write_text("negative\npositive\n")
    predictions = Predictor(tmp_path).predict([held_texts[0], "good " * 20])
    assert [prediction.cut_at for prediction in predictions] == [None, 16]


def test_unfreezing_leaves_the_pooler_frozen_unless_it_pools(keyword_preset):
    """Mean and [CLS] pooling never read BERT's pooler, so fine-tuning must not train it
    (its weights would only decay); the pooler's own pooling trains it."""
    texts, _ = keyword_sentences(20, seed=1)
    for pooling, pooler_trains in (("mean", False), ("cls", False), ("pooler", True)):
        transfer = pretrained_text_encoder(str(keyword_preset), 2, fit_texts=texts,
                                           pooling=pooling)
        transfer.unfreeze()
        trainable = [weight.path for weight in transfer.model.trainable_weights]
        assert any("pooled_dense" in path for path in trainable) == pooler_trains, pooling
        assert any("transformer_layer_0" in path for path in trainable), pooling


def test_lora_trains_only_its_adapters(keyword_preset):
    texts, labels = keyword_sentences(64, seed=3)
    full = pretrained_text_encoder(str(keyword_preset), 2, sequence_length=16)
    lora = pretrained_text_encoder(str(keyword_preset), 2, sequence_length=16, lora_rank=4)
    # Frozen for the head phase: only the head trains, adapters included.
    assert trainable_count(lora.model) == trainable_count(lora.head)
    unfreeze(full, None)
    unfreeze(lora, None)
    assert trainable_count(lora.model) < trainable_count(full.model) / 5
    assert {w.path.rsplit("/", 1)[-1] for w in lora.encoder.trainable_weights} == {
        "lora_kernel_a", "lora_kernel_b"}
    lora.backbone.trainable = False
    released = {w.path: keras.ops.convert_to_numpy(w).copy() for w in lora.encoder.weights
                if "lora" not in w.path}
    adapters = {w.path: keras.ops.convert_to_numpy(w).copy() for w in lora.encoder.weights
                if "lora_kernel_b" in w.path}
    data = lora.batches(texts, labels, batch_size=16)
    run_transfer(lora, data, data, TransferPlan(head_epochs=1, fine_tune_epochs=2,
                                                fine_tune_learning_rate=1e-2, patience=0,
                                                restore_best=False,
                                                keep_fine_tuning="always"))
    for weight in lora.encoder.weights:
        value = keras.ops.convert_to_numpy(weight)
        if weight.path in released:  # every released weight as it was
            np.testing.assert_array_equal(value, released[weight.path])
        elif weight.path in adapters:  # the adapters (zero at the start) trained
            assert not np.allclose(value, adapters[weight.path])


def test_the_sequence_length_fits_the_texts(keyword_preset):
    from templates.models.text_encoders import load_text_preset

    _, preprocessor = load_text_preset(str(keyword_preset))
    short = ["good film"] * 99 + ["the film was very good " * 4]  # one long outlier
    assert fitted_sequence_length(preprocessor, short) == 8
    assert fitted_sequence_length(preprocessor, short, percentile=100) == 24
    assert fitted_sequence_length(preprocessor, ["good " * 200]) == 64  # the preset's


def test_texts_longer_than_the_sequence_length_are_counted(keyword_preset, tmp_path):
    """Nothing is cut silently: the texts a model reads only the start of, per split."""
    import tensorflow as tf

    from templates.data.texts import describe_cut_texts, load_text_splits
    from templates.models.text_encoders import load_text_preset, token_lengths

    _, preprocessor = load_text_preset(str(keyword_preset))
    texts = ["good", "the film was good", "the film was very good " * 3, "bad " * 70]
    # Each text's tokens before any cut: where the preset's 64 fit it, what its packer
    # marks as real; the last one is longer than that (70 words, [CLS] and [SEP]).
    packed = preprocessor(tf.constant(texts))["padding_mask"].numpy().sum(axis=1)
    lengths = token_lengths(preprocessor, texts)
    assert lengths[:3].tolist() == packed[:3].tolist() == [3, 6, 17]
    assert lengths[3] == 72 and packed[3] == 64

    write_lines(tmp_path / "train.tsv", texts * 2, ["pos", "neg"] * 4)
    write_lines(tmp_path / "test.tsv", texts[2:], ["pos", "neg"])
    splits = load_text_splits(tmp_path / "train.tsv", test=tmp_path / "test.tsv",
                              validation_fraction=0.25, seed=0)
    transfer = pretrained_text_encoder(str(keyword_preset), 2, sequence_length=16)
    cut = transfer.texts_cut(splits)
    long_ones = {name: sum(len(text.split()) + 2 > 16 for text in getattr(splits, name).texts)
                 for name in ("train", "validation", "test")}
    assert cut == {"sequence_length": 16, **long_ones} and cut["test"] == 2
    assert describe_cut_texts(cut, splits).startswith("Texts longer than 16 tokens")
    assert describe_cut_texts({**cut, "train": 0, "validation": 0, "test": 0},
                              splits) == "No text is longer than 16 tokens."


def test_bad_sources_fail_with_one_sentence(keyword_preset, tmp_path, monkeypatch):
    import keras_hub

    with pytest.raises(ValueError, match="does not exist"):
        pretrained_text_encoder(str(tmp_path / "missing"), 2)
    with pytest.raises(ValueError, match="lora_rank"):
        pretrained_text_encoder(str(keyword_preset), 2, lora_rank=0)

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(WeightsUnavailableError, match="local preset folder"):
        pretrained_text_encoder("bert_tiny_en_uncased", 2)


def test_a_tfhub_text_module_is_frozen_then_fine_tuned(tmp_path):
    import tensorflow as tf
    from test_hub import TextEmbedding, sentiment_data

    handle = str(tmp_path / "text_module")
    tf.saved_model.save(TextEmbedding(), handle)
    transfer = pretrained_text_encoder(f"tfhub:{handle}", 2)
    assert transfer.preprocessor is None and transfer.model.input_shape == (None,)
    data, texts = sentiment_data()
    table = transfer.encoder.weights[0]
    before = keras.ops.convert_to_numpy(table).copy()
    run = run_transfer(transfer, data, data, TransferPlan(
        head_epochs=1, fine_tune_epochs=8, learning_rate=1e-3, fine_tune_learning_rate=0.1,
        patience=0, restore_best=False))
    # The head alone barely moved (one epoch at 1e-3); fine-tuning the vectors did it.
    assert run.phases["fine_tune"].scores["val_accuracy"] == 1.0
    assert not np.allclose(keras.ops.convert_to_numpy(table), before)
    save_model(transfer.string_classifier(), tmp_path / "model.keras")
    with pytest.raises(ValueError, match="safe_mode=False"):
        load_model(tmp_path / "model.keras")
    scratch = transfer.scratch_model(seed=0)
    assert len(scratch.trainable_weights) == len(transfer.model.weights)
    # Multi-label: sigmoid outputs, for the scratch counterpart too.
    from templates.data.multi_label import is_multi_label

    tagged = pretrained_text_encoder(f"tfhub:{handle}", 3, multi_label=True)
    assert is_multi_label(tagged.model) and is_multi_label(tagged.scratch_model(seed=0))


def write_lines(path, texts, labels):
    path.write_text("".join(f"{label}\t{text}\n" for text, label in zip(texts, labels)))
    return path


@pytest.mark.acceptance  # the recipe end to end on SST-2 with a local BERT preset
def test_the_encoder_recipe_runs_on_a_local_bert_preset(sst2_dir, subprocess_env, tmp_path):
    train_file = sst2_dir / "stsa.binary.train"
    sentences = [line.split(" ", 1)[1] for line in train_file.read_text().splitlines()]
    preset = tiny_bert_preset(tmp_path / "preset", sentences)
    out = tmp_path / "run"
    cwd = subprocess_env["PYTHONPATH"].split(":")[0]
    arguments = [sys.executable, "-m", "recipes.text_encoder_classification",
                 "--preset", str(preset), "--train", str(train_file),
                 "--validation", str(sst2_dir / "stsa.binary.dev"),
                 "--test", str(sst2_dir / "stsa.binary.test"), "--train-size", "300",
                 "--head-epochs", "2", "--fine-tune-epochs", "1", "--output-dir", str(out)]

    def run(extra, folder=out):
        result = subprocess.run(arguments[:-1] + [str(folder)] + extra, env=subprocess_env,
                                capture_output=True, text=True, timeout=600, cwd=cwd)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return json.loads((folder / "metrics.json").read_text())

    metrics = run(["--compare-scratch"])
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["encoder"] == f"keras_hub:{preset}"
    assert metrics["examples"] == {"train": 300, "validation": 872, "test": 1821}
    assert set(metrics["texts_cut"]) == {"sequence_length", "train", "validation", "test"}
    assert metrics["texts_cut"]["sequence_length"] == metrics["sequence_length"]
    for name in ("model.keras", "labels.txt", "evaluation/evaluation.json", "history.json",
                 "transfer_report.json", "saved_model/saved_model.pb"):
        assert (out / name).is_file(), name
    assert set(metrics["transfer_report"]) >= {"start", "slope", "asymptote"}
    predicted = subprocess.run([sys.executable, "-m", "recipes.predict", str(out), "--text",
                                "a gorgeous , witty film"], env=subprocess_env,
                               capture_output=True, text=True, timeout=300, cwd=cwd)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].split()[0] in ("0", "1"), predicted.stdout
    # --resume over the finished run restores every phase and ends with the same score.
    assert run(["--compare-scratch", "--resume"])["test_accuracy"] == metrics["test_accuracy"]
    # LoRA: the fine-tuning phase trains a fraction of the weights full fine-tuning does.
    lora = run(["--lora-rank", "4"], folder=tmp_path / "lora")
    assert lora["lora_rank"] == 4
    assert lora["trainable_weights"]["fine_tune"] < metrics["trainable_weights"]["fine_tune"] / 5
    assert lora["learning_rates"]["fine_tune"] == 5e-4  # the LoRA default


@pytest.mark.acceptance  # the recipe end to end on a TF-Hub text module
def test_the_encoder_recipe_runs_on_a_tfhub_text_module(subprocess_env, tmp_path):
    import tensorflow as tf
    from test_hub import TextEmbedding

    handle = tmp_path / "text_module"
    tf.saved_model.save(TextEmbedding(), str(handle))
    texts = ["good fun", "great", "fun great good", "bad", "awful dull", "dull bad",
             "good great", "awful"] * 6
    labels = ["pos", "pos", "pos", "neg", "neg", "neg", "pos", "neg"] * 6
    write_lines(tmp_path / "train.tsv", texts, labels)
    write_lines(tmp_path / "test.tsv", texts[:16], labels[:16])
    out = tmp_path / "run"
    cwd = subprocess_env["PYTHONPATH"].split(":")[0]
    result = subprocess.run(
        [sys.executable, "-m", "recipes.text_encoder_classification", "--preset",
         f"tfhub:{handle}", "--train", str(tmp_path / "train.tsv"), "--test",
         str(tmp_path / "test.tsv"), "--validation-fraction", "0.25", "--head-epochs", "2",
         "--fine-tune-epochs", "8", "--fine-tune-learning-rate", "0.1", "--batch-size", "8",
         "--compare-scratch", "--output-dir", str(out)],
        env=subprocess_env, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == 1.0 and metrics["sequence_length"] is None
    assert (out / "transfer_report.json").is_file()
    predicted = subprocess.run([sys.executable, "-m", "recipes.predict", "--unsafe", str(out),
                                "--text", "great fun"], env=subprocess_env,
                               capture_output=True, text=True, timeout=300, cwd=cwd)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert predicted.stdout.split()[0] == "pos", predicted.stdout


def test_length_bucketed_batches_pad_each_batch_to_its_longest_text():
    from templates.data.batches import LengthBucketedBatches, set_epoch

    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 40, size=100)
    mask = np.arange(48)[None, :] < lengths[:, None]
    inputs = {"token_ids": np.where(mask, np.arange(100)[:, None] + 1, 0).astype("int32"),
              "padding_mask": mask}
    labels = np.arange(100) % 2
    batches = LengthBucketedBatches(inputs, labels, batch_size=10, seed=3, bucket_batches=5)
    seen = []
    for index in range(len(batches)):
        batch, batch_labels = batches[index]
        rows = batch["token_ids"][:, 0] - 1  # each row carries its example's number
        width = batch["token_ids"].shape[1]
        assert width % 8 == 0 and width >= lengths[rows].max() > width - 8
        np.testing.assert_array_equal(batch_labels, labels[rows])
        seen += list(rows)
    assert sorted(seen) == list(range(100))  # every example once
    # Bucketed: a batch's lengths spread less than a random batch's would.
    spread = np.mean([np.ptp(lengths[batches[i][0]["token_ids"][:, 0] - 1])
                      for i in range(len(batches))])
    assert spread < 0.5 * np.ptp(lengths)
    # The order follows (seed, epoch); the next epoch differs; set_epoch goes back.
    first = [batches[i][0]["token_ids"][:, 0].tolist() for i in range(len(batches))]
    set_epoch(batches, 1)
    assert [batches[i][0]["token_ids"][:, 0].tolist() for i in range(len(batches))] != first
    set_epoch(batches, 0)
    assert [batches[i][0]["token_ids"][:, 0].tolist() for i in range(len(batches))] == first
    # Unshuffled batches keep the examples' order (predictions line up with texts).
    plain = LengthBucketedBatches(inputs, labels, batch_size=10, shuffle=False)
    order = np.concatenate([plain[i][0]["token_ids"][:, 0] - 1 for i in range(len(plain))])
    np.testing.assert_array_equal(order, np.arange(100))
    # As tf.data: a batch wider than the first ones is accepted, and epochs follow.
    dataset = LengthBucketedBatches(inputs, labels, batch_size=10, seed=3,
                                   bucket_batches=5).as_tf_dataset()
    widths = [int(batch["token_ids"].shape[1]) for batch, _ in dataset]
    assert len(set(widths)) > 1
    assert set_epoch(dataset, 0) == 1
    again = [batch["token_ids"][:, 0].numpy().tolist() for batch, _ in dataset]
    assert again == first
