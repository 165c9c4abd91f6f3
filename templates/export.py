"""SavedModel and TensorFlow Lite export (TensorFlow-only module)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence

import keras
import numpy as np

from templates.files import atomic_path
from templates.saving import write_labels


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
        raise ValueError(
            "SavedModel export needs the TensorFlow backend (KERAS_BACKEND=tensorflow); "
            f"the current backend is {keras.backend.backend()!r}."
        )
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
    try:
        target = os.path.join(staging, "model")
        model.export(target, format="tf_saved_model", verbose=False)
        if class_names is not None:
            write_labels(class_names, os.path.join(target, "labels.txt"))
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.replace(target, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def export_tflite(
    model: keras.Model, directory: str | os.PathLike, class_names: Sequence[str] | None = None
) -> str:
    """Convert ``model`` to TensorFlow Lite: ``DIRECTORY/model.tflite`` + ``labels.txt``.

    The conversion goes through a SavedModel export, with built-in TFLite ops only, so
    the file runs on any TFLite / LiteRT interpreter. Models taking strings are refused:
    a text vectoriser's string ops would need the Flex delegate, which the ``tensorflow``
    pip package's interpreter no longer links. Export the model on token ids instead
    and ship the vocabulary (the text recipe does).

    Returns:
        The path of ``model.tflite``.
    """
    import tensorflow as tf

    if "string" in str(model.inputs[0].dtype):
        raise ValueError(
            f"{model.name} takes strings; TFLite's built-in ops cannot run a text "
            "vectoriser. Export the model on token ids and ship its vocabulary.")
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-tflite-", dir=directory)
    try:
        saved_model = export_saved_model(model, os.path.join(staging, "saved_model"))
        content = tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()
        path = os.path.join(directory, "model.tflite")
        with atomic_path(path, suffix=".tflite") as temporary:
            with open(temporary, "wb") as handle:
                handle.write(content)
        if class_names is not None:
            write_labels(class_names, os.path.join(directory, "labels.txt"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


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
