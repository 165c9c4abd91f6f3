"""Two-phase training: the head learns on cached features; fine-tuning keeps BN frozen."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from templates.models.freezing import freeze_batch_normalization, unfreeze_from
from templates.models.layers import iterate_layers
from templates.models.pretrained import pretrained_model
from templates.models.transfer_model import TransferModel
from templates.training.compilation import compile_classifier
from templates.training import phases
from templates.training.phases import (
    extract_features,
    find_head_learning_rate,
    fine_tune,
    head_training_features,
    train_head,
)


def bright_dark_batches(count=64, size=32, batch_size=16, seed=0):
    """Purpose-built task: class 1 images are brighter than class 0 images."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    base = rng.uniform(0, 120, size=(count, size, size, 3))
    images = (base + labels[:, None, None, None] * 120).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype("int32")))
    return dataset.batch(batch_size)


def batch_norm_statistics(model):
    return [
        (layer.name, keras.ops.convert_to_numpy(layer.moving_mean).copy(),
         keras.ops.convert_to_numpy(layer.moving_variance).copy())
        for layer in iterate_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def convolution_kernels(model):
    return [keras.ops.convert_to_numpy(layer.weights[0]).copy() for layer in iterate_layers(model)
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]


def small_transfer(seed=0):
    keras.utils.set_random_seed(seed)
    return pretrained_model("MobileNet", num_classes=2, weights=None, image_size=32, alpha=0.25)


def conv_bn_transfer(seed=0):
    """A small backbone with BatchNormalization, shallow enough to train from random init.

    (A randomly initialised MobileNet with its BatchNormalization layers in inference
    mode saturates its softmax and gets zero gradients, which would make the test below
    pass for the wrong reason.)
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for index, filters in enumerate((8, 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, use_bias=False, name=f"conv_{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{index}")(x)
        x = keras.layers.ReLU()(x)
    backbone = keras.Model(inputs, x, name="conv_bn_backbone")
    backbone.trainable = False
    head_inputs = keras.Input(backbone.output_shape[1:])
    head = keras.Model(head_inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(head_inputs)))
    return TransferModel(backbone, head)


def test_fine_tuning_keeps_batch_norm_statistics_unchanged():
    transfer = conv_bn_transfer()
    data = bright_dark_batches()
    train_head(transfer, data, epochs=1, verbose=0)
    before = batch_norm_statistics(transfer.backbone)
    kernels_before = convolution_kernels(transfer.backbone)

    fine_tune(transfer, data, epochs=2, learning_rate=1e-2, from_layer=None, verbose=0)

    after = batch_norm_statistics(transfer.backbone)
    assert len(before) == 2
    for (name, mean_before, variance_before), (_, mean_after, variance_after) in zip(
        before, after
    ):
        np.testing.assert_array_equal(mean_before, mean_after, err_msg=name)
        np.testing.assert_array_equal(variance_before, variance_after, err_msg=name)
    # Fine-tuning did train the backbone: every convolution kernel moved.
    kernels_after = convolution_kernels(transfer.backbone)
    assert len(kernels_before) == 2
    for before_kernel, after_kernel in zip(kernels_before, kernels_after):
        assert np.abs(before_kernel - after_kernel).max() > 1e-4


def test_without_the_fix_batch_norm_statistics_drift():
    """The control for the test above: plain unfreezing lets the statistics move."""
    transfer = conv_bn_transfer()
    data = bright_dark_batches()
    before = batch_norm_statistics(transfer.backbone)
    transfer.backbone.trainable = True  # the naive way: BN layers become trainable too
    transfer.model.compile(optimizer=keras.optimizers.Adam(1e-3),
                           loss="sparse_categorical_crossentropy")
    transfer.model.fit(data.take(1), epochs=1, verbose=0)
    after = batch_norm_statistics(transfer.backbone)
    for (name, mean_before, _), (_, mean_after, _) in zip(before, after):
        assert not np.array_equal(mean_before, mean_after), name


def test_unfreeze_from_a_named_layer():
    transfer = small_transfer()
    backbone = transfer.backbone
    unfreeze_from(backbone, "conv_dw_12")
    names = [layer.name for layer in backbone.layers]
    start = names.index("conv_dw_12")
    for index, layer in enumerate(backbone.layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
        else:
            assert layer.trainable == (index >= start), layer.name
    with pytest.raises(ValueError, match="no such layer"):
        unfreeze_from(backbone, "conv_dw_99")


def test_unfreeze_from_an_index_counts_like_python():
    transfer = small_transfer()
    unfreeze_from(transfer.backbone, -3)
    flags = [layer.trainable for layer in transfer.backbone.layers
             if not isinstance(layer, keras.layers.BatchNormalization)]
    assert flags[-1] and not flags[0]


def test_freeze_batch_normalization_reaches_nested_models():
    transfer = small_transfer()
    transfer.model.trainable = True
    count = freeze_batch_normalization(transfer.model)
    assert count == sum(isinstance(layer, keras.layers.BatchNormalization)
                        for layer in transfer.backbone.layers)


def counted_conv_transfer(seed, monkeypatch, filters=8):
    """A fixed random conv "backbone" (enough to check the mechanics) under a small head,
    and the list of batch sizes its feature extractor has been run on (through the
    predictor the phases use: `batch_predictor`, a frozen graph on TensorFlow)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    backbone = keras.Model(inputs, keras.layers.Conv2D(filters, 3, activation="relu")(inputs))
    head_inputs = keras.Input((14, 14, filters))
    head = keras.Model(head_inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(head_inputs)))
    transfer = TransferModel(backbone, head)
    calls = []
    original = phases.batch_predictor

    def counting_predictor(model, batches=None):
        predict = original(model, batches)
        if model is not transfer.feature_extractor:
            return predict

        def counting(batch):
            calls.append(len(batch))
            return predict(batch)
        return counting

    monkeypatch.setattr(phases, "batch_predictor", counting_predictor)
    return transfer, calls


