"""Run a recipe and kill its process (``os._exit``, no clean-up) at one named boundary.

    python tests/inject_fault.py POINT recipes.cats_vs_dogs ARGS...

POINT is one of `POINTS`. The process ends with exit status 9 at that point, as a
SIGKILL would leave it: no ``finally`` block, no atexit handler, files half written
stay as they are. A run that never reaches the point finishes normally (status 0).
"""

from __future__ import annotations

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


def kill() -> None:
    sys.stdout.flush()
    os._exit(9)


def inject(point: str) -> None:
    if point not in POINTS:
        raise SystemExit(f"unknown fault point {point!r}; choose from {POINTS}")
    phase, _, moment = point.partition(".")
    if point == "features.mid_extraction":
        original_append = feature_store.FeatureStore.append
        appended = [0]

        def append(self, rows):
            original_append(self, rows)
            appended[0] += 1
            if appended[0] == 6:
                kill()

        feature_store.FeatureStore.append = append
    elif moment == "mid_epoch":
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
    elif moment == "before_done" or point == "between_phases":
        original_finish = checkpoints.TrainingState.finish
        target = "head" if point == "between_phases" else phase

        def finish(self, name, model, history=None):
            if name == target and point != "between_phases":
                kill()
            original_finish(self, name, model, history)
            if name == target:
                kill()

        checkpoints.TrainingState.finish = finish
    elif point == "outputs":
        def export_saved_model(*args, **kwargs):
            kill()

        export.export_saved_model = export_saved_model


if __name__ == "__main__":
    point, module, *arguments = sys.argv[1:]
    inject(point)
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
