"""Interrupted training loses at most the epoch in progress.

A recipe's training is a sequence of phases (head training, fine-tuning). `TrainingState`
keeps, under one folder:

* for the phase in progress, Keras's `BackupAndRestore` backup (weights, optimiser
  state, epoch; written every epoch with a second copy, so a kill while writing falls
  back to the previous epoch) and a per-epoch history (`PhaseHistory`, written
  atomically);
* for every finished phase, the model's weights and the phase's history, and a marker.

With ``resume=True`` finished phases are restored instead of retrained, and the phase
in progress continues from its last finished epoch. Without it, old state is cleared
and training starts over.

    state = TrainingState("runs/x/checkpoints", resume=args.resume)
    head_history = run_phase(state, "head", transfer.model,
                             lambda callbacks: train_head(transfer, ..., callbacks=callbacks))

Resumed runs train the same epochs, but the data order after the restart differs from
an uninterrupted run, so final metrics are close, not bit-identical.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import keras

from templates.files import atomic_path, write_json


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
        write_json(self.path, self.epochs)


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
    """

    def __init__(self, directory: str | os.PathLike, resume: bool = False):
        self.directory = os.fspath(directory)
        self.resume = bool(resume)
        if not self.resume and os.path.isdir(self.directory):
            shutil.rmtree(self.directory)
        os.makedirs(self.directory, exist_ok=True)

    def _path(self, phase: str, name: str) -> str:
        return os.path.join(self.directory, f"{phase}.{name}")

    def callbacks(self, phase: str) -> list[keras.callbacks.Callback]:
        """Callbacks for the ``fit`` of ``phase``: the history first, then the backup."""
        return [
            PhaseHistory(self._path(phase, "epochs.json")),
            keras.callbacks.BackupAndRestore(self._path(phase, "backup"),
                                             double_checkpoint=True),
        ]

    def finished(self, phase: str) -> bool:
        """Whether ``phase`` completed in an earlier (or this) run."""
        return os.path.isfile(self._path(phase, "done.json"))

    def finish(self, phase: str, model: keras.Model,
               history: keras.callbacks.History | None = None) -> None:
        """Record ``phase`` as complete: the model's weights, then the marker."""
        with atomic_path(self._path(phase, "weights.h5"), suffix=".weights.h5") as temporary:
            model.save_weights(temporary)
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
            raise ValueError(f"Phase {phase!r} has not finished in {self.directory}.")
        model.load_weights(self._path(phase, "weights.h5"))
        return as_history(read_epochs(self._path(phase, "epochs.json")))

    def history(self, phase: str) -> keras.callbacks.History:
        """Every epoch of ``phase`` recorded so far, across restarts."""
        return as_history(read_epochs(self._path(phase, "epochs.json")))


def run_phase(
    state: TrainingState,
    phase: str,
    model: keras.Model,
    train: Callable[[list[keras.callbacks.Callback]], Any],
) -> keras.callbacks.History:
    """Run one checkpointed phase, or restore it if it finished in an earlier run.

    Args:
        state: The run's `TrainingState`.
        phase: The phase's name (``"head"``, ``"fine_tune"``...).
        model: The model whose weights the phase produces (restored when skipped).
        train: Trains the phase; called with the callbacks to pass to ``fit``.

    Returns:
        The phase's history over every epoch, including epochs run before a restart.
    """
    if state.finished(phase):
        return state.restore(phase, model)
    train(state.callbacks(phase))
    state.finish(phase, model)
    return state.history(phase)
