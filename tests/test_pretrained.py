"""The pretrained-model template: building, reuse depth, saving and export."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from templates.export.formats import export_saved_model
from templates.models.backbones import BACKBONES
from templates.models.pretrained import pretrained_model
from templates.training.saving import load_model, read_labels, save_model, write_labels


def images(count=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def test_builds_a_frozen_classifier_taking_raw_images():
    transfer = pretrained_model("MobileNet", num_classes=3, weights=None, image_size=32,
                                alpha=0.25, class_names=["a", "b", "c"])
    assert transfer.model.input_shape == (None, 32, 32, 3)
    assert transfer.model.output_shape == (None, 3)
    assert not transfer.backbone.trainable
    assert transfer.backbone.trainable_weights == []
    assert transfer.fine_tune_from == BACKBONES["MobileNet"].fine_tune_from
    # The head's output layer computes in float32 whatever the global policy.
    assert transfer.head.layers[-1].dtype_policy.compute_dtype == "float32"
    probabilities = transfer.model.predict(images(), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # The model preprocesses inside: feeding 0..255 directly equals feeding the
    # backbone the family's own preprocess_input.
    expected = transfer.head(transfer.backbone(
        keras.applications.mobilenet.preprocess_input(images())), training=False)
    np.testing.assert_allclose(probabilities, keras.ops.convert_to_numpy(expected),
                               rtol=1e-4, atol=1e-5)


def test_float32_output_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        transfer = pretrained_model("MobileNet", 2, weights=None, image_size=32, alpha=0.25)
        assert transfer.backbone.layers[1].compute_dtype == "float16"
        assert transfer.model.predict(images(), verbose=0).dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_reuse_part_of_the_backbone():
    full = pretrained_model("MobileNet", 2, weights=None, image_size=32, alpha=0.25)
    by_name = pretrained_model("MobileNet", 2, weights=None, image_size=32, alpha=0.25,
                               cut_at="conv_pw_6_relu")
    by_depth = pretrained_model("MobileNet", 2, weights=None, image_size=32, alpha=0.25,
                                cut_at=20)
    assert by_name.backbone.layers[-1].name == "conv_pw_6_relu"
    assert len(by_name.backbone.layers) < len(full.backbone.layers)
    assert len(by_depth.backbone.layers) == 20
    # The registry's fine-tuning layer was cut away, so the whole kept part is tuned.
    assert by_name.fine_tune_from is None
    assert by_name.model.output_shape == (None, 2)


def test_keras_round_trip_gives_identical_predictions(tmp_path):
    transfer = pretrained_model("MobileNetV2", 2, weights=None, image_size=32, alpha=0.35)
    path = save_model(transfer.model, tmp_path / "model.keras")
    reloaded = load_model(path)
    np.testing.assert_array_equal(transfer.model.predict(images(), verbose=0),
                                  reloaded.predict(images(), verbose=0))
    with pytest.raises(ValueError, match=".keras"):
        save_model(transfer.model, tmp_path / "model.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]  # no temporaries


def test_saved_model_export_with_labels(tmp_path):
    transfer = pretrained_model("ResNet50", 2, weights=None, image_size=32, cut_at=20)
    directory = export_saved_model(transfer.model, tmp_path / "export", ["cat", "dog"])
    served = tf.saved_model.load(directory)
    np.testing.assert_allclose(served.serve(images()).numpy(),
                               transfer.model.predict(images(), verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert read_labels(tmp_path / "export" / "labels.txt") == ["cat", "dog"]


def test_labels_file_round_trip_and_validation(tmp_path):
    write_labels(["cats", "dogs"], tmp_path / "labels.txt")
    assert read_labels(tmp_path / "labels.txt") == ["cats", "dogs"]
    with pytest.raises(ValueError):
        write_labels(["ok", "two\nlines"], tmp_path / "bad.txt")


def test_class_names_must_match_num_classes():
    with pytest.raises(ValueError, match="class_names"):
        pretrained_model("MobileNet", 3, weights=None, image_size=32, alpha=0.25,
                         class_names=["a", "b"])
