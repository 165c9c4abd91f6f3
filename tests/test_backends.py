"""The recipes on JAX with TensorFlow refused at import (issue 26), and what makes that
possible: the NumPy vocabulary, token-id models with their vocabulary, JAX's data
parallelism. PyTorch runs the same paths where ``torch`` can be imported."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from templates.data.texts import build_vectorizer, read_text_examples, string_model, vectorize
from templates.data.vocabulary import Vocabulary
from templates.export.predictor import Predictor

TESTS = pathlib.Path(__file__).resolve().parent
WITHOUT_TENSORFLOW = [sys.executable, str(TESTS / "without_tensorflow.py")]
ODD_TEXTS = ["Ünïcode ÀB, test\u00a0nbsp!", "tab\there\x0bvertical", "MiXeD CaSe... (punct)!!",
             "\u2028line separator", "don't stop-motion", ""]


def backend_env(env: dict[str, str], backend: str = "jax", **extra: str) -> dict[str, str]:
    """``env`` for a subprocess on ``backend``, with a device count or flags in ``extra``."""
    return {**env, "KERAS_BACKEND": backend, **extra}


def without_tensorflow(arguments, env, timeout=900):
    """Run ``python -m MODULE ARGS`` (or ``-c CODE``) with TensorFlow refused at import."""
    return subprocess.run(WITHOUT_TENSORFLOW + list(arguments), env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=env["PYTHONPATH"].split(os.pathsep)[0])


def test_the_blocker_refuses_tensorflow(subprocess_env):
    """The helper the JAX runs go through: TensorFlow cannot be imported behind it."""
    result = without_tensorflow(["-c", "import tensorflow"], backend_env(subprocess_env))
    assert result.returncode != 0
    assert "No module named 'tensorflow'" in result.stderr
    result = without_tensorflow(["-c", "import importlib.util, tensorflow_hub as h"],
                                backend_env(subprocess_env))
    assert "No module named 'tensorflow_hub'" in result.stderr
    found = without_tensorflow(["-c", "import importlib.util; print(importlib.util.find_spec("
                                "'tensorflow'), importlib.util.find_spec('numpy') is None)"],
                               backend_env(subprocess_env))
    assert found.stdout.split() == ["None", "False"], found.stderr[-2000:]


@pytest.mark.parametrize("module", ["recipes.cats_vs_dogs", "recipes.glove_text_classification",
                                    "recipes.develop_model_digits", "recipes.predict"])
def test_recipes_start_without_tensorflow(module, subprocess_env):
    result = without_tensorflow(["-m", module, "--help"], backend_env(subprocess_env), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage:" in result.stdout


def test_numpy_vocabulary_gives_textvectorization_ids(sst2_dir):
    """Same tokens in the same order, and the same ids, as TensorFlow's adapted layer."""
    import tensorflow as tf

    from templates.data.texts import standardize_text

    texts = read_text_examples(sst2_dir / "stsa.binary.train").texts + ODD_TEXTS
    adapted = keras.layers.TextVectorization(standardize=standardize_text)
    adapted.adapt(tf.constant(texts))
    vocabulary = Vocabulary.from_texts(texts, extra_vocabulary=["zyzzyva", "the", "two words"])
    assert vocabulary.tokens[:len(adapted.get_vocabulary())] == adapted.get_vocabulary()
    assert vocabulary.tokens[-1] == "zyzzyva"  # extra words appended once, none with spaces
    layer = build_vectorizer(texts, extra_vocabulary=["zyzzyva"])
    assert isinstance(layer, keras.layers.TextVectorization)
    assert np.array_equal(vectorize(layer, texts), Vocabulary.from_texts(
        texts, extra_vocabulary=["zyzzyva"])(texts))


def test_vocabulary_file_round_trip_and_bad_files(tmp_path):
    vocabulary = Vocabulary.from_texts(["a b c", "b c", "c"], sequence_length=4)
    assert vocabulary.tokens == ["", "[UNK]", "c", "b", "a"]
    assert vocabulary(["c b zzz a a a"]).tolist() == [[2, 3, 1, 4]]
    assert vocabulary(["", "b"]).tolist() == [[0, 0, 0, 0], [3, 0, 0, 0]]
    loaded = Vocabulary.load(vocabulary.save(tmp_path / "vocabulary.txt"), sequence_length=4)
    assert loaded.tokens == vocabulary.tokens
    (tmp_path / "bad.txt").write_text("the\nof\n")
    with pytest.raises(ValueError, match="bad.txt: not a vocabulary"):
        Vocabulary.load(tmp_path / "bad.txt", 4)


def test_token_id_model_with_its_vocabulary_predicts_as_the_string_model(tmp_path):
    """Off TensorFlow the saved text model takes token ids and vocabulary.txt travels
    beside it; the predictor tokenises in NumPy and gives the string model's answers."""
    from templates.export.outputs import write_model_outputs

    texts = ["a fine film", "a dull film", "fine acting, fine story", "dull dull dull",
             "not fine", "Fine!"]
    layer = build_vectorizer(texts, sequence_length=6)
    keras.utils.set_random_seed(0)
    ids = keras.Input(shape=(6,), dtype="int32")
    hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(ids))
    model = keras.Model(ids, keras.layers.Dense(2, activation="softmax")(hidden))
    history = {"epoch": [1, 2], "loss": [1.0, 0.5], "phase": ["head", "fine_tune"]}
    for folder, saved in (("strings", string_model(layer, model)), ("ids", model)):
        write_model_outputs(tmp_path / folder, saved, ["bad", "good"], history, title="t",
                            vocabulary=layer.get_vocabulary())
    (tmp_path / "strings" / "vocabulary.txt").unlink()  # the string model needs none
    from_strings, from_ids = Predictor(tmp_path / "strings"), Predictor(tmp_path / "ids")
    assert from_ids.kind == from_strings.kind == "text" and from_ids.vocabulary is not None
    unseen = ["a fine story", "DULL, not fine", "words never seen", "fine " * 10]
    np.testing.assert_allclose(from_ids.predict_probabilities(unseen),
                               from_strings.predict_probabilities(unseen), atol=1e-6)


DATA_PARALLEL = r"""
import json, sys
import keras, numpy as np
from templates.training.hardware import choose_strategy

def train():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=64)
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    return [weight.tolist() for weight in model.get_weights()]

one = train()
choice = choose_strategy(sys.argv[1])
two = train()
print(json.dumps({"replicas": choice.replicas, "name": choice.name, "one": one, "two": two}))
"""


def test_jax_data_parallel_on_two_devices_matches_one(subprocess_env):
    """--strategy mirrored on JAX: keras.distribution.DataParallel over 2 virtual CPU
    devices trains to the weights one device reaches with the same global batch."""
    env = backend_env(subprocess_env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = without_tensorflow(["-c", DATA_PARALLEL, "mirrored"], env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert (found["name"], found["replicas"]) == ("mirrored", 2)
    for one, two in zip(found["one"], found["two"]):
        np.testing.assert_allclose(np.array(two), np.array(one), rtol=1e-4, atol=1e-5)
    assert not np.allclose(found["one"][0], 0)  # it trained


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed here (CI runs JAX; see README, Backends)")
def test_torch_backend_runs_the_digits_recipe(subprocess_env, tmp_path):
    out = tmp_path / "digits_torch"
    result = without_tensorflow(
        ["-m", "recipes.develop_model_digits", "--seeds", "1", "--source-epochs", "2",
         "--head-epochs", "1", "--fine-tune-epochs", "1", "--skip-sweep", "--output-dir",
         str(out)], backend_env(subprocess_env, "torch"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["hardware"]["backend"] == "torch"
