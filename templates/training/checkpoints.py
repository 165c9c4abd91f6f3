"""Interrupted training loses at most the epoch in progress.

A recipe's training is a sequence of phases (head training, fine-tuning). `TrainingState`
keeps, under one folder:

* for the phase in progress, Keras's `BackupAndRestore` backup (weights, optimiser
  state, epoch; with a second copy, so a kill while writing falls back to the previous
  backup) and a per-epoch history (`PhaseHistory`, written atomically). The backup is
  written at the end of every epoch; with ``backup_overhead`` (for tiny models whose
  epochs are shorter than a backup, see `PacedBackup`) only every few epochs, so a kill
  repeats at most those few epochs (with identical results when a seed is given, see
  below);
* for every finished phase, the model's weights and the phase's history, and a marker.

With ``resume=True`` finished phases are restored instead of retrained, and the phase
in progress continues from its last finished epoch. Without it, old state is cleared
and training starts over.

    state = TrainingState("runs/x/checkpoints", resume=args.resume)
    head_history = run_phase(state, "head", transfer.model,
                             lambda callbacks: train_head(transfer, ..., callbacks=callbacks))

Given a ``seed``, each phase also runs the `templates.training.seeds.EpochSeeds`
callback: epoch ``e``'s data order, dropout masks and augmentation depend only on
``(seed, e)``, so a resumed run ends with the same weights as an uninterrupted one
(on CPU; GPU kernels may add their own nondeterminism).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import keras

from templates.data.errors import CookbookError
from templates.data.files import atomic_path, write_json
from templates.training.run_folder import check_settings
from templates.training.seeds import EpochSeeds


def chief_process() -> bool:
    """Whether this process is the chief of its ``TF_CONFIG`` cluster (or has none)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    if not task:
        return True
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def save_on_every_worker(path: str | os.PathLike, save: Callable[[str], Any]) -> None:
    """Call ``save`` on every process of the run; only the chief's file is kept, at
    ``path`` (written atomically).

    Saving a model reads its variables, which under `MultiWorkerMirroredStrategy` can
    run collective ops that every worker must join (a chief saving alone waits for, or
    crosses, the others' next collective). As TensorFlow's multi-worker guide does, the
    other workers save too, to a temporary folder that is then deleted. On one machine
    this is an atomic save.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    if chief_process():
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        suffix = next((ending for ending in (".weights.h5", ".keras") if name.endswith(ending)),
                      os.path.splitext(name)[1])
        with atomic_path(path, suffix=suffix) as temporary:
            save(temporary)
        return
    folder = tempfile.mkdtemp(prefix="worker-save-")
    try:
        save(os.path.join(folder, name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class PhaseHistory(keras.callbacks.Callback):
    """Writes every finished epoch's logs to a JSON file, keeping earlier epochs.

    On a resumed phase the epochs already in the file are kept, and an epoch that is
    repeated (it ended but its backup did not) replaces its earlier entry.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = os.fspath(path)
        self.epochs: list[dict[str, Any]] = read_epochs(self.path)

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": int(epoch), **{key: float(value) for key, value in (logs or {}).items()}}
        self.epochs = [item for item in self.epochs if item["epoch"] < epoch] + [entry]
        if chief_process():  # on several machines the chief writes the shared file
            write_json(self.path, self.epochs)


