"""SavedModel export for serving (TensorFlow-only module)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence

import keras

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
