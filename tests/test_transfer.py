"""`TransferPlan` and `run_transfer`: one plan, one loop, one machine or several."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from templates.models.transfer_model import TransferModel
from templates.training.plan import TransferPlan
from templates.training.run import run_transfer


def separable(count=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 6)).astype("float32")
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")


def small_transfer(seed=0) -> TransferModel:
    """A frozen 'backbone' (one dense layer with a BatchNormalization) and a new head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh", name="reused")(inputs)
    backbone = keras.Model(inputs, keras.layers.BatchNormalization(name="norm")(hidden),
                           name="backbone")
    head_inputs = keras.Input((8,))
    head = keras.Model(head_inputs, keras.layers.Dense(2, activation="softmax")(head_inputs))
    return TransferModel(backbone, head, fine_tune_from=None, input_name="features")


def batches(count=128, seed=0, batch=16):
    return tf.data.Dataset.from_tensor_slices(separable(count, seed)).batch(batch)


def test_the_plan_checks_its_fields_and_round_trips_through_json():
    plan = TransferPlan()
    assert (plan.head_epochs, plan.fine_tune_epochs, plan.patience, plan.restore_best) == (
        10, 3, 3, True)
    data = json.loads(json.dumps(TransferPlan(schedule="one_cycle", seed=4).to_dict()))
    assert TransferPlan.from_dict(data) == TransferPlan(schedule="one_cycle", seed=4)
    for wrong, message in (({"schedule": "linear"}, "unknown schedule"),
                           ({"monitor": "accuracy"}, "unknown monitor"),
                           ({"patience": -1}, "patience"),
                           ({"augmentation": keras.layers.RandomFlip()}, "cache_features=False"),
                           ({"augmented_views": 2}, "needs an augmentation"),
                           ({"augmented_views": -1}, "augmented_views must be"),
                           ({"callbacks": {"warmup": []}}, "per phase")):
        with pytest.raises(ValueError, match=message):
            TransferPlan(**wrong)
    with pytest.raises(ValueError, match="unknown fields"):
        TransferPlan.from_dict({"epochs": 3})


def test_run_transfer_trains_both_phases_keeps_batch_norm_frozen_and_resumes(tmp_path):
    plan = TransferPlan(head_epochs=4, fine_tune_epochs=2, learning_rate=0.05,
                        fine_tune_learning_rate=0.01, patience=0, restore_best=True, seed=3)
    transfer = small_transfer()
    norm = transfer.backbone.get_layer("norm")
    moving_mean = keras.ops.convert_to_numpy(norm.moving_mean).copy()
    run = run_transfer(transfer, batches(), batches(64, seed=1), plan,
                       checkpoints=tmp_path / "state", test=batches(64, seed=2),
                       measure_start=True)
    assert [run.phases[p].epochs for p in ("head", "fine_tune")] == [4, 2]
    assert run.history["phase"] == ["head"] * 4 + ["fine-tuning"] * 2
    assert run.learning_rates == {"head": 0.05, "fine_tune": 0.01}
    assert run.scores["val_accuracy"] >= 0.85 > run.start_accuracy - 0.5
    assert run.test_accuracy == run.scores["test_accuracy"]
    # Fine-tuning trained the reused dense layer but never moved BatchNorm's statistics.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(norm.moving_mean), moving_mean)
    weights = transfer.model.get_weights()

    # Resumed from the same folder: both phases restored, nothing trained again.
    again = small_transfer(seed=9)
    resumed = run_transfer(again, batches(), batches(64, seed=1), plan,
                           checkpoints=tmp_path / "state", resume=True)
    assert all(result.restored for result in resumed.phases.values())
    assert resumed.history == run.history
    for restored, trained in zip(again.model.get_weights(), weights):
        np.testing.assert_array_equal(restored, trained)


class CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def test_the_head_trains_on_cached_augmented_views_and_fine_tuning_augments_in_the_graph():
    # Noise on the inputs is this toy model's augmentation: the head trains on the
    # cached features of the originals and of 3 noisy views (4 x 128 rows per epoch).
    head, tuned = CountBatches(), CountBatches()
    plan = TransferPlan(head_epochs=3, fine_tune_epochs=1, learning_rate=0.05,
                        fine_tune_learning_rate=0.01, patience=0, restore_best=False,
                        batch_size=32, augmentation=keras.layers.GaussianNoise(0.3, seed=1),
                        augmented_views=3, seed=3,
                        callbacks={"head": [head], "fine_tune": [tuned]})
    run = run_transfer(small_transfer(), batches(), batches(64, seed=1), plan)
    assert head.batches == 3 * (4 * 128 // 32)
    assert tuned.batches == 128 // 16  # fine-tuning: the training batches, augmented in graph
    assert run.scores["val_accuracy"] >= 0.75  # it learned (chance: 0.5)
    noise = keras.layers.GaussianNoise(0.3)
    assert TransferPlan.from_dict(plan.to_dict(), augmentation=noise).augmented_views == 3


def test_balanced_class_weights_raise_the_minority_class_recall():
    from templates.training.plan import balanced_class_weight

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype("float32")
    y = (x[:, 0] + rng.normal(scale=0.8, size=400) > 1.3).astype("int32")  # ~12% ones
    assert 0.05 < y.mean() < 0.2
    weights = balanced_class_weight(y)
    assert weights[1] / weights[0] == pytest.approx((y == 0).sum() / (y == 1).sum(), rel=1e-4)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)

    def minority_recall(class_weight):
        plan = TransferPlan(head_epochs=8, fine_tune_epochs=1, learning_rate=0.05,
                            fine_tune_learning_rate=0.01, patience=0, restore_best=False,
                            class_weight=class_weight, seed=1)
        transfer = small_transfer(seed=1)
        run_transfer(transfer, data, data, plan)
        predicted = transfer.model.predict(x[y == 1], verbose=0).argmax(axis=1)
        return predicted.mean()

    assert minority_recall(weights) > minority_recall(None) + 0.2
    with pytest.raises(ValueError, match="class_weight must be"):
        TransferPlan(class_weight={0: 1.0, 1: 0.0})
    # Written to JSON (string keys) and read back as labels.
    written = json.loads(json.dumps(TransferPlan(class_weight=weights).to_dict()))
    assert TransferPlan.from_dict(written).class_weight == weights


def test_the_finder_chooses_each_phase_rate_once_and_a_resume_reuses_it(tmp_path):
    plan = TransferPlan(head_epochs=2, fine_tune_epochs=1, find_learning_rates=True,
                        patience=0, restore_best=False, seed=0)
    run = run_transfer(small_transfer(), batches(256), batches(64, seed=1), plan,
                       checkpoints=tmp_path / "state", output_dir=tmp_path)
    for phase in ("head", "fine_tune"):
        saved = json.loads((tmp_path / f"lr_finder_{phase}.json").read_text())
        assert run.learning_rates[phase] == saved["used"]
    kept = json.loads((tmp_path / "state" / "head.learning_rate.result.json").read_text())
    assert kept["learning_rate"] == run.learning_rates["head"]
    (tmp_path / "lr_finder_head.json").unlink()
    again = run_transfer(small_transfer(), batches(256), batches(64, seed=1), plan,
                         checkpoints=tmp_path / "state", resume=True, output_dir=tmp_path)
    assert again.learning_rates == run.learning_rates
    assert not (tmp_path / "lr_finder_head.json").exists()  # the finder did not run again