class KeepBest(keras.callbacks.Callback):
    """Early stopping that restores the best epoch's weights, and survives restarts.

    After each epoch, if ``monitor`` improved, the weights are saved (atomically) with a
    record of the value and epoch; once ``patience`` epochs pass without improvement,
    training stops. When training ends, the best weights are loaded back. Because the
    record lives on disk, a resumed run keeps the best epoch found before the restart
    (Keras's `EarlyStopping` would forget it).

    Args:
        path: File prefix: ``PATH.weights.h5`` and ``PATH.json`` are written.
        monitor: The logged value to watch (``"val_accuracy"``, ``"val_loss"``...).
        patience: Epochs without improvement before stopping; ``None`` never stops
            early (the best weights are still restored).
        restore: Load the best epoch's weights when training ends; ``False`` keeps the
            last epoch's (early stopping only).
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_accuracy",
                 patience: int | None = None, restore: bool = True):
        super().__init__()
        if patience is not None and patience < 1:
            raise CookbookError(f"patience must be at least 1 (or None); got {patience}.")
        self.path = os.fspath(path)
        self.monitor = monitor
        self.patience = patience
        self.restore = bool(restore)
        self.higher_is_better = "loss" not in monitor
        self.record: dict[str, Any] | None = None
        self.last_epoch: int | None = None
        self.stopped_epoch: int | None = None

    def on_train_begin(self, logs=None):
        record = self.path + ".json"
        self.record = None
        if os.path.isfile(record):
            with open(record, encoding="utf-8") as handle:
                self.record = json.load(handle)

    def _improved(self, value: float) -> bool:
        if self.record is None:
            return True
        best = self.record["value"]
        return value > best if self.higher_is_better else value < best

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch
        value = (logs or {}).get(self.monitor)
        if value is None:
            return  # no validation data: nothing to keep
        value = float(value)
        if self._improved(value):
            with atomic_path(self.path + ".weights.h5", suffix=".weights.h5") as temporary:
                self.model.save_weights(temporary)
            self.record = {"value": value, "epoch": int(epoch)}
            write_json(self.path + ".json", self.record)
        elif self.patience is not None and epoch - self.record["epoch"] >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if (self.restore and self.record is not None
                and self.record["epoch"] != self.last_epoch):
            self.model.load_weights(self.path + ".weights.h5")


_clock = time.perf_counter  # read at each call, so tests can drive the pacing


class PacedBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that keeps its own cost bounded and writes
    from the chief only.

    Keras writes the backup after every epoch. For a tiny model an epoch can take less
    time than the backup itself (about 0.1 s for a 2 MB model with its optimiser
    state), so backups would double the training time. With ``max_overhead``, an
    epoch's backup is skipped when the previous one was written less than
    ``1 / max_overhead`` times its own writing time ago: backups take at most about
    ``max_overhead`` of the training time, and a kill loses at most that interval
    (about 1 s for ``max_overhead=0.1`` and a 0.1 s backup). Epochs longer than that
    are all backed up, as in Keras. The last finished epoch of a phase never needs a
    backup: `TrainingState.finish` records the phase's weights.

    On several machines every worker joins the save (`save_on_every_worker`) and only
    the chief's backup is kept; on a resume every worker reads it.

    Args:
        backup_dir: As for `keras.callbacks.BackupAndRestore`.
        max_overhead: Fraction of training time the backups may take (0 < x <= 1);
            ``None``: every epoch, as Keras.
    """

    def __init__(self, backup_dir: str | os.PathLike, max_overhead: float | None = None):
        if max_overhead is not None and not 0 < max_overhead <= 1:
            raise CookbookError(f"max_overhead must be in (0, 1]; got {max_overhead}.")
        super().__init__(os.fspath(backup_dir), double_checkpoint=True)
        self.max_overhead = max_overhead
        self._written_at: float | None = None
        self._writing_seconds = 0.0

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        now = _clock()
        if (self.max_overhead is not None and self._written_at is not None
                and now - self._written_at < self._writing_seconds / self.max_overhead):
            return
        self._save_model()
        self._written_at = _clock()
        self._writing_seconds = self._written_at - now

    def _save_model(self):
        if chief_process():
            super()._save_model()
        else:  # join the save's collective ops; the chief's backup is the one kept
            save_on_every_worker(self._weights_path, self.model.save_weights)

    def on_train_end(self, logs=None):
        if chief_process():
            super().on_train_end(logs)


# The files a phase (or a saved result) leaves, by ending; what comes before the ending
# is the phase's name, which may itself hold dots ("seed1.transfer.head").
STATE_FILES = ("best.weights.h5", "weights.h5", "done.json", "epochs.json", "best.json",
               "result.json")


def damage(path: str) -> str | None:
    """Why the checkpoint file ``path`` cannot be read (truncated, not HDF5, not JSON),
    or ``None`` when it reads."""
    try:
        if path.endswith(".h5"):
            import h5py

            with h5py.File(path, "r") as handle:
                handle.keys()
        else:
            with open(path, encoding="utf-8") as handle:
                json.load(handle)
    except (OSError, ValueError) as error:
        return " ".join(str(error).split())[:160]
    return None


