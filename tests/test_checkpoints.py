"""Interrupted training loses at most the epoch in progress (issue 6, part 2)."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import kill_when

from templates.training.checkpoints import TrainingState, read_epochs


class Crash(Exception):
    pass


class CrashAfter(keras.callbacks.Callback):
    """Stands in for a kill: raises once ``epochs`` epochs have ended."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise Crash()


def small_model():
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def test_a_crashed_phase_resumes_at_the_next_epoch(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    state = TrainingState(tmp_path / "state")
    model = small_model()
    with pytest.raises(Crash):
        model.fit(x, y, epochs=5, verbose=0,
                  callbacks=state.callbacks("head") + [CrashAfter(3)])
    assert [item["epoch"] for item in read_epochs(tmp_path / "state" / "head.epochs.json")] == [
        0, 1, 2]

    resumed = TrainingState(tmp_path / "state", resume=True)
    model = small_model()  # a fresh process would rebuild the model
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=resumed.callbacks("head"))
    assert history.epoch == [3, 4]  # epochs 0-2 were not repeated
    resumed.finish("head", model)
    assert resumed.history("head").epoch == [0, 1, 2, 3, 4]
    expected = model.get_weights()

    again = TrainingState(tmp_path / "state", resume=True)
    assert again.finished("head")
    restored = small_model()
    assert again.restore("head", restored).epoch == [0, 1, 2, 3, 4]
    for actual, wanted in zip(restored.get_weights(), expected):
        np.testing.assert_array_equal(actual, wanted)

    fresh = TrainingState(tmp_path / "state", resume=False)  # no --resume: start over
    assert not fresh.finished("head") and not os.listdir(tmp_path / "state")


