"""The evaluation report and Grad-CAM (issue 7, part 3), on purpose-built images.

Dark noisy images hold a red square, a green square, or nothing ("blank"), anywhere: a
small trained CNN tells them apart, and Grad-CAM must light up the square. (With a
"blank" class both colours need positive evidence; with only two classes a model may
call one class "the other colour is missing", and Grad-CAM rightly shows nothing.)
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from templates.models.transfer_model import TransferModel
from templates.reports.evaluation import classification_scores, evaluation_report
from templates.reports.grad_cam import grad_cam_heatmaps, grad_cam_overlays

CLASSES = ["blank", "red", "green"]


def squares(count, seed):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 40, size=(count, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 3, size=count).astype("int32")
    for image, label in zip(images, labels):
        if label:
            row, column = rng.integers(0, 24, size=2)
            image[row:row + 8, column:column + 8, label - 1] = 255.0
    return images, labels


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_2")(x)
    backbone = keras.Model(inputs, x, name="tiny_backbone")
    features = keras.Input(backbone.output_shape[1:])
    pooled = keras.layers.GlobalMaxPooling2D()(features)
    head = keras.Model(features, keras.layers.Dense(3, activation="softmax")(pooled),
                       name="head")
    transfer = TransferModel(backbone, head, preprocessing=keras.layers.Rescaling(1 / 255.0),
                             class_names=CLASSES)
    transfer.model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                           metrics=["accuracy"])
    images, labels = squares(300, seed=1)
    transfer.model.fit(images, labels, epochs=10, batch_size=32, verbose=0)
    return transfer.model


def test_scores_by_hand():
    scores = classification_scores(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 0, 1]),
                                   ["a", "b", "c"])
    assert scores.confusion_matrix == [[2, 1, 0], [1, 1, 0], [0, 1, 0]]
    assert scores.accuracy == pytest.approx(3 / 6)
    # The mean of the recalls 2/3, 1/2 and 0: every class counted equally.
    assert scores.balanced_accuracy == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert scores.per_class["a"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert scores.per_class["b"]["precision"] == pytest.approx(1 / 3)
    assert scores.per_class["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    with pytest.raises(ValueError, match="0..2"):
        classification_scores(np.array([3]), np.array([0]), ["a", "b", "c"])


def test_report_numbers_agree_with_evaluate(trained, tmp_path):
    images, labels = squares(60, seed=2)
    images[:3] = 20.0  # three blank images: the model can only guess, some go wrong
    batches = [(images[start:start + 16], labels[start:start + 16]) for start in range(0, 60, 16)]
    names = [f"image_{index}.png" for index in range(60)]
    result = evaluation_report(trained, batches, CLASSES, tmp_path, examples=names,
                               load_example=lambda name: images[int(name[6:-4])],
                               title="Squares", error_count=60)
    evaluated = trained.evaluate(images, labels, verbose=0, return_dict=True)
    assert result["accuracy"] == pytest.approx(evaluated["accuracy"], abs=1e-6)
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == 60 and list(matrix.sum(axis=1)) == [
        int((labels == label).sum()) for label in range(3)]
    predicted = trained.predict(images, verbose=0).argmax(axis=1)
    wrong = {names[index] for index in np.flatnonzero(predicted != labels)}
    assert {error["example"] for error in result["most_confident_errors"]} == wrong
    confidences = [error["confidence"] for error in result["most_confident_errors"]]
    assert confidences == sorted(confidences, reverse=True)
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["per_class"] == result["per_class"]
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 10_000
    if wrong:
        assert (tmp_path / "most_confident_errors.png").is_file()
    report = (tmp_path / "report.md").read_text()
    assert "| red |" in report and "confusion_matrix.png" in report


def test_text_reports_list_the_wrong_texts(tmp_path):
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.set_weights([np.array([[4.0, -4.0]], "float32"), np.zeros(2, "float32")])
    features = np.array([[1.0], [1.0], [-1.0]], "float32")  # said 0, 0, 1
    labels = np.array([0, 1, 1], "int32")
    result = evaluation_report(model, [(features, labels)], ["bad", "good"], tmp_path,
                               examples=["awful | film", "a fine film", "lovely"], kind="text")
    assert [error["example"] for error in result["most_confident_errors"]] == ["a fine film"]
    assert "| a fine film |" in (tmp_path / "report.md").read_text()


def test_grad_cam_lights_up_the_square(trained, tmp_path):
    images, labels = squares(12, seed=3)
    heatmaps, probabilities = grad_cam_heatmaps(trained, images)
    assert heatmaps.shape == (12, 32, 32) and heatmaps.max() <= 1.0 + 1e-6
    correct = probabilities.argmax(axis=1) == labels
    assert correct.mean() >= 0.9
    explained = correct & (labels > 0)
    assert explained.sum() >= 5
    for image, heatmap, label in zip(images[explained], heatmaps[explained], labels[explained]):
        square = image[..., label - 1] == 255.0
        # The heat on the square's pixels is far above the image's average heat.
        assert heatmap[square].mean() > 2 * heatmap.mean(), (label, heatmap.round(1))
    overlays, captions = grad_cam_overlays(trained, images[:4], CLASSES, labels[:4])
    assert overlays[0].shape == (32, 32, 3) and captions[0].startswith("true ")
    with pytest.raises(ValueError, match="no nested convolutional backbone"):
        inputs = keras.Input((4,))
        grad_cam_heatmaps(keras.Model(inputs, keras.layers.Dense(2)(inputs)), np.zeros((1, 4)))