def discard_damaged(directory: str) -> list[str]:
    """Check every checkpoint file of ``directory``; for a damaged one, remove its
    phase's files (weights, history, marker, backup) so that phase trains again from
    its start, the last state known good. Returns one sentence per damaged file."""
    notes = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        ending = next((end for end in STATE_FILES if name.endswith("." + end)), None)
        if ending is None or not os.path.isfile(path):
            continue
        problem = damage(path)
        if problem is None:
            continue
        phase = name[:-len(ending) - 1]
        for other in os.listdir(directory):
            if other.startswith(phase + "."):
                target = os.path.join(directory, other)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
        notes.append(f"{path} is damaged ({problem}): {phase!r} starts again from its "
                     f"beginning, the last state known good.")
    return notes


def read_epochs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Epoch entries written by `PhaseHistory` (empty when there are none)."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def as_history(epochs: list[dict[str, Any]]) -> keras.callbacks.History:
    """A `keras.callbacks.History` rebuilt from `PhaseHistory` entries."""
    history = keras.callbacks.History()
    history.epoch = [item["epoch"] for item in epochs]
    keys = [key for key in (epochs[0] if epochs else {}) if key != "epoch"]
    history.history = {key: [item[key] for item in epochs] for key in keys}
    return history


class TrainingState:
    """Checkpoints of a multi-phase training run (see the module docstring).

    Args:
        directory: Folder for the state (e.g. ``OUTPUT_DIR/checkpoints``).
        resume: Continue from the state in ``directory``; ``False`` clears it.
        backup_overhead: ``None`` backs up every epoch. A fraction such as ``0.1``
            skips backups while the last one is recent, so they take at most about that
            fraction of the training time (`PacedBackup`): for tiny models whose epochs
            are shorter than a backup.
        settings: What shapes the weights (JSON-ready): recorded in
            ``settings.json`` on a fresh start; a resume with other settings stops,
            naming them (`templates.training.run_folder.check_settings`).
    """

    def __init__(self, directory: str | os.PathLike, resume: bool = False,
                 backup_overhead: float | None = None,
                 settings: dict[str, Any] | None = None):
        if backup_overhead is not None and not 0 < backup_overhead <= 1:
            raise CookbookError(
                f"backup_overhead must be None or in (0, 1]; got {backup_overhead}.")
        self.directory = os.fspath(directory)
        self.resume = bool(resume)
        self.backup_overhead = backup_overhead
        self._reopened: set[str] = set()
        # On several machines sharing the folder, only the chief starts it afresh, and
        # on a fresh start the other workers read none of it (an old run's files stay
        # until the chief clears them): they keep an empty folder of their own. On a
        # resume every worker reads the shared one.
        if not self.resume and not chief_process():
            self.directory = tempfile.mkdtemp(prefix="worker-checkpoints-")
            atexit.register(shutil.rmtree, self.directory, ignore_errors=True)
        if not self.resume and os.path.isdir(self.directory) and chief_process():
            shutil.rmtree(self.directory)
        os.makedirs(self.directory, exist_ok=True)
        #: What this start changed in the folder: settings that grew on a resume,
        #: damaged files discarded. Each is printed too.
        self.notes: list[str] = []
        if self.resume and chief_process():
            self.notes += discard_damaged(self.directory)
        if settings is not None and chief_process():
            self.notes += check_settings(self.directory, settings, self.resume)
        for note in self.notes:
            print(note)

    def _path(self, phase: str, name: str) -> str:
        return os.path.join(self.directory, f"{phase}.{name}")

    def callbacks(self, phase: str, seed: int | None = None,
                  early_stopping: dict[str, Any] | None = None
                  ) -> list[keras.callbacks.Callback]:
        """Callbacks for the ``fit`` of ``phase``: the history first, then the backup.

        With a seed, pass them through `templates.training.seeds.following_epochs`
        with the ``fit``'s training data, so its order follows the epoch on a resume.

        Args:
            phase: The phase's name.
            seed: The run's seed (the plan's): every epoch's randomness then depends only
                on ``(seed, epoch)`` (`EpochSeeds`); ``None`` leaves it as it is.
            early_stopping: The phase's ``keep_best``, ``patience``, ``restore_best``
                and ``monitor`` (`templates.training.plan.TransferPlan.early_stopping`);
                ``None``: every epoch runs and the last one's weights are kept.
        """
        settings = {"keep_best": False, "patience": None, "restore_best": False,
                    "monitor": "val_accuracy", **(early_stopping or {})}
        callbacks = [
            PhaseHistory(self._path(phase, "epochs.json")),
            PacedBackup(self._path(phase, "backup"), max_overhead=self.backup_overhead),
        ]
        if seed is not None:
            callbacks.append(EpochSeeds(seed))
        if settings["keep_best"]:
            callbacks.append(KeepBest(self._path(phase, "best"), monitor=settings["monitor"],
                                         patience=settings["patience"],
                                         restore=settings["restore_best"]))
        return callbacks

    def result(self, name: str) -> dict[str, Any] | None:
        """The JSON result saved under ``name`` by `save_result`, or ``None``."""
        path = self._path(name, "result.json")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    def save_result(self, name: str, result: dict[str, Any]) -> None:
        """Keep a finished run's result (for example a learning-curve summary)."""
        if chief_process():
            write_json(self._path(name, "result.json"), result)

    def finished(self, phase: str) -> bool:
        """Whether ``phase`` completed in an earlier (or this) run."""
        return phase not in self._reopened and os.path.isfile(self._path(phase, "done.json"))

    def reopen(self, phase: str) -> None:
        """Count a finished phase as in progress again, to train it on to more epochs
        from its weights (`templates.training.multi_worker.train_multi_worker`)."""
        self._reopened.add(phase)
        if chief_process():
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path(phase, "done.json"))

    def finish(self, phase: str, model: keras.Model,
               history: keras.callbacks.History | None = None) -> None:
        """Record ``phase`` as complete: the model's weights, then the marker (on
        several machines every worker joins the save and the chief writes)."""
        save_on_every_worker(self._path(phase, "weights.h5"), model.save_weights)
        if not chief_process():
            return
        epochs = read_epochs(self._path(phase, "epochs.json"))
        if not epochs and history is not None:
            epochs = [{"epoch": int(epoch), **{key: float(values[index]) for key, values
                                                  in history.history.items()}}
                      for index, epoch in enumerate(history.epoch)]
        write_json(self._path(phase, "epochs.json"), epochs)
        write_json(self._path(phase, "done.json"), {"phase": phase, "epochs": len(epochs)})

    def restore(self, phase: str, model: keras.Model) -> keras.callbacks.History:
        """Load a finished phase's weights into ``model``; return its history."""
        if not self.finished(phase):
            raise CookbookError(f"Phase {phase!r} has not finished in {self.directory}.")
        with warnings.catch_warnings():
            # The file also holds the phase's optimiser state, which the next phase (a
            # new optimiser) does not need: Keras's warning that it skipped it is noise.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(self._path(phase, "weights.h5"))
        return as_history(read_epochs(self._path(phase, "epochs.json")))

    def history(self, phase: str) -> keras.callbacks.History:
        """Every epoch of ``phase`` recorded so far, across restarts."""
        return as_history(read_epochs(self._path(phase, "epochs.json")))


