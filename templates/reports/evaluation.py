"""The evaluation report: what a trained classifier gets right and wrong.

(Multi-label classifiers get `multi_label_report`: per-label thresholds, micro / macro
F1, per-label precision and recall, mean average precision; `templates.data.multi_label`.)

`evaluation_report` predicts once over a labelled set and writes, into one folder:

* ``evaluation.json``: accuracy, per-class precision / recall / F1 / support, their
  macro averages, the confusion matrix (rows: true class, columns: predicted), and the
  most confidently wrong examples;
* ``confusion_matrix.png``: the matrix with class names and counts;
* ``most_confident_errors.png`` (images) or a table in the report (texts);
* ``grad_cam.png`` when given Grad-CAM overlays (`templates.reports.grad_cam`);
* ``report.md``: the figures and links to the rest.

Plain Keras 3 and NumPy (the plots use matplotlib).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.files import atomic_path, write_json, write_text
from templates.data.multi_label import multi_label_scores
from templates.models.prediction import batch_predictor


@dataclasses.dataclass
class ClassificationScores:
    """Scores computed from true and predicted labels.

    Attributes:
        accuracy: Share of correct predictions.
        balanced_accuracy: Mean recall over the classes present in the data: what
            accuracy would be with every class equally frequent (imbalanced data).
        per_class: ``{class name: {precision, recall, f1, support}}``.
        macro: Unweighted means of precision, recall and F1 over classes.
        confusion_matrix: ``[true][predicted]`` counts.
        class_names: Names in label order.
    """

    accuracy: float
    balanced_accuracy: float
    per_class: dict[str, dict[str, float]]
    macro: dict[str, float]
    confusion_matrix: list[list[int]]
    class_names: list[str]


def classification_scores(true_labels: np.ndarray, predicted_labels: np.ndarray,
                          class_names: Sequence[str]) -> ClassificationScores:
    """Accuracy, per-class precision / recall / F1 and the confusion matrix.

    A class never predicted has precision 0; a class absent from the data has recall
    0 and support 0 (reported, not hidden).
    """
    true_labels = np.asarray(true_labels, dtype="int64").reshape(-1)
    predicted_labels = np.asarray(predicted_labels, dtype="int64").reshape(-1)
    if true_labels.shape != predicted_labels.shape:
        raise CookbookError(
            f"{len(true_labels)} true labels but {len(predicted_labels)} predictions.")
    if len(true_labels) == 0:
        raise CookbookError("Cannot score an empty set.")
    count = len(class_names)
    if max(true_labels.max(), predicted_labels.max()) >= count or min(
            true_labels.min(), predicted_labels.min()) < 0:
        raise CookbookError(f"Labels must lie in 0..{count - 1} for {count} class names.")
    # scikit-learn's counting (zero_division=0: a class never predicted has precision 0).
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(count))
    matrix = confusion_matrix(true_labels, predicted_labels, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        true_labels, predicted_labels, labels=labels, zero_division=0)
    per_class = {name: {"precision": float(precision[index]), "recall": float(recall[index]),
                        "f1": float(f1[index]), "support": int(support[index])}
                 for index, name in enumerate(class_names)}
    macro = {measure: float(np.mean([scores[measure] for scores in per_class.values()]))
             for measure in ("precision", "recall", "f1")}
    return ClassificationScores(
        accuracy=float(np.trace(matrix) / matrix.sum()),
        balanced_accuracy=float(np.mean(recall[support > 0])), per_class=per_class,
        macro=macro, confusion_matrix=matrix.tolist(), class_names=list(class_names))


def predict_labelled(model: keras.Model, data: Iterable, predict=None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, true labels)`` over batches of ``(inputs, labels)``.

    Args:
        predict: Returns probabilities for a batch of inputs; ``None`` uses
            ``model.predict_on_batch`` (a plain call under a several-replica strategy,
            see `templates.models.prediction.batch_predictor`). Multi-worker runs pass a plain
            model call (`templates.training.multi_worker.local_predict`): ``predict_on_batch``
            would run collective ops that every worker must join.
    """
    predict = predict or batch_predictor(model)
    probabilities, labels = [], []
    for inputs, batch_labels in data:
        probabilities.append(np.asarray(keras.ops.convert_to_numpy(predict(inputs))))
        labels.append(keras.ops.convert_to_numpy(batch_labels).reshape(-1))
    if not probabilities:
        raise CookbookError("Cannot evaluate: the data yielded no batches.")
    return np.concatenate(probabilities), np.concatenate(labels).astype("int64")


