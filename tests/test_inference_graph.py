"""The frozen inference graph gives the model's own outputs, follows its weights, and
steps aside where it does not apply."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from templates.models import inference_graph
from templates.models.inference_graph import FREEZE_FOR_AT_LEAST, frozen_predictor
from templates.models.prediction import batch_predictor


def mobile_block_network(seed: int = 0) -> keras.Model:
    """Purpose-built: the layers EfficientNet and MobileNet chain (convolution without
    bias, BatchNormalization, ReLU6; a depthwise convolution with a multiplier of 2, so
    the folded scale's channel order matters; a residual add; pooling; a dense head),
    with BatchNormalization statistics far from their initial ones."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(images)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False)(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU(6.0)(y)
    y = keras.layers.Conv2D(8, 1, use_bias=False)(y)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(images, keras.layers.Dense(3, activation="softmax")(x))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, channels), rng.normal(0, 1, channels),
                               rng.normal(0, 2, channels), rng.uniform(0.1, 4.0, channels)])
    return model


def images(count: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (count, 16, 16, 3)).astype("float32")


@pytest.fixture
def tensorflow_graph(monkeypatch):
    """The frozen TensorFlow graph, not ONNX Runtime (where the onnx extra is installed)."""
    monkeypatch.setattr(inference_graph, "_onnx_runtime_installed", lambda: False)


def test_the_frozen_graph_gives_the_models_outputs_and_folds_the_normalisation(tensorflow_graph):
    model = mobile_block_network()
    predict = frozen_predictor(model)
    assert predict is not None
    np.testing.assert_allclose(predict(images()), model.predict_on_batch(images()),
                               rtol=1e-4, atol=1e-6)
    # Later batches (another size) go through the graph alone.
    np.testing.assert_allclose(predict(images(3, seed=2)), model.predict_on_batch(images(3, seed=2)),
                               rtol=1e-4, atol=1e-6)
    graph_def, _, _ = inference_graph.optimised_graph_def(model)
    operations = [node.op for node in graph_def.node]
    assert "FusedBatchNormV3" not in operations and "Rsqrt" not in operations
    # Every BatchNormalization is folded: no multiply is left after a convolution, and
    # each convolution's shift became a BiasAdd that TensorFlow fuses with it.
    assert operations.count("BiasAdd") == 3
    assert "Mul" not in operations


def test_a_pass_freezes_only_when_long_enough_and_the_graph_follows_the_weights(
        monkeypatch, tensorflow_graph):
    model = mobile_block_network()
    built = []
    freeze = inference_graph._frozen_graph
    monkeypatch.setattr(inference_graph, "_frozen_graph",
                        lambda model: built.append(model.name) or freeze(model))
    # 5 images a batch: 3 batches are too few to pay for freezing, 400 are enough.
    short = batch_predictor(model, batches=3)(images())
    assert not built
    long = batch_predictor(model, batches=FREEZE_FOR_AT_LEAST // 5)
    np.testing.assert_allclose(long(images()), short, rtol=1e-4, atol=1e-6)
    long(images(3, seed=2))
    batch_predictor(model, batches=3)(images())  # the kept graph, for any pass
    assert len(built) == 1  # frozen once, not on every call or pass
    before = short
    model.set_weights([weight * 1.5 if weight.ndim == 4 else weight
                       for weight in model.get_weights()])
    assert batch_predictor(model, batches=3)(images()) is not None and len(built) == 1
    after = frozen_predictor(model)(images())
    assert len(built) == 2
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, model.predict_on_batch(images()), rtol=1e-4, atol=1e-6)


def test_a_wrong_graph_is_caught_on_the_first_batch(monkeypatch, tensorflow_graph):
    model = mobile_block_network()
    monkeypatch.setattr(inference_graph, "_frozen_graph",
                        lambda model: lambda inputs: np.zeros((len(inputs), 3), "float32"))
    predict = frozen_predictor(model)
    with pytest.warns(UserWarning, match="differs from the model"):
        first = predict(images())
    np.testing.assert_allclose(first, model.predict_on_batch(images()))
    np.testing.assert_allclose(predict(images(3, seed=2)), model.predict_on_batch(images(3, seed=2)))


def test_a_graph_tensorflow_cannot_freeze_is_predicted_as_usual(monkeypatch, tensorflow_graph):
    model = mobile_block_network()

    def unfreezable(model):
        raise ValueError("Input 0 of node AssignAddVariableOp ... incompatible with expected "
                         "resource.")  # what a TF-Hub SavedModel's stateful graph raises

    monkeypatch.setattr(inference_graph, "_frozen_graph", unfreezable)
    np.testing.assert_allclose(frozen_predictor(model)(images()), model.predict_on_batch(images()))


def test_onnx_runtime_runs_the_model_where_installed(monkeypatch):
    """With the onnx extra (in the test extra), a long pass runs in ONNX Runtime, from
    Keras's own ONNX export; where it cannot take a model, a warning says so and the
    frozen TensorFlow graph runs it."""
    model = mobile_block_network()
    frozen = []
    freeze = inference_graph._frozen_graph
    monkeypatch.setattr(inference_graph, "_frozen_graph",
                        lambda model: frozen.append(model.name) or freeze(model))
    predict = frozen_predictor(model)
    np.testing.assert_allclose(predict(images()), model.predict_on_batch(images()),
                               rtol=1e-4, atol=1e-6)
    assert not frozen  # ONNX Runtime, not the TensorFlow graph

    def unconvertible(model):
        raise RuntimeError("tf2onnx: unsupported op")

    monkeypatch.setattr(inference_graph, "_onnx_session", unconvertible)
    other = mobile_block_network(seed=1)
    with pytest.warns(UserWarning, match="ONNX Runtime could not take"):
        result = frozen_predictor(other)(images())
    np.testing.assert_allclose(result, other.predict_on_batch(images()), rtol=1e-4, atol=1e-6)
    assert frozen == [other.name]


def test_the_cache_does_not_keep_models_alive():
    import gc
    import weakref

    model = mobile_block_network()
    frozen_predictor(model)(images())
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


def test_it_steps_aside_for_text_inputs_and_several_outputs():
    tokens = keras.Input((7,), dtype="int32")
    text = keras.Model(tokens, keras.layers.Dense(2)(keras.layers.Embedding(10, 4)(tokens)))
    assert frozen_predictor(text) is None
    assert batch_predictor(text) == text.predict_on_batch
    pictures = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten()(pictures)
    two = keras.Model(pictures, [keras.layers.Dense(2)(flat), keras.layers.Dense(3)(flat)])
    assert frozen_predictor(two) is None
