"""HubLayer: TF-Hub modules inside Keras 3 models, frozen and fine-tuned.

The modules are SavedModels built here (a text embedding with a vocabulary table and
an image feature extractor) and loaded through `tensorflow_hub`, as users load
tfhub.dev handles.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from templates.models.tfhub import HubLayer, load_hub_module
from templates.training.saving import load_model, save_model

WORDS = ["good", "great", "fun", "bad", "awful", "dull"]


class TextEmbedding(tf.train.Checkpoint):
    """Strings -> mean of word vectors (a reusable SavedModel, like tfhub.dev text modules)."""

    def __init__(self):
        super().__init__()
        keys = tf.constant(WORDS)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(WORDS), dtype=tf.int64)),
            default_value=len(WORDS))
        generator = np.random.default_rng(0)
        self.embeddings = tf.Variable(
            generator.normal(size=(len(WORDS) + 1, 4)).astype("float32"), name="embeddings")
        # The reusable-SavedModel convention of tfhub.dev modules: list the variables.
        self.variables = [self.embeddings]
        self.trainable_variables = [self.embeddings]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts):
        tokens = tf.strings.split(tf.strings.lower(texts))
        ids = tf.ragged.map_flat_values(self.table.lookup, tokens)
        vectors = tf.gather(self.embeddings, ids)
        return tf.reduce_mean(vectors, axis=1)


class ImageFeatures(tf.Module):
    """(batch, 8, 8, 3) images -> 6 features; takes `training` like reusable SavedModels."""

    def __init__(self):
        super().__init__()
        generator = np.random.default_rng(1)
        self.kernel = tf.Variable(generator.normal(size=(3, 3, 3, 6)).astype("float32") * 0.3,
                                  name="kernel")
        # Not listed as `self.variables`: HubLayer finds it through the call function.
        self.calls_in_training = tf.Variable(0, trainable=False, name="calls_in_training")

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32),
                                  tf.TensorSpec([], tf.bool)])
    def __call__(self, images, training=False):
        if training:
            self.calls_in_training.assign_add(1)
        features = tf.nn.relu(tf.nn.conv2d(images, self.kernel, 1, "SAME"))
        return tf.reduce_mean(features, axis=[1, 2])


@pytest.fixture(scope="module")
def text_module(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hub") / "text_embedding")
    tf.saved_model.save(TextEmbedding(), path)
    return path


@pytest.fixture(scope="module")
def image_module(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hub") / "image_features")
    module = ImageFeatures()
    tf.saved_model.save(module, path)
    return path


def sentiment_data():
    texts = np.array(["good fun", "great", "fun great good", "bad", "awful dull",
                      "dull bad", "good great", "awful"] * 4)
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0] * 4)
    # String inputs go through tf.data (Keras's NumPy adapter has no string dtype).
    return tf.data.Dataset.from_tensor_slices((texts, labels)).batch(8), tf.constant(texts)


def text_classifier(handle, trainable):
    texts = keras.Input(shape=(), dtype="string", name="texts")
    features = HubLayer(handle, trainable=trainable, name="hub")(texts)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(features)
    model = keras.Model(texts, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_module_is_loaded_through_tensorflow_hub(text_module):
    module = load_hub_module(text_module)
    assert len(module.variables) == 1  # saved by the module, as TF-Hub modules do
    assert module(tf.constant(["good fun"])).shape == (1, 4)


def test_frozen_hub_layer_keeps_module_weights(text_module):
    keras.utils.set_random_seed(0)
    model = text_classifier(text_module, trainable=False)
    hub_layer = model.get_layer("hub")
    assert hub_layer.trainable_weights == []
    before = hub_layer.weights[0].numpy().copy()
    data, texts = sentiment_data()
    model.fit(data, epochs=3, verbose=0)
    np.testing.assert_array_equal(hub_layer.weights[0].numpy(), before)


def test_fine_tuning_updates_what_the_module_computes(text_module):
    keras.utils.set_random_seed(0)
    model = text_classifier(text_module, trainable=True)
    hub_layer = model.get_layer("hub")
    assert len(hub_layer.trainable_weights) == 1
    data, texts = sentiment_data()
    probe = tf.constant(["good fun", "awful dull"])
    features_before = hub_layer(probe).numpy()
    loss_before = model.evaluate(data, verbose=0)[0]
    model.fit(data, epochs=15, verbose=0)
    # The module's own variable moved (not a detached copy), so its outputs moved too.
    assert not np.allclose(hub_layer(probe).numpy(), features_before)
    assert hub_layer.weights[0].value is hub_layer._module.variables[0]
    assert model.evaluate(data, verbose=0)[0] < loss_before * 0.5


def test_keras_round_trip_keeps_fine_tuned_weights(text_module, tmp_path):
    keras.utils.set_random_seed(0)
    model = text_classifier(text_module, trainable=True)
    data, texts = sentiment_data()
    model.fit(data, epochs=10, verbose=0)
    expected = model.predict(texts, verbose=0)
    path = save_model(model, tmp_path / "hub_model.keras")

    with pytest.raises(ValueError, match="safe_mode=False"):
        load_model(path)  # a SavedModel runs graph code: not in safe mode
    reloaded = load_model(path, safe_mode=False)
    np.testing.assert_allclose(reloaded.predict(texts, verbose=0), expected, atol=1e-6)
    # The reloaded module starts from the handle's weights; the saved fine-tuned ones win.
    fresh = load_hub_module(text_module).variables[0].numpy()
    assert not np.allclose(reloaded.get_layer("hub").weights[0].numpy(), fresh)


def test_image_module_in_a_functional_model_trains_and_passes_training_flag(image_module):
    keras.utils.set_random_seed(0)
    images = keras.Input(shape=(8, 8, 3))
    hub_layer = HubLayer(image_module, trainable=True)
    assert hub_layer._accepts_training
    outputs = keras.layers.Dense(2, activation="softmax")(hub_layer(images))
    model = keras.Model(images, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    generator = np.random.default_rng(0)
    x = generator.normal(size=(64, 8, 8, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > 0).astype("int32")
    kernel_before = hub_layer.trainable_weights[0].numpy().copy()
    history = model.fit(x, y, epochs=10, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(hub_layer.trainable_weights[0].numpy(), kernel_before)
    # training=True reached the module during fit (2 batches x 10 epochs), and not
    # during predict; the counter is tracked as a non-trainable weight.
    counter = hub_layer.non_trainable_weights[0]
    assert int(counter.numpy()) == 20
    model.predict(x, verbose=0)
    assert int(counter.numpy()) == 20


def test_missing_module_and_bad_signature_are_clear_errors(text_module, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such SavedModel"):
        HubLayer(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no signature 'classify'"):
        HubLayer(text_module, signature="classify")
    empty = tmp_path / "empty"
    os.makedirs(empty)
    with pytest.raises(ValueError, match="not a loadable SavedModel"):
        HubLayer(str(empty))


class AnySizeImageFeatures(tf.Module):
    """A feature-vector module for images of any size in 0..1 (the TF-Hub convention):
    colour means through a trainable mixing matrix; counts calls made in training."""

    def __init__(self):
        super().__init__()
        self.mixing = tf.Variable(np.eye(3, 6, dtype="float32") * 4.0, name="mixing")
        self.calls_in_training = tf.Variable(0, trainable=False, name="calls_in_training")

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                  tf.TensorSpec([], tf.bool)])
    def __call__(self, images, training=False):
        if training:
            self.calls_in_training.assign_add(1)
        return tf.matmul(tf.reduce_mean(images, axis=[1, 2]) - 0.5, self.mixing)


@pytest.fixture(scope="module")
def any_size_image_module(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hub") / "any_size_image_features")
    tf.saved_model.save(AnySizeImageFeatures(), path)
    return path


def test_a_tfhub_backbone_is_fine_tuned_in_inference_mode(any_size_image_module, tmp_path):
    from templates.models.pretrained import pretrained_model
    from templates.training.plan import TransferPlan
    from templates.training.run import run_transfer

    transfer = pretrained_model(f"tfhub:{any_size_image_module}", num_classes=2,
                                image_size=16, class_names=["blue", "red"])
    assert transfer.model.input_shape == (None, 16, 16, 3)
    generator = np.random.default_rng(0)
    labels = (np.arange(64) % 2).astype("int32")
    images = generator.uniform(0, 120, (64, 16, 16, 3))
    images[..., 0] += labels[:, None, None] * 120  # red photos
    images[..., 2] += (1 - labels[:, None, None]) * 120  # blue photos
    data = tf.data.Dataset.from_tensor_slices((images.astype("float32"), labels)).batch(16)
    layer = transfer.backbone.get_layer("hub_module")
    weight = {name: next(w for w in layer.weights if name in w.name)
              for name in ("mixing", "calls_in_training")}
    mixing = weight["mixing"].numpy().copy()
    run = run_transfer(transfer, data, data, TransferPlan(
        head_epochs=5, fine_tune_epochs=2, learning_rate=0.05, fine_tune_learning_rate=0.01,
        patience=0, restore_best=False, keep_fine_tuning="always"))
    assert run.scores["val_accuracy"] == 1.0
    # Fine-tuning trained the module's weights, but never called it in training mode.
    assert not np.allclose(weight["mixing"].numpy(), mixing)
    assert int(weight["calls_in_training"].numpy()) == 0
    save_model(transfer.model, tmp_path / "model.keras")
    with pytest.raises(ValueError, match="safe_mode=False"):
        load_model(tmp_path / "model.keras")
    reloaded = load_model(tmp_path / "model.keras", safe_mode=False)
    np.testing.assert_allclose(reloaded.predict(images[:4], verbose=0),
                               transfer.model.predict(images[:4], verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="cut_at"):
        pretrained_model(f"tfhub:{any_size_image_module}", 2, cut_at=3)


@pytest.mark.acceptance  # the image recipe end to end on a TF-Hub module
def test_the_image_recipe_runs_on_a_tfhub_module(any_size_image_module, subprocess_env,
                                                 tmp_path):
    import json
    import subprocess
    import sys

    from test_multi_worker import colour_photos

    colour_photos(tmp_path / "photos", per_class=16)
    out = tmp_path / "run"
    cwd = subprocess_env["PYTHONPATH"].split(":")[0]
    result = subprocess.run(
        [sys.executable, "-m", "recipes.cats_vs_dogs", "--data-dir",
         str(tmp_path / "photos" / "train"), "--test-dir", str(tmp_path / "photos" / "test"),
         "--backbone", f"tfhub:{any_size_image_module}", "--image-size", "32",
         "--head-epochs", "5", "--fine-tune-epochs", "1", "--batch-size", "8",
         "--learning-rate", "0.05", "--no-find-learning-rates", "--output-dir", str(out)],
        env=subprocess_env, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9
    assert "Grad-CAM skipped" in result.stdout  # an opaque module: nothing to explain
    assert (out / "evaluation" / "evaluation.json").is_file()
    photo = next((tmp_path / "photos" / "test" / "red").glob("*.png"))
    predicted = subprocess.run([sys.executable, "-m", "recipes.predict", "--unsafe", str(out),
                                str(photo)], env=subprocess_env, capture_output=True,
                               text=True, timeout=300, cwd=cwd)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert predicted.stdout.split()[0] == "red", predicted.stdout


@pytest.mark.acceptance  # a recipe process ranking three backbones
def test_select_from_ranks_a_tfhub_module_and_a_keras_hub_preset(any_size_image_module,
                                                                 subprocess_env, tmp_path):
    """Issue 24: `--select-from` takes every kind of backbone the recipe takes. A TF-Hub
    module (the mean colour, mixed: it separates reddish from bluish photos), a tiny
    keras-hub ResNet preset (random weights) and a random MobileNet, whose features at
    32 px are constant (tests/test_multi_worker.py): it must come last."""
    import json
    import subprocess
    import sys

    from test_keras_hub_models import tiny_resnet_preset
    from test_multi_worker import colour_photos

    colour_photos(tmp_path / "photos", per_class=16)
    preset = tiny_resnet_preset(tmp_path / "preset")
    candidates = [f"tfhub:{any_size_image_module}", f"keras_hub:{preset}",
                  "MobileNet,alpha=0.25,weights=none"]
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "recipes.cats_vs_dogs", "--data-dir",
         str(tmp_path / "photos" / "train"), "--image-size", "32", "--batch-size", "8",
         "--select-from", *candidates, "--select-only", "--output-dir", str(out)],
        env=subprocess_env, capture_output=True, text=True, timeout=600,
        cwd=subprocess_env["PYTHONPATH"].split(":")[0])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    selection = json.loads((out / "selection.json").read_text())
    rows = {row["candidate"]: row for row in selection["candidates"]}
    assert set(rows) == set(candidates), rows
    assert sorted(row["rank"] for row in rows.values()) == [1, 2, 3]
    assert rows["MobileNet,alpha=0.25,weights=none"]["rank"] == 3, rows
    for row in rows.values():
        assert row["logme"] is not None and row["feature_seconds"] >= 0, row
    assert (out / "selection.png").stat().st_size > 5_000
    assert not (out / "model.keras").exists()  # --select-only trains nothing