@pytest.mark.acceptance  # a whole recipe killed and resumed
def test_recipe_killed_mid_training_resumes_without_repeating_epochs(subprocess_env, tmp_path):
    # Enough sentences for a BiLSTM epoch to take about a second on 2 cores.
    generator = np.random.default_rng(0)
    words = {"warm": ["red", "orange", "gold"], "cool": ["blue", "teal", "navy"]}
    lines = [f"{label}\tthe wall is painted {generator.choice(choices)} today"
             for _ in range(1500) for label, choices in words.items()]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    vectors = [f"{word} " + " ".join(f"{value:.3f}" for value in generator.normal(size=8))
               for choices in words.values() for word in choices]
    (tmp_path / "vectors.txt").write_text("\n".join(vectors) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    arguments = [sys.executable, "-m", "recipes.glove_text_classification",
                 "--train", str(tmp_path / "train.tsv"), "--vectors", str(tmp_path / "vectors.txt"),
                 "--architecture", "bilstm", "--units", "32", "--head-epochs", "6",
                 "--fine-tune-epochs", "2", "--seed", "5", "--output-dir", str(out)]

    metadata = out / "checkpoints" / "head.backup" / "training_metadata.json"

    def epochs_backed_up():
        try:
            return json.loads(metadata.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            return 0

    kill_when(arguments, subprocess_env, lambda: epochs_backed_up() >= 2)
    completed = epochs_backed_up()
    assert 2 <= completed < 6
    completed = json.loads(metadata.read_text())["epoch"]  # what the backup holds now
    assert not (out / "metrics.json").exists()

    result = subprocess.run(arguments + ["--resume"], env=subprocess_env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trained_epochs = len(re.findall(r"^\d+/\d+ - ", result.stdout, flags=re.MULTILINE))
    assert trained_epochs == (6 - completed) + 2  # finished epochs were not repeated

    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    history = json.loads((out / "history.json").read_text())
    assert len(history["val_accuracy"]) == 8
    assert not (out / "checkpoints" / "head.backup").exists()  # removed when the phase ended


def dropout_model():
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    hidden = keras.layers.Dropout(0.5)(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("pipeline", ["arrays", "array_batches", "tf.data"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, pipeline):
    from templates.data.batches import ShuffledArrays, array_batches, shuffle_each_epoch
    from templates.training.seeds import following_epochs

    x = np.random.default_rng(0).normal(size=(96, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")

    def data():
        if pipeline == "arrays":
            return ShuffledArrays(x, y, batch_size=8, seed=3)
        if pipeline == "array_batches":  # tf.data on this backend, ShuffledArrays' orders
            return array_batches(x, y, batch_size=8, seed=3)
        import tensorflow as tf

        return shuffle_each_epoch(tf.data.Dataset.from_tensor_slices((x, y)), 96, seed=3).batch(8)

    def run(directory, crash_after=None, resume=False):
        keras.utils.set_random_seed(3)
        model = dropout_model()
        state = TrainingState(directory, resume=resume)
        extra = [CrashAfter(crash_after)] if crash_after else []
        batches = data()
        # The fit call names the data whose order its epoch seeds set.
        model.fit(batches, shuffle=False, epochs=5, verbose=0,
                  callbacks=following_epochs(state.callbacks("head", seed=3) + extra, batches))
        return model

    uninterrupted = run(tmp_path / "a")
    with pytest.raises(Crash):
        run(tmp_path / "b", crash_after=2)
    resumed = run(tmp_path / "b", resume=True)
    for actual, wanted in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_array_equal(actual, wanted)

    # The check can fail: without the epoch seeds the same resume ends elsewhere.
    keras.utils.set_random_seed(3)
    model = dropout_model()
    unseeded = TrainingState(tmp_path / "c")
    with pytest.raises(Crash):
        model.fit(x, y, batch_size=8, shuffle=True, epochs=5, verbose=0,
                  callbacks=unseeded.callbacks("head") + [CrashAfter(2)])
    keras.utils.set_random_seed(3)
    model = dropout_model()
    model.fit(x, y, batch_size=8, shuffle=True, epochs=5, verbose=0,
              callbacks=TrainingState(tmp_path / "c", resume=True).callbacks("head"))
    assert not all(np.array_equal(actual, wanted) for actual, wanted
                   in zip(model.get_weights(), uninterrupted.get_weights()))


def test_array_batches_read_the_arrays_in_shuffled_arrays_orders():
    import tensorflow as tf

    from templates.data.batches import (
        ShuffledArrays,
        array_batches,
        epoch_followers,
        set_epoch,
    )
    from templates.training.seeds import EpochSeeds

    x = np.arange(40, dtype="float32").reshape(20, 2)
    y = np.arange(20, dtype="int32")
    batches = array_batches(x, y, batch_size=6, seed=5)
    # On the TensorFlow backend, a tf.data pipeline (Keras rebuilds its own pipeline for
    # arrays and PyDatasets on every pass, which dominates a small head's training).
    assert isinstance(batches, tf.data.Dataset)
    assert int(batches.cardinality()) == 4

    def labels_per_epoch(data, epochs):
        passes = []
        for _ in range(epochs):
            if isinstance(data, ShuffledArrays):
                passes.append([data[index][1].tolist() for index in range(len(data))])
                data.on_epoch_end()
            else:
                passes.append([labels.numpy().tolist() for _, labels in data])
        return passes

    reference = ShuffledArrays(x, y, batch_size=6, seed=5)
    wanted = labels_per_epoch(reference, 3)
    assert labels_per_epoch(batches, 3) == wanted
    assert wanted[0] != wanted[1] and sorted(sum(wanted[0], [])) == list(range(20))
    for inputs, labels in batches.take(1):  # inputs travel with their labels
        np.testing.assert_array_equal(inputs.numpy(), x[labels.numpy()])
    # A resumed run announces its epoch to the data its fit reads: both start from that
    # epoch's order. The counter is found through the steps after it (here a map).
    mapped = batches.map(lambda inputs, labels: (inputs, labels)).prefetch(1)
    assert epoch_followers(mapped) == epoch_followers(batches) and len(epoch_followers(mapped)) == 1
    assert set_epoch(mapped, 7) == 1 and set_epoch(reference, 7) == 1
    assert labels_per_epoch(batches, 1) == labels_per_epoch(reference, 1)
    # Only the data a callback follows is told: another pipeline keeps its own count.
    other = array_batches(x, y, batch_size=6, seed=5)
    callback = EpochSeeds(5, data=mapped)
    callback.set_model(keras.Sequential([keras.layers.Dense(1)]))
    callback.on_epoch_begin(2)
    assert labels_per_epoch(batches, 1) == labels_per_epoch(ShuffledArrays(x, y, 6, 5), 3)[2:]
    assert labels_per_epoch(other, 1) == wanted[:1]
    assert epoch_followers(np.zeros(3)) == []
    # Unshuffled (validation) batches keep the arrays' order.
    ordered = array_batches(x, y, batch_size=6, shuffle=False)
    assert [labels.numpy().tolist() for _, labels in ordered][0] == list(range(6))
    ordered = ShuffledArrays(x, y, batch_size=6, shuffle=False)  # other backends' kind
    assert labels_per_epoch(ordered, 2)[1][0] == list(range(6))
    with pytest.raises(ValueError, match="differ in length: 20 vs 19"):
        array_batches(x, y[:19])


def test_keep_best_restores_the_best_epoch_and_remembers_it_across_a_restart(tmp_path):
    from templates.training.checkpoints import KeepBest

    model = small_model()

    def epoch(keeper, index, accuracy):
        model.set_weights([np.full_like(w, index) for w in model.get_weights()])
        keeper.on_epoch_end(index, {"val_accuracy": accuracy})

    keeper = KeepBest(tmp_path / "head.best", patience=2)
    keeper.set_model(model)
    keeper.on_train_begin()
    for index, accuracy in enumerate([0.5, 0.8, 0.6]):
        epoch(keeper, index, accuracy)
    assert not model.stop_training
    epoch(keeper, 3, 0.7)  # two epochs without beating epoch 1
    assert model.stop_training and keeper.stopped_epoch == 3
    keeper.on_train_end()
    assert all(np.all(w == 1) for w in model.get_weights())  # epoch 1's weights

    # A restarted run (a new callback, same files) still knows epoch 1 was the best.
    model.stop_training = False
    restarted = KeepBest(tmp_path / "head.best", patience=2)
    restarted.set_model(model)
    restarted.on_train_begin()
    assert restarted.record == {"value": 0.8, "epoch": 1}
    epoch(restarted, 4, 0.79)
    assert model.stop_training
    restarted.on_train_end()
    assert all(np.all(w == 1) for w in model.get_weights())

    # --no-restore-best: early stopping still stops, but the last epoch's weights stay.
    model.stop_training = False
    last = KeepBest(tmp_path / "other.best", patience=1, restore=False)
    last.set_model(model)
    last.on_train_begin()
    epoch(last, 0, 0.9)
    epoch(last, 1, 0.4)
    assert model.stop_training
    last.on_train_end()
    assert all(np.all(w == 1) for w in model.get_weights())  # epoch 1's, not epoch 0's


class FakeClock(keras.callbacks.Callback):
    """A clock the test drives: each epoch lasts ``epoch_seconds``, each backup write
    ``write_seconds`` (placed before the backup callback)."""

    def __init__(self, epoch_seconds, write_seconds):
        super().__init__()
        self.now, self.epoch_seconds, self.write_seconds = 0.0, epoch_seconds, write_seconds

    def on_epoch_end(self, epoch, logs=None):
        self.now += self.epoch_seconds


def paced(path, clock, max_overhead, monkeypatch):
    """A PacedBackup on ``clock`` that records the epochs it backed up."""
    from templates.training import checkpoints

    monkeypatch.setattr(checkpoints, "_clock", lambda: clock.now)
    backup = checkpoints.PacedBackup(path, max_overhead=max_overhead)
    backup.backed_up = []
    save = backup._save_model

    def recording_save():
        backup.backed_up.append(backup._current_epoch)
        clock.now += clock.write_seconds
        save()

    backup._save_model = recording_save
    return backup


def test_paced_backups_skip_short_epochs_and_keep_long_ones(tmp_path, monkeypatch):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")

    # Epochs of 1/16 s, writes of 1/8 s, at most 1/8 overhead: after the first epoch,
    # the next backup waits until 1 s has passed since the last one (16 epochs).
    clock = FakeClock(epoch_seconds=0.0625, write_seconds=0.125)
    fast = paced(tmp_path / "fast", clock, 0.125, monkeypatch)
    small_model().fit(x, y, epochs=40, batch_size=32, verbose=0, callbacks=[clock, fast])
    assert fast.backed_up == [1, 17, 33]

    # Epochs of 2 s, far longer than a write: every epoch is backed up, as in Keras.
    clock = FakeClock(epoch_seconds=2.0, write_seconds=0.1)
    slow = paced(tmp_path / "slow", clock, 0.1, monkeypatch)
    small_model().fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[clock, slow])
    assert slow.backed_up == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="max_overhead"):
        paced(tmp_path / "bad", clock, 0, monkeypatch)


def test_a_paced_backup_resumes_from_its_last_backed_up_epoch(tmp_path, monkeypatch):
    from templates.training import checkpoints

    # A clock that advances 1/8 s per reading: a write "takes" 1/8 s, so with at most
    # 1/8 overhead the backups land on epochs 1, 9, 17 (1 s apart).
    readings = iter(range(10_000))
    monkeypatch.setattr(checkpoints, "_clock", lambda: next(readings) * 0.125)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    state = TrainingState(tmp_path / "state", backup_overhead=0.125)
    with pytest.raises(Crash):
        small_model().fit(x, y, epochs=30, verbose=0,
                          callbacks=state.callbacks("head") + [CrashAfter(20)])
    metadata = tmp_path / "state" / "head.backup" / "training_metadata.json"
    backed_up = json.loads(metadata.read_text())["epoch"]
    assert backed_up == 17  # the crash after epoch 20 loses epochs 18-20 only

    resumed = TrainingState(tmp_path / "state", resume=True, backup_overhead=0.125)
    history = small_model().fit(x, y, epochs=30, verbose=0,
                                callbacks=resumed.callbacks("head"))
    assert history.epoch == list(range(17, 30))
    # Epochs run twice (after the backup, before the crash) are recorded once.
    assert [item["epoch"] for item in read_epochs(tmp_path / "state" / "head.epochs.json")
            ] == list(range(30))
    with pytest.raises(ValueError, match="backup_overhead"):
        TrainingState(tmp_path / "other", backup_overhead=0)
