"""What a run ran on: library versions, seed and inputs, recorded in every metrics file."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

from templates.data.files import file_sha256


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or ``None`` if it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_metadata(**details: Any) -> dict[str, Any]:
    """Versions of the stack plus the given run details (backbone, seed, data...).

    A ``weights`` detail that names an existing file also gets its SHA-256 digest.
    """
    import keras

    weights = details.get("weights")
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        details["weights_sha256"] = file_sha256(weights)
    return {
        **details,
        "versions": {
            "transfer-cookbook": package_version("transfer-cookbook"),
            "tensorflow": package_version("tensorflow"),
            "keras": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "jax": package_version("jax"),
            "torch": package_version("torch"),
            "gensim": package_version("gensim"),
            "python": platform.python_version(),
        },
    }