def run_phase(
    state: TrainingState | None,
    phase: str,
    model: keras.Model,
    train: Callable[[list[keras.callbacks.Callback]], Any],
    plan: Any = None,
) -> keras.callbacks.History:
    """Run one checkpointed phase, or restore it if it finished in an earlier run: the
    one way every phase of the library runs (the two of `run_transfer`, on ``fit`` or
    on the multi-worker loop, the comparisons' scratch runs, the sweeps' heads).

    Args:
        state: The run's `TrainingState`; ``None`` trains without checkpoints.
        phase: The phase's name (``"head"``, ``"fine_tune"``...).
        model: The model whose weights the phase produces (restored when skipped).
        train: Trains the phase; called with the callbacks to pass to ``fit`` (or to
            drive, on a loop of one's own).
        plan: The run's `templates.training.plan.TransferPlan`: its seed seeds every
            epoch from ``(seed, epoch)``, its early stopping (patience, best-epoch
            restore, monitor) applies; ``None``: unseeded, every epoch runs.

    Returns:
        The phase's history over every epoch, including epochs run before a restart.
    """
    if state is None:
        return train([])
    if state.finished(phase):
        return state.restore(phase, model)
    # A phase named "NAME.head" (a comparison's) stops as a head does.
    seed, early_stopping = ((plan.seed, plan.early_stopping(phase.rsplit(".", 1)[-1]))
                            if plan is not None else (None, None))
    callbacks = state.callbacks(phase, seed=seed, early_stopping=early_stopping)
    train(callbacks)
    state.finish(phase, model)
    # The history every process kept itself (on several machines only the chief writes
    # the file, and another worker may finish before the chief's last write).
    return as_history(callbacks[0].epochs)