def most_confident_errors(probabilities: np.ndarray, true_labels: np.ndarray,
                          count: int = 9) -> list[int]:
    """Indices of the wrong predictions made with the highest confidence."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != true_labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count].tolist()


def plot_confusion_matrix(scores: ClassificationScores, path: str | os.PathLike,
                          title: str = "Confusion matrix") -> None:
    """The confusion matrix as a labelled heat map with counts (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(scores.confusion_matrix)
    count = len(scores.class_names)
    size = max(4.5, 0.6 * count + 2.5)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    axis.set_xticks(range(count), scores.class_names, rotation=45, ha="right")
    axis.set_yticks(range(count), scores.class_names)
    threshold = matrix.max() / 2 if matrix.size else 0
    for row in range(count):
        for column in range(count):
            axis.text(column, row, str(matrix[row, column]), ha="center", va="center",
                      color="white" if matrix[row, column] > threshold else "black")
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(f"{title}\naccuracy {scores.accuracy:.3f} on {matrix.sum()} examples",
                   fontsize=10)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)


def plot_image_grid(images: Sequence[np.ndarray], captions: Sequence[str],
                    path: str | os.PathLike, title: str) -> None:
    """A grid of 0..255 RGB images with a caption under each (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, max(len(images), 1))
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows + 0.4),
                                squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, image, caption in zip(axes.ravel(), images, captions):
        axis.imshow(np.clip(np.asarray(image), 0, 255).astype("uint8"))
        axis.set_title(caption, fontsize=9)
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=90)
    plt.close(figure)


def evaluation_report(
    model: keras.Model,
    data: Iterable,
    class_names: Sequence[str],
    directory: str | os.PathLike,
    examples: Sequence[str] | None = None,
    load_example=None,
    kind: str = "image",
    error_count: int = 9,
    title: str = "Evaluation",
    grad_cam: tuple[Sequence[np.ndarray], Sequence[str]] | None = None,
    predict=None,
) -> dict:
    """Write the evaluation folder (see the module docstring) and return its numbers.

    Args:
        model: A trained classifier returning class probabilities.
        data: Batches of ``(inputs, labels)``, not shuffled (order matches ``examples``).
        class_names: Names in label order.
        directory: Output folder (created).
        examples: One identifier per example in ``data`` order: image paths or texts.
        load_example: For images, loads an example (path) as a 0..255 RGB array for the
            error grid.
        kind: ``"image"`` or ``"text"`` (how errors are shown).
        error_count: How many confidently wrong examples to show.
        title: Title prefix of the plots.
        grad_cam: ``(overlays, captions)`` from `templates.reports.grad_cam.grad_cam_overlays`.
        predict: How to get a batch's probabilities (see `predict_labelled`).
    """
    if kind not in ("image", "text"):
        raise CookbookError(f"kind must be 'image' or 'text'; got {kind!r}.")
    os.makedirs(directory, exist_ok=True)
    probabilities, true_labels = predict_labelled(model, data, predict)
    if examples is not None and len(examples) != len(true_labels):
        raise CookbookError(f"{len(examples)} examples given for {len(true_labels)} predictions.")
    predicted = probabilities.argmax(axis=1)
    scores = classification_scores(true_labels, predicted, class_names)
    errors = []
    for index in most_confident_errors(probabilities, true_labels, error_count):
        errors.append({
            "example": examples[index] if examples is not None else index,
            "true_class": class_names[true_labels[index]],
            "predicted_class": class_names[predicted[index]],
            "confidence": float(probabilities[index, predicted[index]]),
        })
    result = {**dataclasses.asdict(scores), "examples": int(len(true_labels)),
              "most_confident_errors": errors}
    write_json(os.path.join(directory, "evaluation.json"), result)
    plot_confusion_matrix(scores, os.path.join(directory, "confusion_matrix.png"),
                          title=f"{title}: confusion matrix")
    figures = ["confusion_matrix.png"]
    if kind == "image" and errors and examples is not None and load_example is not None:
        plot_image_grid(
            [load_example(error["example"]) for error in errors],
            [f"true {e['true_class']}, said {e['predicted_class']}\n"
             f"({e['confidence']:.0%}) {os.path.basename(str(e['example']))}" for e in errors],
            os.path.join(directory, "most_confident_errors.png"),
            title=f"{title}: most confidently wrong")
        figures.append("most_confident_errors.png")
    if grad_cam is not None:
        overlays, captions = grad_cam
        plot_image_grid(overlays, captions, os.path.join(directory, "grad_cam.png"),
                        title=f"{title}: Grad-CAM (where the model looked)")
        figures.append("grad_cam.png")
    _write_markdown(result, figures, kind, os.path.join(directory, "report.md"), title)
    return result


def _write_markdown(result: dict, figures: list[str], kind: str, path: str, title: str):
    lines = [f"# {title}", "",
             f"Accuracy **{result['accuracy']:.4f}** on {result['examples']} examples; "
             f"balanced accuracy {result['balanced_accuracy']:.4f}; macro F1 "
             f"{result['macro']['f1']:.4f}. Numbers: [evaluation.json](evaluation.json).",
             "", "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    for name, scores in result["per_class"].items():
        lines.append(f"| {name} | {scores['precision']:.3f} | {scores['recall']:.3f} | "
                     f"{scores['f1']:.3f} | {scores['support']} |")
    lines.append("")
    for figure in figures:
        lines += [f"![{figure[:-4].replace('_', ' ')}]({figure})", ""]
    if kind == "text" and result["most_confident_errors"]:
        lines += ["## Most confidently wrong", "", "| confidence | true | predicted | text |",
                  "| --- | --- | --- | --- |"]
        for error in result["most_confident_errors"]:
            text = str(error["example"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {error['confidence']:.0%} | {error['true_class']} | "
                         f"{error['predicted_class']} | {text[:200]} |")
        lines.append("")
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines))


def image_evaluation_report(
    model: keras.Model,
    images,
    data: Iterable,
    directory: str | os.PathLike,
    title: str = "Evaluation",
    seed: int = 0,
    predict=None,
) -> dict:
    """`evaluation_report` for an image classifier, with Grad-CAM (TensorFlow backend).

    Grad-CAM heat maps on the model's last convolutional block come with three photos
    of each class, picked by a ``seed``-ed draw (none when the model has no nested
    convolutional backbone to explain, e.g. an opaque TF-Hub module).

    Args:
        model: The trained classifier (takes 0..255 RGB images).
        images: The evaluated `templates.data.images.ImageFiles` (paths, labels, names).
        data: Its batches, not shuffled (e.g. `templates.data.images.image_dataset`).
        directory: Output folder.
        title: Title prefix of the plots.
        seed: Seeds the choice of Grad-CAM photos.
        predict: How to get a batch's probabilities (see `predict_labelled`).
    """
    from templates.data.decoded_images import load_image
    from templates.reports.grad_cam import grad_cam_overlays

    size = tuple(int(side) for side in model.input_shape[1:3])
    draw = np.random.default_rng(seed)
    labels = np.asarray(images.labels)
    picks = [int(index) for label in range(len(images.class_names))
             for index in draw.permutation(np.flatnonzero(labels == label))[:3]]
    photos = np.stack([load_image(images.files[index], size) for index in picks])
    try:
        overlays = grad_cam_overlays(model, photos.astype("float32"), images.class_names,
                                     [images.labels[index] for index in picks])
    except ValueError as error:  # no convolutional backbone to explain
        print(f"Grad-CAM skipped: {error}")
        overlays = None
    return evaluation_report(
        model, data, images.class_names, directory, examples=images.files,
        load_example=lambda path: load_image(path, size), title=title, grad_cam=overlays,
        predict=predict)


def predict_multi_label(model: keras.Model, data: Iterable, predict=None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, multi-hot targets)`` over batches of ``(inputs, targets)``."""
    predict = predict or batch_predictor(model)
    probabilities, targets = [], []
    for inputs, batch_targets in data:
        probabilities.append(np.asarray(keras.ops.convert_to_numpy(predict(inputs))))
        targets.append(np.asarray(keras.ops.convert_to_numpy(batch_targets)))
    if not probabilities:
        raise CookbookError("Cannot evaluate: the data yielded no batches.")
    return np.concatenate(probabilities), np.concatenate(targets).astype("float32")


