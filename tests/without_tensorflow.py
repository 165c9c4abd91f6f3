"""Run a module or script with TensorFlow refused at import, as on a machine without it.

    python tests/without_tensorflow.py -m recipes.cats_vs_dogs --data-dir ...
    python tests/without_tensorflow.py -c "import keras; ..."

A `sys.meta_path` finder refuses ``tensorflow`` (and the packages that are TensorFlow
underneath: ``tensorflow_hub``, ``tensorflow_text``, ``tf_keras``) before anything else
is imported, so code that leans on TensorFlow by accident fails here with
ModuleNotFoundError, as it would on a JAX- or PyTorch-only machine. The tests run the
recipes through it on the JAX backend.
"""

from __future__ import annotations

import importlib.abc
import runpy
import sys

REFUSED = ("tensorflow", "tensorflow_hub", "tensorflow_text", "tf_keras")


class RefuseTensorFlow(importlib.abc.MetaPathFinder):
    """Refuse to import TensorFlow and the packages built on it."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"No module named {name!r} (TensorFlow is blocked: "
                                      "tests/without_tensorflow.py)", name=name)
        return None


def main() -> None:
    sys.meta_path.insert(0, RefuseTensorFlow())
    if len(sys.argv) < 3 or sys.argv[1] not in ("-m", "-c"):
        raise SystemExit("usage: without_tensorflow.py -m MODULE [ARGS...] | -c CODE")
    mode, target, arguments = sys.argv[1], sys.argv[2], sys.argv[3:]
    if mode == "-c":
        sys.argv = ["-c", *arguments]
        exec(compile(target, "<without_tensorflow -c>", "exec"), {"__name__": "__main__"})
        return
    sys.argv = [target, *arguments]
    runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