def test_head_on_cached_features_learns_and_runs_the_backbone_once(monkeypatch):
    transfer, calls = counted_conv_transfer(seed=1, monkeypatch=monkeypatch)
    data = bright_dark_batches(count=64, size=16)
    history = train_head(transfer, data, validation_data=data, epochs=30,
                         learning_rate=0.05, seed=1, verbose=0)
    # Features for training and validation were computed once each, not per epoch.
    assert sum(calls) == 2 * 64
    assert history.history["val_accuracy"][-1] >= 0.9
    # The full model is compiled afterwards and agrees with the head.
    accuracy = transfer.model.evaluate(data, verbose=0, return_dict=True)
    assert accuracy["accuracy"] >= 0.9


def test_the_finder_and_the_head_share_one_feature_extraction(monkeypatch):
    data = bright_dark_batches(count=32, size=16)
    transfer, calls = counted_conv_transfer(seed=2, monkeypatch=monkeypatch, filters=4)
    features = head_training_features(transfer, data)
    find_head_learning_rate(transfer, data, batch_size=8, seed=2, steps=8,
                            train_features=features)
    shared = train_head(transfer, data, epochs=3, learning_rate=0.05, batch_size=8, seed=2,
                        verbose=0, train_features=features)
    assert sum(calls) == 32  # one pass over the training data for both

    # The same head training as extracting inside train_head.
    alone, calls = counted_conv_transfer(seed=2, monkeypatch=monkeypatch, filters=4)
    history = train_head(alone, data, epochs=3, learning_rate=0.05, batch_size=8, seed=2,
                         verbose=0)
    assert sum(calls) == 32
    np.testing.assert_allclose(shared.history["loss"], history.history["loss"], rtol=1e-6)
    with pytest.raises(ValueError, match="train_features are cached features"):
        train_head(alone, data, cache_features=False, train_features=features)


def test_the_head_trains_the_same_on_features_memory_mapped_from_disk(capsys, monkeypatch):
    """feature_memory_gb=0 puts the training and validation features in files from the
    first row: the head reads them batch by batch and trains exactly as in memory."""
    data = bright_dark_batches(count=32, size=16)
    histories = []
    for limit in (None, 0):
        transfer, _ = counted_conv_transfer(seed=2, monkeypatch=monkeypatch, filters=4)
        histories.append(train_head(transfer, data, validation_data=data, epochs=3,
                                    learning_rate=0.05, batch_size=8, seed=2, verbose=0,
                                    feature_memory_gb=limit))
    printed = capsys.readouterr().out
    assert printed.count("memory-mapped from") == 2, printed  # training and validation
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(histories[0].history[key], histories[1].history[key],
                                   rtol=1e-6)
    # One budget for both: room for the training features only sends the validation
    # features (the same data here, so the same size) to a file.
    transfer, _ = counted_conv_transfer(seed=2, monkeypatch=monkeypatch, filters=4)
    train_bytes = head_training_features(transfer, data)[0].nbytes
    train_head(transfer, data, validation_data=data, epochs=1, learning_rate=0.05,
               batch_size=8, seed=2, verbose=0, feature_memory_gb=1.5 * train_bytes / 1e9)
    printed = capsys.readouterr().out
    assert printed.count("memory-mapped from") == 1, printed


