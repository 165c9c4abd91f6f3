"""The files every recipe writes for a trained model, written one way.

`write_model_outputs` writes ``history.json`` and ``learning_curves.png`` (both phases,
the fine-tuning start marked), ``model.keras`` (preprocessing inside, loadable in safe
mode), ``labels.txt``, ``vocabulary.txt`` for a text model (line ``i`` is token id ``i``: what
the predictor tokenises with where the model takes token ids, off TensorFlow),
``saved_model/`` for serving (TensorFlow backend only; elsewhere
it says so) and, on request, ``tflite/``. Each file is written atomically, so a run killed while writing leaves the
previous file or none, never half of one; a resumed run writes them all again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras

from templates.data.errors import CookbookError
from templates.data.files import write_json, write_text
from templates.data.tokenizer_file import TOKENIZER_FILE
from templates.data.vocabulary import VOCABULARY_FILE
from templates.reports.curves import plot_learning_curves
from templates.training.saving import save_model, write_labels


def write_model_outputs(
    output_dir: str | os.PathLike,
    model: keras.Model,
    class_names: Sequence[str],
    history: dict[str, Any],
    title: str,
    tflite_model: keras.Model | None = None,
    tflite_modes: Sequence[str] = ("float32",),
    representative_data=None,
    test=None,
    vocabulary: Sequence[str] | None = None,
    tokenizer=None,
) -> dict[str, dict[str, float]]:
    """Write a trained model's outputs to ``output_dir`` (see the module docstring).

    Args:
        output_dir: The recipe's output folder.
        model: What users load: it takes raw inputs (0..255 images, strings).
        class_names: Label ``i`` is ``class_names[i]``.
        history: `templates.training.run.TransferRun.history`.
        title: The learning curves' title.
        tflite_model: Also export this model to ``tflite/`` (with ``labels.txt``);
            for text, the token-id model (TFLite cannot run the vectoriser).
        tflite_modes: `templates.export.formats.TFLITE_MODES` to export: float32 as
            ``model.tflite``, the others as ``model_MODE.tflite``.
        representative_data: Training batches that calibrate the ``int8`` export.
        test: Batches of ``(inputs, labels)`` each TFLite model is scored on.
        vocabulary: A text model's tokens (line i = id i): written as
            ``vocabulary.txt``, and beside a TFLite model as ``tflite/vocabulary.txt``.
        tokenizer: A transformer's `templates.data.tokenizer_file.TokenizerFile`, for a
            model on token ids (JAX, PyTorch): written as ``tokenizer.json``.

    Returns:
        ``{mode: {"megabytes": ..., "test_accuracy": ...}}`` for the TFLite exports
        (the accuracy run by the TFLite interpreter; absent without ``test``).
    """
    output_dir = os.fspath(output_dir)
    write_json(os.path.join(output_dir, "history.json"), history)
    plot_learning_curves(history, os.path.join(output_dir, "learning_curves.png"), title=title)
    save_model(model, os.path.join(output_dir, "model.keras"))
    write_labels(list(class_names), os.path.join(output_dir, "labels.txt"))
    if vocabulary is not None:
        write_text(os.path.join(output_dir, VOCABULARY_FILE), "\n".join(vocabulary) + "\n")
    if tokenizer is not None:
        tokenizer.save(os.path.join(output_dir, TOKENIZER_FILE))
    exported: dict[str, dict[str, float]] = {}
    if keras.backend.backend() != "tensorflow":
        print(f"saved_model/ not written: SavedModel is TensorFlow's format and the Keras "
              f"backend is {keras.backend.backend()}; model.keras serves on every backend.")
        if tflite_model is not None:
            raise CookbookError(
                f"--export-tflite needs the TensorFlow backend; the Keras backend is "
                f"{keras.backend.backend()} (run with KERAS_BACKEND=tensorflow).")
        return exported
    from templates.export.formats import export_saved_model, export_tflite, tflite_accuracy

    export_saved_model(model, os.path.join(output_dir, "saved_model"), list(class_names))
    if tflite_model is None:
        return exported

    for mode in tflite_modes:
        path = export_tflite(tflite_model, os.path.join(output_dir, "tflite"), list(class_names),
                             mode=mode, representative_data=representative_data,
                             filename="model.tflite" if mode == "float32" else f"model_{mode}.tflite")
        exported[mode] = {"megabytes": round(os.path.getsize(path) / 2**20, 3)}
        if test is not None:
            exported[mode]["test_accuracy"] = tflite_accuracy(path, test)
    if vocabulary is not None:
        write_text(os.path.join(output_dir, "tflite", "vocabulary.txt"),
                   "\n".join(vocabulary) + "\n")
    return exported
