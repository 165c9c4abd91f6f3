"""SavedModel and TensorFlow Lite export (TensorFlow-only module)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.files import atomic_path
from templates.training.saving import write_labels


def export_saved_model(
    model: keras.Model, directory: str | os.PathLike, class_names: Sequence[str] | None = None
) -> str:
    """Export ``model`` as a TensorFlow SavedModel (for TF Serving, TFLite conversion...).

    The export is built in a temporary folder and moved into place only when complete,
    and ``labels.txt`` is written inside it so the class names travel with the model.

    Returns:
        The export directory.
    """
    if keras.backend.backend() != "tensorflow":
        raise CookbookError(
            "SavedModel export needs the TensorFlow backend (KERAS_BACKEND=tensorflow); "
            f"the current backend is {keras.backend.backend()!r}."
        )
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
    try:
        target = os.path.join(staging, "model")
        # A model that is not a functional graph names what it serves
        # (`templates.models.text_encoders.TextPipelineClassifier`: a batch of strings).
        model.export(target, format="tf_saved_model", verbose=False,
                     input_signature=getattr(model, "serving_signature", None))
        if class_names is not None:
            write_labels(class_names, os.path.join(target, "labels.txt"))
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.replace(target, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


TFLITE_MODES = ("float32", "dynamic", "float16", "int8")


def export_tflite(
    model: keras.Model, directory: str | os.PathLike, class_names: Sequence[str] | None = None,
    mode: str = "float32", representative_data=None, filename: str = "model.tflite",
    calibration_examples: int = 200,
) -> str:
    """Convert ``model`` to TensorFlow Lite: ``DIRECTORY/FILENAME`` + ``labels.txt``.

    The conversion goes through a SavedModel export, with built-in TFLite ops only, so
    the file runs on any TFLite / LiteRT interpreter. Models taking strings are refused:
    a text vectoriser's string ops would need the Flex delegate, which the ``tensorflow``
    pip package's interpreter no longer links. Export the model on token ids instead
    and ship the vocabulary (the text recipe does).

    Args:
        mode: ``"float32"`` (no quantisation), ``"dynamic"`` (weights stored as int8,
            computed in float), ``"float16"`` (weights stored as float16) or ``"int8"``
            (full-integer weights and activations, calibrated on
            ``representative_data``; the model still takes and returns float values).
        representative_data: For ``"int8"``: batches of ``(inputs, labels)`` (e.g. the
            training batches); the activation ranges of their first
            ``calibration_examples`` examples set the quantisation.
        calibration_examples: How many examples calibrate ``"int8"``.

    Returns:
        The path of the ``.tflite`` file.
    """
    import tensorflow as tf

    if mode not in TFLITE_MODES:
        raise CookbookError(f"Unknown TFLite mode {mode!r}; choose from {', '.join(TFLITE_MODES)}.")
    if mode == "int8" and representative_data is None:
        raise CookbookError("TFLite mode 'int8' needs representative_data (e.g. the training "
                            "batches) to calibrate the activations' ranges.")
    if "string" in str(model.inputs[0].dtype):
        raise CookbookError(
            f"{model.name} takes strings; TFLite's built-in ops cannot run a text "
            "vectoriser. Export the model on token ids and ship its vocabulary.")
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-tflite-", dir=directory)
    try:
        saved_model = export_saved_model(model, os.path.join(staging, "saved_model"))
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if mode != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            dtype = model.inputs[0].dtype

            def representative():
                count = 0
                for inputs, _ in representative_data:
                    for example in np.asarray(inputs):
                        if count == calibration_examples:
                            return
                        count += 1
                        yield [np.asarray([example], dtype=str(dtype).replace("tf.", ""))]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        content = converter.convert()
        path = os.path.join(directory, filename)
        with atomic_path(path, suffix=".tflite") as temporary:
            with open(temporary, "wb") as handle:
                handle.write(content)
        if class_names is not None:
            write_labels(class_names, os.path.join(directory, "labels.txt"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def tflite_accuracy(path: str | os.PathLike, batches) -> float:
    """Accuracy of a ``.tflite`` classifier on ``(inputs, labels)`` batches, run by the
    TFLite interpreter (what a device computes, quantisation included). Multi-hot labels
    (a multi-label model) are scored by exact match at 0.5, as in training."""
    correct = total = 0
    for inputs, labels in batches:
        probabilities = tflite_predict(path, np.asarray(inputs))
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] > 1:
            correct += int(np.sum(((probabilities >= 0.5) == (labels > 0.5)).all(axis=1)))
        else:
            labels = labels.reshape(-1)
            correct += int(np.sum(probabilities.argmax(axis=-1) == labels))
        total += len(labels)
    if total == 0:
        raise CookbookError("Cannot compute an accuracy: the data yielded no examples.")
    return correct / total


def tflite_predict(path: str | os.PathLike, inputs) -> np.ndarray:
    """Run a ``.tflite`` model on a batch (one example at a time); return its outputs."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=os.fspath(path))
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(input_detail["index"], [1, *np.shape(inputs)[1:]])
    interpreter.allocate_tensors()
    outputs = []
    for example in inputs:
        interpreter.set_tensor(input_detail["index"],
                               np.asarray([example], dtype=input_detail["dtype"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_detail["index"])[0])
    return np.stack(outputs)
