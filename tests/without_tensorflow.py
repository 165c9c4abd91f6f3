"""Run a module or script with TensorFlow refused at import, as on a machine without it.

    python tests/without_tensorflow.py -m recipes.cats_vs_dogs --data-dir ...
    python tests/without_tensorflow.py -c "import keras; ..."
    python tests/without_tensorflow.py tests/inject_fault.py POINT recipes.cats_vs_dogs ...

Every `sys.meta_path` finder is wrapped so that it does not see ``tensorflow`` (nor
the packages that are TensorFlow underneath: ``tensorflow_hub``, ``tensorflow_text``,
``tf_keras``) before anything else is imported: ``import tensorflow`` fails with
ModuleNotFoundError and ``importlib.util.find_spec("tensorflow")`` is ``None``, exactly
as on a JAX- or PyTorch-only machine, so code that leans on TensorFlow by accident fails
here. The tests run the
recipes through it on the JAX backend.
"""

from __future__ import annotations

import importlib.abc
import os
import runpy
import sys

REFUSED = ("tensorflow", "tensorflow_hub", "tensorflow_text", "tf_keras")


class WithoutTensorFlow(importlib.abc.MetaPathFinder):
    """A finder that finds what ``finder`` finds, except TensorFlow's packages."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFUSED:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None

    def invalidate_caches(self):
        if hasattr(self.finder, "invalidate_caches"):
            self.finder.invalidate_caches()


def hide_tensorflow() -> None:
    """Make TensorFlow's packages unimportable in this process."""
    for name in [name for name in sys.modules if name.split(".")[0] in REFUSED]:
        del sys.modules[name]
    sys.meta_path[:] = [WithoutTensorFlow(finder) for finder in sys.meta_path]


def main() -> None:
    hide_tensorflow()
    if len(sys.argv) >= 2 and sys.argv[1].endswith(".py"):  # a script, as python SCRIPT
        sys.argv = sys.argv[1:]
        sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
        runpy.run_path(sys.argv[0], run_name="__main__")
        return
    if len(sys.argv) < 3 or sys.argv[1] not in ("-m", "-c"):
        raise SystemExit("usage: without_tensorflow.py -m MODULE [ARGS...] | -c CODE | "
                         "SCRIPT.py [ARGS...]")
    mode, target, arguments = sys.argv[1], sys.argv[2], sys.argv[3:]
    if mode == "-c":
        sys.argv = ["-c", *arguments]
        exec(compile(target, "<without_tensorflow -c>", "exec"), {"__name__": "__main__"})
        return
    sys.argv = [target, *arguments]
    runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
