"""Multi-label classification through the same templates, phases and predictor."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from templates.data.multi_label import (
    ExactMatchAccuracy,
    choose_thresholds,
    is_multi_label,
    multi_hot,
    multi_label_scores,
    split_labels,
)
from templates.export.predictor import Predictor
from templates.models.heads import classification_head
from templates.models.transfer_model import TransferModel
from templates.reports.evaluation import multi_label_evaluation, predict_multi_label
from templates.training.plan import TransferPlan
from templates.training.run import run_transfer
from templates.training.saving import save_model, write_labels

NAMES = ["blue", "green", "red"]


def test_labels_multi_hot_rows_and_exact_match():
    assert split_labels(" cats | dogs|cats||") == ["cats", "dogs"]
    np.testing.assert_array_equal(multi_hot([[0, 2], [1], []], 3),
                                  [[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="outside 0..2"):
        multi_hot([[3]], 3)
    metric = ExactMatchAccuracy()
    metric.update_state(np.array([[1, 0, 1], [0, 1, 0]], "float32"),
                        np.array([[0.9, 0.2, 0.6], [0.1, 0.4, 0.0]], "float32"))
    assert float(metric.result()) == 0.5  # the second misses "green" at 0.5


def test_thresholds_are_chosen_per_label_and_scores_match_scikit_learn():
    from sklearn.metrics import average_precision_score, f1_score

    rng = np.random.default_rng(0)
    targets = (rng.uniform(size=(200, 3)) < 0.4).astype("float32")
    # Label 0 is scored high when present (best cut near 0.5); label 1 is scored low
    # overall, so its best threshold lies well under 0.5; label 2 never occurs.
    probabilities = np.stack([np.where(targets[:, 0] > 0, 0.8, 0.2) + rng.normal(0, 0.05, 200),
                              np.where(targets[:, 1] > 0, 0.3, 0.1) + rng.normal(0, 0.02, 200),
                              rng.uniform(size=200) * 0.3], axis=1).clip(0, 1)
    targets[:, 2] = 0
    thresholds = choose_thresholds(probabilities, targets)
    assert 0.3 <= thresholds[0] <= 0.7 and 0.1 < thresholds[1] < 0.3 and thresholds[2] == 0.5
    scores = multi_label_scores(probabilities, targets, thresholds, NAMES)
    predicted = probabilities >= np.array(thresholds)
    assert scores["micro"]["f1"] == pytest.approx(f1_score(targets, predicted, average="micro"))
    assert scores["per_label"]["green"]["f1"] == pytest.approx(1.0)
    assert scores["per_label"]["red"]["average_precision"] is None  # no positives
    assert scores["mean_average_precision"] == pytest.approx(np.mean(
        [average_precision_score(targets[:, k], probabilities[:, k]) for k in (0, 1)]))


def colour_patches(count, seed):
    """8x8 images holding any of three colours (blue, green, red channels), as labels."""
    rng = np.random.default_rng(seed)
    targets = (rng.uniform(size=(count, 3)) < 0.5).astype("float32")
    images = rng.uniform(0, 60, (count, 8, 8, 3)).astype("float32")
    for channel, label in ((2, 0), (1, 1), (0, 2)):  # blue, green, red
        images[..., channel] += targets[:, label, None, None] * 150
    return images, targets


def tiny_transfer():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(
        keras.layers.Rescaling(1 / 255.0)(inputs))
    backbone = keras.Model(inputs, features, name="tiny_backbone")
    backbone.trainable = False
    head = classification_head(backbone.output_shape[1:], 3, dropout=0.0, multi_label=True)
    return TransferModel(backbone, head, class_names=NAMES, input_name="images")


def test_a_multi_label_transfer_trains_reports_and_predicts(tmp_path):
    transfer = tiny_transfer()
    assert is_multi_label(transfer.model) and is_multi_label(transfer.head)
    train = tf.data.Dataset.from_tensor_slices(colour_patches(256, 0)).batch(32)
    validation = tf.data.Dataset.from_tensor_slices(colour_patches(96, 1)).batch(32)
    test = tf.data.Dataset.from_tensor_slices(colour_patches(96, 2)).batch(32)
    run = run_transfer(transfer, train, validation, TransferPlan(
        head_epochs=40, fine_tune_epochs=2, learning_rate=5e-2, fine_tune_learning_rate=1e-3,
        monitor="val_micro_f1", patience=0, seed=0), test=test)
    # "accuracy" is the exact match: every one of an example's labels right.
    assert "val_micro_f1" in run.history and run.test_accuracy >= 0.9, run.history
    scores = multi_label_evaluation(transfer.model, validation, test, NAMES, tmp_path,
                                    examples=[f"patch {i}" for i in range(96)])
    assert scores["micro"]["f1"] >= 0.95 and scores["mean_average_precision"] >= 0.95
    saved = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert set(saved["per_label"]) == set(NAMES) and (tmp_path / "evaluation" / "report.md").is_file()
    thresholds = json.loads((tmp_path / "thresholds.json").read_text())
    assert set(thresholds) == set(NAMES)
    # The predictor returns every label over its threshold, with its probability.
    save_model(transfer.model, tmp_path / "model.keras")
    write_labels(NAMES, tmp_path / "labels.txt")
    images, targets = colour_patches(8, 3)
    folder = tmp_path / "photos"
    folder.mkdir()
    from PIL import Image

    paths = []
    for index, image in enumerate(images):
        paths.append(str(folder / f"{index}.png"))
        Image.fromarray(image.clip(0, 255).astype("uint8")).save(paths[-1])
    predictions = Predictor(tmp_path).predict(paths)
    for prediction, row in zip(predictions, targets):
        expected = {name for name, present in zip(NAMES, row) if present}
        assert set(prediction.labels) == expected, (prediction, row)
        assert prediction.label == "|".join(prediction.labels)
        assert all(prediction.probabilities[name] >= thresholds[name]
                   for name in prediction.labels)
    probabilities, _ = predict_multi_label(transfer.model, test)
    assert probabilities.shape == (96, 3)


def test_what_a_multi_label_model_cannot_do_is_refused_by_name():
    transfer = tiny_transfer()
    data = tf.data.Dataset.from_tensor_slices(colour_patches(16, 0)).batch(8)
    with pytest.raises(ValueError, match="class_weight scales single-label"):
        run_transfer(transfer, data, data, TransferPlan(class_weight={0: 1.0, 1: 2.0}))
    with pytest.raises(ValueError, match="val_balanced_accuracy is a single-label score"):
        run_transfer(transfer, data, data, TransferPlan(monitor="val_balanced_accuracy"))


def test_the_transfer_report_compares_the_monitored_metric(tmp_path):
    from templates.training.comparison import report_against_scratch
    from templates.reports.transfer_report import report_metric

    assert report_metric("val_micro_f1") == "micro_f1"
    assert report_metric("val_loss") == "accuracy"  # a loss is not a skill in points
    with pytest.raises(ValueError, match="No transfer report on 'val_auc'"):
        report_metric("val_auc")
    train = tf.data.Dataset.from_tensor_slices(colour_patches(128, 0)).batch(32)
    validation = tf.data.Dataset.from_tensor_slices(colour_patches(64, 1)).batch(32)
    test = tf.data.Dataset.from_tensor_slices(colour_patches(64, 2)).batch(32)
    plan = TransferPlan(head_epochs=3, fine_tune_epochs=1, learning_rate=2e-2,
                        fine_tune_learning_rate=1e-3, monitor="val_micro_f1", patience=0,
                        seed=0)
    run = run_transfer(tiny_transfer(), train, validation, plan, test=test,
                       measure_start=True)
    assert {"accuracy", "micro_f1", "macro_f1"} <= set(run.start_scores) <= set(run.test_scores)
    report = report_against_scratch(run, tiny_transfer().model, train, validation, test,
                                    tmp_path, title="colours")
    assert report.metric == "micro_f1"
    # The transferred side is the run's micro-F1 curve, not its exact-match accuracy.
    transferred = report.transfer[0]
    assert transferred.validation_curve == pytest.approx(run.history["val_micro_f1"])
    assert transferred.validation_curve != pytest.approx(run.history["val_accuracy"])
    assert transferred.before_training == pytest.approx(run.start_scores["micro_f1"])
    assert transferred.test_score == pytest.approx(run.test_scores["micro_f1"])
    assert len(report.scratch[0].validation_curve) == 4
    written = json.loads((tmp_path / "transfer_report.json").read_text())
    assert written["metric"] == "micro_f1"
    assert set(written["difference"]) == {"start", "slope", "asymptote", "test_micro_f1"}
    assert "(on micro_f1)" in written["summary"]
