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

from templates.hub import HubLayer, load_hub_module
from templates.saving import load_model, save_model

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
