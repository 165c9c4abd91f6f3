"""Run a recipe and kill its process (``os._exit``, no clean-up) at one named boundary,
or fill its disk there.

    python tests/inject_fault.py POINT recipes.cats_vs_dogs ARGS...

POINT is one of `POINTS`, or ``SITE@N``: the ``N``-th time this process passes ``SITE``
(one of `SITES`, counted from this process's start). The process ends with exit status 9
at that point, as a SIGKILL would leave it: no ``finally`` block, no atexit handler,
files half written stay as they are. ``full:SITE@N`` instead fills the disk there: every
later write (Python's ``open``, ``os.replace``, h5py, NumPy memory maps) fails with
``ENOSPC``, and the run must end in one sentence. A run that never reaches the point
finishes normally (status 0).
"""

from __future__ import annotations

import errno
import os
import runpy
import sys

import templates.data.feature_store as feature_store
import templates.export.formats as export
import templates.training.checkpoints as checkpoints

POINTS = (
    "features.mid_extraction", # the frozen backbone has computed 6 batches of features
    "head.mid_epoch",          # during the head's second epoch, after its first batch
    "head.before_done",        # the head's epochs all ended; the phase is not yet marked done
    "between_phases",          # the head is marked done; fine-tuning has not started
    "fine_tune.mid_epoch",
    "fine_tune.before_done",
    "outputs",                 # model.keras is written; the SavedModel and metrics.json are not
)


# Boundaries a run passes, in the order it passes them (see `inject_at`).
SITES = (
    "decoding",          # one photo decoded (into OUTPUT_DIR/cache with --cache-memory-gb 0)
    "features",          # one batch of frozen-backbone features stored
    "finder",            # one step of a learning-rate sweep
    "head.batch",        # one training batch of the head phase
    "head.epoch",        # one head epoch ended (its history and backup written)
    "head.before_done",  # the head's epochs all ended; the phase is not yet marked done
    "between_phases",    # the head is marked done; fine-tuning has not started
    "fine_tune.batch",
    "fine_tune.epoch",
    "fine_tune.before_done",
    "outputs.model",     # model.keras is written; the SavedModel is not
    "outputs.evaluation",  # the evaluation folder is being written
    "outputs.metrics",   # everything but metrics.json is written
)


def kill() -> None:
    sys.stdout.flush()
    os._exit(9)


def fill_disk() -> None:
    """From now on every write fails as on a full disk."""
    import builtins

    import h5py

    def full(name=""):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(name))

    original_open = builtins.open

    def open_(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            raise full(file)
        return original_open(file, mode, *args, **kwargs)

    def replace(source, destination, *args, **kwargs):
        raise full(destination)

    original_h5 = h5py.File.__init__

    def h5_init(self, name, mode="r", *args, **kwargs):
        if mode != "r":
            raise full(name)
        original_h5(self, name, mode, *args, **kwargs)

    builtins.open = open_
    os.replace = replace
    h5py.File.__init__ = h5_init


def inject_at(site: str, count: int, action) -> None:
    """Call ``action`` the ``count``-th time this process passes ``site``."""
    import threading

    import templates.data.decoded_images as decoded_images
    import templates.training.finder as finder

    passed = [0]
    guard = threading.Lock()

    def passing() -> None:
        with guard:
            passed[0] += 1
            if passed[0] == count:
                action()

    def after(owner, name, condition=lambda *args, **kwargs: True):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            result = original(*args, **kwargs)
            if condition(*args, **kwargs):
                passing()
            return result

        setattr(owner, name, wrapped)

    phase, _, moment = site.partition(".")
    if site == "decoding":
        after(decoded_images, "load_image")
    elif site == "features":
        after(feature_store.FeatureStore, "append")
    elif site == "finder":
        after(finder._SweepLearningRate, "on_train_batch_end")
    elif moment in ("batch", "epoch"):
        hook = "on_train_batch_end" if moment == "batch" else "on_epoch_end"
        after(checkpoints.PhaseHistory, hook,
              lambda self, *args, **kwargs: self.path.endswith(f"{phase}.epochs.json"))
    elif moment == "before_done" or site == "between_phases":
        original_finish = checkpoints.TrainingState.finish
        target = "head" if site == "between_phases" else phase

        def finish(self, name, model, history=None):
            if name == target and site != "between_phases":
                passing()
            original_finish(self, name, model, history)
            if name == target and site == "between_phases":
                passing()

        checkpoints.TrainingState.finish = finish
    elif site == "outputs.model":
        original_export = export.export_saved_model

        def export_saved_model(*args, **kwargs):
            passing()
            return original_export(*args, **kwargs)

        export.export_saved_model = export_saved_model
    elif site == "outputs.evaluation":
        import templates.reports.evaluation as evaluation

        after(evaluation, "plot_confusion_matrix")
    elif site == "outputs.metrics":
        import templates.data.files as files

        original_write = files.write_json

        def write_json(path, data):
            if os.fspath(path).endswith("metrics.json"):
                passing()
            return original_write(path, data)

        files.write_json = write_json
    else:
        raise SystemExit(f"unknown fault site {site!r}; choose from {SITES}")


# The named points of earlier tests, as sites of `inject_at` (mid-epoch has its own rule).
NAMED = {"features.mid_extraction": "features@6", "head.before_done": "head.before_done@1",
         "between_phases": "between_phases@1",
         "fine_tune.before_done": "fine_tune.before_done@1", "outputs": "outputs.model@1"}


def inject(point: str) -> None:
    point = NAMED.get(point, point)
    if "@" in point:
        mode, _, point = point.rpartition(":")
        site, _, count = point.partition("@")
        inject_at(site, int(count), fill_disk if mode == "full" else kill)
        return
    if point not in POINTS:
        raise SystemExit(f"unknown fault point {point!r}; choose from {POINTS}")
    phase = point.partition(".")[0]  # POINTS left: the phases' mid-epoch kills
    history = checkpoints.PhaseHistory

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.path.endswith(f"{phase}.epochs.json") and batch >= 1
                and getattr(self, "current_epoch", 0) == self.first_epoch + 1):
            kill()

    original_begin = history.on_train_begin

    def on_train_begin(self, logs=None):
        original_begin(self, logs)
        self.first_epoch = self.epochs[-1]["epoch"] + 1 if self.epochs else 0
        if phase == "fine_tune" and not self.epochs:
            self.first_epoch = None  # fine-tuning counts on from the head's epochs

    def on_epoch_begin_counting(self, epoch, logs=None):
        if getattr(self, "first_epoch", 0) is None:
            self.first_epoch = epoch
        on_epoch_begin(self, epoch, logs)

    history.on_train_begin = on_train_begin
    history.on_epoch_begin = on_epoch_begin_counting
    history.on_train_batch_end = on_train_batch_end


if __name__ == "__main__":
    point, module, *arguments = sys.argv[1:]
    inject(point)
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
