"""Label smoothing on integer labels, through the plan."""

import keras
import numpy as np
import pytest

from templates.training.losses import SmoothedSparseCrossentropy, classification_loss
from templates.training.saving import load_model, save_model


def test_smoothed_loss_is_keras_one_hot_smoothing_on_integer_labels():
    labels = np.array([0, 2, 1])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]], "float32")
    one_hot = keras.ops.one_hot(labels, 3)
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(one_hot, probabilities)
    smoothed = SmoothedSparseCrossentropy(0.2)(labels, probabilities)
    assert float(smoothed) == pytest.approx(float(expected), rel=1e-6)
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    assert float(SmoothedSparseCrossentropy(0.0)(labels, probabilities)) == pytest.approx(
        float(plain), rel=1e-6)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        SmoothedSparseCrossentropy(1.0)


def test_a_smoothed_plan_trains_less_confident_heads_and_saves(tmp_path):
    from templates.models.heads import classification_head
    from templates.models.transfer_model import TransferModel
    from templates.training.plan import TransferPlan
    from templates.training.run import run_transfer

    rng = np.random.default_rng(0)
    labels = (np.arange(128) % 2).astype("int32")
    inputs = rng.normal(size=(128, 6)).astype("float32") + labels[:, None] * 3.0
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(32)
    confidence = {}
    for smoothing in (0.0, 0.2):
        keras.utils.set_random_seed(0)
        features = keras.Input((6,))
        backbone = keras.Model(features, keras.layers.Dense(8, activation="relu")(features))
        backbone.trainable = False
        transfer = TransferModel(backbone, classification_head((8,), 2, dropout=0.0),
                                 input_name="features")
        run = run_transfer(transfer, data, data, TransferPlan(
            head_epochs=40, fine_tune_epochs=1, learning_rate=5e-2, patience=0,
            label_smoothing=smoothing))
        assert run.scores["val_accuracy"] == 1.0
        confidence[smoothing] = float(transfer.model.predict(inputs, verbose=0).max(1).mean())
    # Smoothed targets stop the head short of certainty (0.9 + 0.2 / 2 for the true class).
    assert confidence[0.0] > 0.95 and confidence[0.2] < 0.91, confidence
    assert isinstance(classification_loss(transfer.model, 0.2), SmoothedSparseCrossentropy)
    save_model(transfer.model, tmp_path / "model.keras")
    np.testing.assert_allclose(load_model(tmp_path / "model.keras").predict(inputs[:4], verbose=0),
                               transfer.model.predict(inputs[:4], verbose=0), atol=1e-6)