def test_in_graph_head_training_with_augmentation():
    transfer = small_transfer()
    augmentation = keras.layers.RandomFlip("horizontal", seed=0)
    weights_before = [np.array(w) for w in transfer.backbone.weights]
    history = train_head(transfer, bright_dark_batches(), epochs=1, cache_features=False,
                         augmentation=augmentation, verbose=0)
    assert len(history.history["loss"]) == 1
    # The backbone stayed frozen; the saved model holds no augmentation layer.
    for before, after in zip(weights_before, transfer.backbone.weights):
        np.testing.assert_array_equal(before, np.array(after))
    assert not any(isinstance(layer, keras.layers.RandomFlip)
                   for layer in iterate_layers(transfer.model))


def test_augmentation_with_cached_features_is_refused():
    with pytest.raises(ValueError, match="cache_features=False"):
        train_head(small_transfer(), bright_dark_batches(), cache_features=True,
                   augmentation=keras.layers.RandomFlip())


def test_augmented_views_are_cached_once_and_drawn_from_the_seed(monkeypatch):
    data = bright_dark_batches(count=24, size=16, batch_size=8)
    transfer, calls = counted_conv_transfer(seed=3, monkeypatch=monkeypatch, filters=4)
    flip = keras.layers.RandomFlip("horizontal", seed=0)
    features, labels = head_training_features(transfer, data, flip, views=2, seed=5)
    # The originals, then two views: three rows per example, one backbone pass each.
    assert features.shape[0] == 3 * 24 and sum(calls) == 3 * 24
    np.testing.assert_array_equal(labels, np.tile(np.arange(24) % 2, 3))
    plain, _ = head_training_features(transfer, data)
    np.testing.assert_allclose(features[:24], plain, rtol=1e-6)
    # The views are augmented (some images mirrored) and the same on a rerun.
    assert not np.allclose(features[24:48], plain)
    again, _ = head_training_features(transfer, data, flip, views=2, seed=5)
    np.testing.assert_array_equal(again, features)
    other, _ = head_training_features(transfer, data, flip, views=2, seed=6)
    assert not np.array_equal(other, features)
    # A head trains on them through the plan (augmentation cached, not in the graph).
    with pytest.raises(ValueError, match="views need an augmentation"):
        head_training_features(transfer, data, None, views=1)


def test_the_originals_and_views_share_one_predictor_sized_for_all_passes(monkeypatch):
    """ONNX Runtime or a frozen graph pays only for long passes (`batch_predictor`):
    the views are passes over the same extractor, so it is asked once, for all of them."""
    data = bright_dark_batches(count=24, size=16, batch_size=8)
    transfer, _ = counted_conv_transfer(seed=3, monkeypatch=monkeypatch, filters=4)
    asked = []
    counting = phases.batch_predictor
    monkeypatch.setattr(phases, "batch_predictor",
                        lambda model, batches=None: asked.append(batches) or counting(model, batches))
    head_training_features(transfer, data, keras.layers.RandomFlip(seed=0), views=2, seed=5)
    assert asked == [3 * 3]  # 3 batches, the originals and two views


def test_extract_features_keeps_order_and_labels():
    transfer = small_transfer()
    data = bright_dark_batches(count=20, batch_size=8)
    features, labels = extract_features(transfer.feature_extractor, data)
    assert features.shape == (20, 1, 1, 256)
    np.testing.assert_array_equal(labels, np.arange(20) % 2)
    second_batch = next(iter(data.skip(1)))[0]
    direct = transfer.feature_extractor.predict(second_batch, verbose=0)
    np.testing.assert_allclose(features[8:16], direct, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no batches"):
        extract_features(transfer.feature_extractor, data.take(0))


def test_a_compiled_classifier_traces_its_steps_once():
    # Keras would create the optimiser's and the accuracy's variables inside the first
    # traced step, and TensorFlow traces a function that created variables twice.
    # compile_classifier creates them up front: nothing is created while tracing, and
    # each step function is traced once.
    x = np.random.default_rng(0).normal(size=(24, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    traced = {"train": 0, "test": 0}

    class Counting(keras.Model):
        def train_step(self, batch):
            traced["train"] += 1
            return super().train_step(batch)

        def test_step(self, batch):
            traced["test"] += 1
            return super().test_step(batch)

    inputs = keras.Input((6,))
    model = Counting(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    created_while_tracing = []

    def creator(next_creator, **options):
        if tf.inside_function():
            created_while_tracing.append(options.get("name"))
        return next_creator(**options)

    compile_classifier(model, 1e-2)
    with tf.variable_creator_scope(creator):
        model.evaluate(data, verbose=0)
        history = model.fit(data, validation_data=data, epochs=3, verbose=0)
    assert created_while_tracing == []
    assert traced == {"train": 1, "test": 1}
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}

    # The check can fail: compiled the usual way, the same model traces its training
    # step twice (the optimiser's variables are created in the first trace).
    traced.update(train=0, test=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(data, epochs=1, verbose=0)
    assert traced["train"] == 2