def multi_label_report(model: keras.Model, data: Iterable, class_names: Sequence[str],
                       directory: str | os.PathLike, thresholds: Sequence[float],
                       examples: Sequence[str] | None = None, title: str = "Evaluation",
                       predict=None) -> dict[str, Any]:
    """The multi-label evaluation folder: ``evaluation.json`` (`multi_label_scores`,
    and the examples with the most labels wrong) and ``report.md``. Returns the scores."""
    probabilities, targets = predict_multi_label(model, data, predict)
    scores = multi_label_scores(probabilities, targets, thresholds, class_names)
    predicted = probabilities >= np.asarray(thresholds)[None, :]
    wrong = (predicted != targets.astype(bool)).sum(axis=1)
    order = [int(i) for i in np.argsort(-wrong, kind="stable") if wrong[i]][:9]
    names = np.asarray(class_names)
    scores["errors"] = [{
        "example": examples[i] if examples is not None else i,
        "true": names[targets[i].astype(bool)].tolist(),
        "predicted": names[predicted[i]].tolist()} for i in order]
    directory = os.fspath(directory)
    write_json(os.path.join(directory, "evaluation.json"), scores)
    lines = [f"# {title}", "", f"{scores['examples']} examples; exact match "
             f"{scores['exact_match']:.3f}, micro F1 {scores['micro']['f1']:.3f}, macro F1 "
             f"{scores['macro']['f1']:.3f}, mean average precision "
             f"{scores['mean_average_precision'] or 0:.3f}.", "",
             "| label | threshold | precision | recall | F1 | AP | support |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in scores["per_label"].items():
        precision = "n/a" if row["average_precision"] is None else f"{row['average_precision']:.3f}"
        lines.append(f"| {name} | {row['threshold']:.2f} | {row['precision']:.3f} | "
                     f"{row['recall']:.3f} | {row['f1']:.3f} | {precision} | "
                     f"{row['support']} |")
    if scores["errors"]:
        lines += ["", "Examples with the most labels wrong:", ""]
        lines += [f"- {error['example']}: true {error['true']}, predicted "
                  f"{error['predicted']}" for error in scores["errors"]]
    write_text(os.path.join(directory, "report.md"), "\n".join(lines) + "\n")
    return scores


def multi_label_evaluation(model: keras.Model, validation: Iterable, data: Iterable,
                           class_names: Sequence[str], output_dir: str | os.PathLike,
                           examples: Sequence[str] | None = None, title: str = "Evaluation",
                           predict=None) -> dict[str, Any]:
    """What a recipe does for a multi-label model after training: each label's threshold
    chosen on ``validation`` (best F1; `templates.data.multi_label.choose_thresholds`) and
    saved as ``OUTPUT_DIR/thresholds.json`` for `templates.export.predictor.Predictor`, then
    `multi_label_report` on ``data`` into ``OUTPUT_DIR/evaluation``."""
    from templates.data.multi_label import choose_thresholds, write_thresholds

    thresholds = choose_thresholds(*predict_multi_label(model, validation, predict))
    write_thresholds(thresholds, class_names, output_dir)
    return multi_label_report(model, data, class_names, os.path.join(output_dir, "evaluation"),
                              thresholds, examples=examples, title=title, predict=predict)


def evaluation_summary(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an evaluation report, for ``metrics.json``: accuracy,
    macro F1 and balanced accuracy (single-label), or exact match, micro and macro F1
    and the mean average precision (multi-label)."""
    if "exact_match" in evaluation:
        return {"exact_match": evaluation["exact_match"],
                "micro_f1": evaluation["micro"]["f1"], "macro_f1": evaluation["macro"]["f1"],
                "mean_average_precision": evaluation["mean_average_precision"]}
    return {"accuracy": evaluation["accuracy"], "macro_f1": evaluation["macro"]["f1"],
            "balanced_accuracy": evaluation["balanced_accuracy"]}


def scan_evaluation_report(model: keras.Model, images: np.ndarray, labels: np.ndarray,
                           class_names: Sequence[str], directory: str | os.PathLike,
                           title: str, value_range: float = 16.0, grad_cam_count: int = 6,
                           batch_size: int = 512, predict=None) -> dict:
    """`evaluation_report` for small grey-level scans held in an array (such as
    scikit-learn's 8x8 digits, values ``0..value_range``): the errors shown as RGB
    images, Grad-CAM on the first ``grad_cam_count`` scans (0: none); ``predict`` as in
    `evaluation_report` (e.g. `templates.training.multi_worker.local_predict`)."""
    from templates.data.batches import array_batches
    from templates.reports.grad_cam import grad_cam_heatmaps, overlay

    def as_rgb(name):  # "test_12" -> the scan as a 0..255 RGB image
        scan = images[int(name.split("_")[1])]
        return np.repeat(scan * (255.0 / value_range), 3, axis=-1)

    grad_cam = None
    if grad_cam_count:
        heatmaps, probabilities = grad_cam_heatmaps(model, images[:grad_cam_count])
        overlays = [overlay(as_rgb(f"test_{index}"), heatmap)
                    for index, heatmap in enumerate(heatmaps)]
        captions = [f"true {class_names[label]}, said {class_names[row.argmax()]} "
                    f"({row.max():.0%})"
                    for label, row in zip(labels[:grad_cam_count], probabilities)]
        grad_cam = (overlays, captions)
    return evaluation_report(
        model, array_batches(images, labels, batch_size=batch_size, shuffle=False),
        class_names, directory, examples=[f"test_{index}" for index in range(len(images))],
        load_example=as_rgb, title=title, grad_cam=grad_cam, predict=predict)


def evaluate_run(model: keras.Model, splits: Any, validation: Iterable, test: Iterable | None,
                 output_dir: str | os.PathLike, title: str, seed: int = 0,
                 multi_label: bool = False, scored_model: keras.Model | None = None,
                 predict=None) -> dict[str, Any]:
    """A run's evaluation folder, ``OUTPUT_DIR/evaluation``, on the test set (or the
    validation set when there is none), for images and texts alike: per-class scores,
    the confusion matrix, the most confidently wrong examples (and Grad-CAM for
    images); with ``multi_label``, per-label thresholds chosen on validation.

    Args:
        model: The trained model (Grad-CAM reads its layers).
        splits: The recipe's `templates.data.images.ImageSplits` or
            `templates.data.texts.TextSplits` (examples and class names).
        validation, test: Their batches (``test`` ``None``: no test set).
        scored_model: What is scored, when it differs from ``model`` (e.g. the
            `templates.models.flip_averaging.flip_averaged` model users get).
        predict: A batch predictor (default: ``scored_model``'s, or
            `templates.training.multi_worker.local_predict` on several machines).

    Returns:
        The headline figures for metrics.json (`evaluation_summary`) and ``set``.
    """
    scored_model = scored_model or model
    evaluated, data = (splits.test, test) if splits.test else (splits.validation, validation)
    texts = getattr(evaluated, "texts", None)
    examples = texts if texts is not None else evaluated.files
    if multi_label:
        report = multi_label_evaluation(scored_model, validation, data, splits.class_names,
                                        output_dir, examples, title, predict=predict)
    else:
        folder = os.path.join(os.fspath(output_dir), "evaluation")
        predict = predict or batch_predictor(scored_model)
        report = (evaluation_report(model, data, splits.class_names, folder, examples=texts,
                                    kind="text", title=title, predict=predict)
                  if texts is not None else
                  image_evaluation_report(model, evaluated, data, folder, title, seed=seed,
                                          predict=predict))
    return {"set": "test" if splits.test else "validation", **evaluation_summary(report)}