TWO_WORKERS = """
import json, os, sys
import numpy as np, tensorflow as tf, keras
strategy = tf.distribute.MultiWorkerMirroredStrategy()
sys.path.insert(0, {tests!r})
from test_transfer import batches, small_transfer
from templates.training.workers import weights_digest
from templates.training.run import TransferPlan, run_transfer
plan = TransferPlan(**json.loads({plan!r}))
with strategy.scope():
    transfer = small_transfer()
run = run_transfer(transfer, batches(), batches(64, seed=1), plan,
                   checkpoints=os.path.join({out!r}, "worker" + os.environ["INDEX"]))
json.dump({{"digest": weights_digest(transfer.model), "epochs": [p.epochs for p in
           run.phases.values()], "loss": run.history["loss"], "scores": run.scores,
           "replicas": strategy.num_replicas_in_sync}}, sys.stdout)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_same_call_and_plan_run_on_one_machine_and_on_two_workers(subprocess_env,
                                                                      tmp_path):
    plan = TransferPlan(head_epochs=3, fine_tune_epochs=1, learning_rate=0.05,
                        fine_tune_learning_rate=0.01, patience=0, restore_best=False,
                        batch_size=16, seed=0)
    here = run_transfer(small_transfer(), batches(), batches(64, seed=1), plan)
    assert [result.epochs for result in here.phases.values()] == [3, 1]

    ports = [free_port(), free_port()]
    script = TWO_WORKERS.format(tests=str(subprocess_env["PYTHONPATH"].split(":")[0]) +
                                "/tests", plan=json.dumps(plan.to_dict()), out=str(tmp_path))
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                  "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**subprocess_env, "TF_CONFIG": json.dumps(config),
                            "INDEX": str(index)}))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=300))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (_, error) in zip(processes, outputs):
        assert process.returncode == 0, error[-3000:]
    workers = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [worker["replicas"] for worker in workers] == [2, 2]
    assert workers[0]["digest"] == workers[1]["digest"]  # one model, mirrored
    assert workers[0]["epochs"] == [3, 1]
    assert workers[0]["loss"] == workers[1]["loss"] and len(workers[0]["loss"]) == 4
    # Both learn the task (chance is 0.5); the loop reads the data in another order.
    assert min(workers[0]["scores"]["val_accuracy"], here.scores["val_accuracy"]) >= 0.7

    # What the loop cannot honour is refused by name, before any training.
    refused = TransferPlan(discriminative_factor=2.6, patience=0, restore_best=False)
    from templates.training.run import check_plan_fits

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ValueError, match="discriminative_factor need model.fit"):
        check_plan_fits(refused, model, multi_worker=True)
    check_plan_fits(refused, model)  # on one machine: fine


def test_early_stopping_can_watch_balanced_accuracy_and_macro_f1():
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6)).astype("float32")
    y = (x[:, 0] + rng.normal(scale=0.8, size=300) > 1.3).astype("int32")  # ~12% ones
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(50)
    for monitor, score in (("val_balanced_accuracy", balanced_accuracy_score),
                           ("val_macro_f1", lambda t, p: f1_score(t, p, average="macro"))):
        plan = TransferPlan(head_epochs=4, fine_tune_epochs=1, learning_rate=0.05,
                            fine_tune_learning_rate=0.01, patience=2, monitor=monitor, seed=2)
        transfer = small_transfer(seed=2)
        run = run_transfer(transfer, data, data, plan)
        # Logged every epoch of both phases, and exact over the epoch: the last value
        # is scikit-learn's score of the final model on the validation set.
        assert len(run.history[monitor]) == len(run.history["val_accuracy"])
        predicted = transfer.model.predict(x, verbose=0).argmax(axis=1)
        best = max(run.per_phase(monitor)["fine_tune"])
        assert best == pytest.approx(score(y, predicted), abs=1e-5), monitor


def test_a_resumed_run_scores_the_monitored_metric_on_its_restored_model(tmp_path):
    # Both phases finished before: the restored model is not compiled, and its test
    # scores must still hold the monitored macro F1 the transfer report compares.
    plan = TransferPlan(head_epochs=2, fine_tune_epochs=1, learning_rate=0.05,
                        fine_tune_learning_rate=0.01, patience=0, monitor="val_macro_f1",
                        seed=3)
    first = run_transfer(small_transfer(), batches(), batches(64, seed=1), plan,
                         checkpoints=tmp_path / "state", test=batches(64, seed=2))
    again = run_transfer(small_transfer(seed=9), batches(), batches(64, seed=1), plan,
                         checkpoints=tmp_path / "state", resume=True, test=batches(64, seed=2),
                         score_phases=False)
    assert all(result.restored for result in again.phases.values())
    assert again.test_scores["macro_f1"] == pytest.approx(first.test_scores["macro_f1"])
    assert first.phases["fine_tune"].scores["test_macro_f1"] == first.test_scores["macro_f1"]


def test_the_plan_owns_the_seed_two_runs_of_one_plan_end_with_the_same_weights(tmp_path):
    """The plan is the seed's one owner: the checkpoints take none of their own, and two
    runs of one plan (with dropout-free but seed-ordered data) end identically; another
    seed ends elsewhere, so the check can fail."""
    import inspect

    from templates.data.batches import ShuffledArrays
    from templates.training.checkpoints import TrainingState

    assert "seed" not in inspect.signature(TrainingState).parameters
    x, y = separable(96)

    def weights(seed, folder):
        plan = TransferPlan(head_epochs=2, fine_tune_epochs=1, patience=0,
                            restore_best=False, seed=seed, batch_size=16)
        transfer = small_transfer(seed)
        train = ShuffledArrays(x, y, batch_size=plan.batch_size, seed=plan.seed)
        run_transfer(transfer, train, batches(), plan, tmp_path / folder, verbose=0)
        return transfer.model.get_weights()

    first, second, other = weights(3, "a"), weights(3, "b"), weights(4, "c")
    for actual, wanted in zip(first, second):
        np.testing.assert_array_equal(actual, wanted)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_a_resumed_run_says_what_it_restored_and_records_it(tmp_path, capsys):
    plan = TransferPlan(head_epochs=2, fine_tune_epochs=1, patience=0, restore_best=False)
    fresh = run_transfer(small_transfer(), batches(), batches(), plan, tmp_path, verbose=0)
    assert fresh.resumed is None and "resumed" not in fresh.metrics()
    assert "resumed" not in capsys.readouterr().out

    again = run_transfer(small_transfer(), batches(), batches(), plan, tmp_path,
                         resume=True, verbose=0)
    said = capsys.readouterr().out
    assert "resumed from" in said and "head, fine_tune restored" in said, said
    assert again.resumed == {"finished_phases": ["head", "fine_tune"], "phase": None,
                             "epoch": None}
    assert again.metrics()["resumed"] == again.resumed
    assert all(result.restored for result in again.phases.values())


def test_fine_tuning_is_kept_only_when_it_beats_the_head_on_validation(tmp_path, capsys):
    """Tune only when it pays (issue 36): fine-tuning at a rate that wrecks the model
    ends with the head's weights, scores and test accuracy; ``keep_fine_tuning="always"``
    keeps the wrecked weights; metrics record which."""
    plan = TransferPlan(head_epochs=4, fine_tune_epochs=2, learning_rate=0.05,
                        patience=0, restore_best=False, seed=3)
    plan.fine_tune_learning_rate = 50.0  # past the plan's check (at most 1), to wreck it
    transfer = small_transfer()
    head_only = run_transfer(small_transfer(), batches(), batches(64, seed=1),
                             TransferPlan(head_epochs=4, fine_tune_epochs=0,
                                          learning_rate=0.05, patience=0,
                                          restore_best=False, seed=3),
                             test=batches(64, seed=2))
    run = run_transfer(transfer, batches(), batches(64, seed=1), plan,
                       checkpoints=tmp_path / "kept", test=batches(64, seed=2))
    assert run.phases["fine_tune"].scores["val_accuracy"] < run.phases["head"].scores[
        "val_accuracy"]
    assert run.fine_tuning_kept is False and run.metrics()["fine_tuning_kept"] is False
    assert "Fine-tuning not kept" in capsys.readouterr().out
    assert run.scores == run.phases["head"].scores
    assert run.test_accuracy == pytest.approx(head_only.test_accuracy)
    # The model holds the head's weights: it scores what the head phase scored.
    final = transfer.model.evaluate(batches(64, seed=1), verbose=0, return_dict=True)
    assert final["accuracy"] == pytest.approx(run.phases["head"].scores["val_accuracy"])
    assert head_only.fine_tuning_kept is None

    plan.keep_fine_tuning = "always"
    always = run_transfer(small_transfer(), batches(), batches(64, seed=1), plan,
                          test=batches(64, seed=2))
    assert always.fine_tuning_kept is True
    assert always.scores == always.phases["fine_tune"].scores
    with pytest.raises(ValueError, match="keep_fine_tuning"):
        TransferPlan(keep_fine_tuning="sometimes")
