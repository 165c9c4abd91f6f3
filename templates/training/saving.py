"""Saving and loading models and their labels (plain Keras 3, any backend)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence

import keras

from templates.data.class_names import check_class_names
from templates.data.errors import CookbookError
from templates.data.files import atomic_path, write_text


def save_model(model: keras.Model, path: str | os.PathLike) -> str:
    """Save ``model`` in the native ``.keras`` format, atomically.

    Returns:
        The path written.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise CookbookError(f"Keras 3 saves whole models to '.keras' files; got {path!r}.")
    with atomic_path(path, suffix=".keras") as temporary:
        model.save(temporary)
    return path


def load_model(path: str | os.PathLike, safe_mode: bool = True) -> keras.Model:
    """Load a ``.keras`` model saved by this library (or any Keras 3 model).

    ``safe_mode=True`` (the default) refuses models whose config carries arbitrary
    Python code, such as a `Lambda` layer's bytecode: loading one runs that code. Only
    pass ``safe_mode=False`` for files you made or trust.
    """
    # Importing the custom layers registers them for deserialisation.
    import templates.data.multi_label  # noqa: F401  (exact-match accuracy)
    import templates.models.embeddings  # noqa: F401
    import templates.models.flip_averaging  # noqa: F401  (flip averaging)
    import templates.models.preprocessing  # noqa: F401
    import templates.training.optimizers  # noqa: F401  (discriminative optimisers)
    import templates.training.schedules  # noqa: F401  (warm-up + cosine, one-cycle)
    import templates.training.losses  # noqa: F401  (label smoothing on integer labels)
    import templates.training.metrics  # noqa: F401  (metrics a --monitor compiled in)

    try:  # TensorFlow-only objects: text standardisation, TF-Hub layers, text encoders.
        import templates.data.texts  # noqa: F401
        import templates.models.text_encoders  # noqa: F401
        import templates.models.tfhub  # noqa: F401
    except ImportError:
        pass

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CookbookError(f"Model file {path!r} does not exist.")
    if not zipfile.is_zipfile(path):
        raise CookbookError(
            f"{path} is not a Keras model file: a .keras file is a zip archive, and this "
            f"one ({os.path.getsize(path)} bytes) is not (empty, cut short or another "
            f"format); write it again (a recipe run: rerun it with --resume).")
    try:
        return keras.saving.load_model(path, safe_mode=safe_mode)
    except Exception as error:
        # A model built on a keras-hub preset: importing keras-hub registers its layers
        # (imported only then: it takes seconds).
        if "keras_hub" not in str(error):
            raise
        import keras_hub  # noqa: F401

        return keras.saving.load_model(path, safe_mode=safe_mode)


def write_labels(class_names: Sequence[str], path: str | os.PathLike) -> str:
    """Write class names, one per line in label order, atomically."""
    names = check_class_names(class_names, os.fspath(path))
    write_text(path, "\n".join(names) + "\n")
    return os.fspath(path)


def read_labels(path: str | os.PathLike) -> list[str]:
    """Read a labels file written by `write_labels`."""
    with open(path, encoding="utf-8") as handle:
        names = [line.rstrip("\n") for line in handle if line.strip()]
    if not names:
        raise CookbookError(f"Labels file {os.fspath(path)!r} holds no class names.")
    return names
