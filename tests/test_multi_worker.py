"""Training across machines (`templates.training.multi_worker`): the strategy.run loop, its
finder, the recipes on two workers on 127.0.0.1, and a mirrored strategy's feature cache."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from templates.training.hardware import choose_strategy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_workers(env, output_dir, *arguments, timeout=300, recipe="recipes.multi_worker_digits",
                reports="worker_{index}.json"):
    ports = [free_port(), free_port()]
    # A temporary folder of their own, to check what the workers leave there.
    temporary = output_dir.parent / f"{output_dir.name}-tmp"
    temporary.mkdir(parents=True, exist_ok=True)
    env = {**env, "TMPDIR": str(temporary)}
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                  "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", recipe, "--output-dir", str(output_dir), *arguments],
            env={**env, "TF_CONFIG": json.dumps(config)}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, cwd=env["PYTHONPATH"].split(":")[0]))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    # The second worker's private checkpoint folder and any spilled features are gone.
    left = [path.name for path in temporary.iterdir() if path.name.startswith(
        ("worker-", "cached-", "decoded-images-"))]
    assert not left, left
    return [json.loads((output_dir / reports.format(index=index)).read_text())
            for index in range(2)]


@pytest.mark.acceptance  # the whole loop recipe on two workers, killed and resumed
def test_two_workers_train_the_same_model_and_resume(subprocess_env, tmp_path):
    out = tmp_path / "run"
    first = run_workers(subprocess_env, out, "--epochs", "3", "--tensorboard",
                        str(tmp_path / "logs"))
    assert [worker["replicas"] for worker in first] == [2, 2]
    assert first[0]["weights_digest"] == first[1]["weights_digest"]
    assert first[0]["loss"] == first[1]["loss"]  # the all-reduced loss
    assert first[0]["loss"][-1] < 0.5 * first[0]["loss"][0]
    assert [worker["chief"] for worker in first] == [True, False]
    # The checkpoint files run_transfer writes (issue 38): one phase, "train".
    done = json.loads((out / "checkpoints" / "train.done.json").read_text())
    assert done == {"phase": "train", "epochs": 3}
    assert len(json.loads((out / "checkpoints" / "train.epochs.json").read_text())) == 3
    assert (out / "checkpoints" / "train.weights.h5").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_accuracy"] > 0.8
    # The chief's evaluation folder, on the held-out fifth, and its TensorBoard logs.
    evaluation = json.loads((out / "evaluation" / "evaluation.json").read_text())
    assert evaluation["examples"] == 1797 // 5 and evaluation["accuracy"] > 0.8
    assert metrics["evaluation"]["accuracy"] == evaluation["accuracy"]
    assert (out / "evaluation" / "confusion_matrix.png").is_file()
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))

    # Both workers restart from the chief's checkpoint and train only epochs 3 and 4.
    resumed = run_workers(subprocess_env, out, "--epochs", "5", "--resume")
    assert [worker["epochs_run"] for worker in resumed] == [[3, 4], [3, 4]]
    assert resumed[0]["loss"][:3] == first[0]["loss"]
    assert resumed[0]["weights_digest"] == resumed[1]["weights_digest"]
    assert resumed[0]["loss"][-1] < first[0]["loss"][-1]


def test_the_training_loop_follows_a_schedule_across_a_resume(tmp_path):
    import tensorflow as tf

    from templates.training.multi_worker import train_multi_worker
    from templates.training.schedules import WarmupCosine

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")

    def build():
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))

    def dataset_fn(context):
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16)

    schedule = WarmupCosine(1e-2, total_steps=4 * 6, warmup_steps=4)
    from templates.training.checkpoints import TrainingState

    choice = choose_strategy("cpu")
    model, history = train_multi_worker(choice, build, dataset_fn, 16, 4, 3,
                                        learning_rate=schedule, state=TrainingState(tmp_path))
    assert int(model.optimizer.iterations) == 12
    # Resumed: the optimiser's step count comes back with the weights, so the schedule
    # continues where it stopped instead of warming up again.
    model, history = train_multi_worker(choice, build, dataset_fn, 16, 4, 6,
                                        learning_rate=schedule,
                                        state=TrainingState(tmp_path, resume=True))
    assert history.epochs_run == [3, 4, 5]
    assert int(model.optimizer.iterations) == 24
    assert float(model.optimizer.learning_rate) == pytest.approx(float(schedule(24)), abs=1e-7)
    assert history.loss[-1] < history.loss[0]


def colour_photos(root, per_class=24, size=40):
    """Reddish and bluish noisy photos in train/ and test/ class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", per_class // 2)):
        for name, channel in (("blue", 2), ("red", 0)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 120, (size, size, 3))
                pixels[..., channel] += 120
                Image.fromarray(pixels.astype("uint8")).save(folder / f"{index}.png")


@pytest.mark.acceptance  # whole recipes on two workers: the full run
def test_the_image_recipe_trains_on_two_workers(subprocess_env, tmp_path):
    # Keras's ImageNet MobileNet (alpha 0.25) file from ../shared: a random MobileNet's
    # features at these sizes are constant, so only real weights can show learning.
    from conftest import SHARED_KERAS_MODELS, require_shared

    weights = SHARED_KERAS_MODELS / "mobilenet_2_5_224_tf_no_top.h5"
    require_shared(weights)
    colour_photos(tmp_path / "photos", per_class=48)
    out = tmp_path / "run"
    arguments = ["--data-dir", str(tmp_path / "photos"), "--backbone", "MobileNet",
                 "--alpha", "0.25", "--weights", str(weights), "--image-size", "64",
                 "--head-epochs", "5", "--fine-tune-epochs", "1", "--batch-size", "8",
                 "--learning-rate", "1e-2", "--no-find-learning-rates",
                 "--strategy", "multi_worker",
                 "--seed", "3"]
    workers = run_workers(subprocess_env, out, *arguments, "--tensorboard",
                          str(tmp_path / "logs"), recipe="recipes.cats_vs_dogs",
                          reports="workers/worker_{index}.json")
    assert [worker["replicas"] for worker in workers] == [2, 2]
    assert workers[0]["weights_digest"] == workers[1]["weights_digest"]
    assert [worker["chief"] for worker in workers] == [True, False]
    assert workers[0]["epochs_run"] == {"head": [0, 1, 2, 3, 4], "fine_tune": [0]}
    head_loss = workers[0]["loss"]["head"]  # the all-reduced loss: the same on both
    assert head_loss == workers[1]["loss"]["head"] and min(head_loss[1:]) < head_loss[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == workers[1]["test_accuracy"] >= 0.9
    assert (out / "model.keras").is_file() and (out / "labels.txt").is_file()
    # The chief's evaluation folder agrees with its test accuracy; TensorBoard logs
    # were written per phase.
    evaluation = json.loads((out / "evaluation" / "evaluation.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert (out / "evaluation" / "grad_cam.png").is_file()
    for phase in ("head", "fine_tune"):
        assert list((tmp_path / "logs" / phase).glob("events.out.tfevents.*")), phase
    # Options built on model.fit are refused with a one-line error, before training.
    result = subprocess.run(
        [sys.executable, "-m", "recipes.cats_vs_dogs", "--output-dir", str(tmp_path / "x"),
         *arguments, "--compare-scratch"],
        env={**subprocess_env, "TF_CONFIG": json.dumps(
            {"cluster": {"worker": [f"127.0.0.1:{free_port()}"]},
             "task": {"type": "worker", "index": 0}})},
        capture_output=True, text=True, timeout=300, cwd=subprocess_env["PYTHONPATH"].split(":")[0])
    assert result.returncode == 2 and "--compare-scratch" in result.stderr, result.stderr[-2000:]


def colour_sentences(tmp_path):
    """Sentences whose colour word gives the label, and vectors that place the two colour
    families apart, so a frozen-vector head can learn it: the glove recipe's flags."""
    generator = np.random.default_rng(0)
    words = {"warm": ["red", "orange", "gold"], "cool": ["blue", "teal", "navy"]}
    for name, count in (("train", 150), ("test", 40)):
        lines = [f"{label}\tthe wall is painted {generator.choice(choices)} today"
                 for _ in range(count) for label, choices in words.items()]
        (tmp_path / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    vectors = [f"{word} " + " ".join(f"{value:.3f}" for value in
                                     generator.normal(3.0 if label == "warm" else -3.0, 1.0, 8))
               for label, choices in words.items() for word in choices]
    (tmp_path / "vectors.txt").write_text("\n".join(vectors) + "\n", encoding="utf-8")
    return ["--train", str(tmp_path / "train.tsv"), "--test", str(tmp_path / "test.tsv"),
            "--vectors", str(tmp_path / "vectors.txt"), "--filters", "16", "--batch-size",
            "16", "--learning-rate", "1e-2", "--seed", "3"]


@pytest.mark.acceptance  # whole recipes on two workers: the full run
def test_the_text_recipe_trains_on_two_workers(subprocess_env, tmp_path):
    out = tmp_path / "run"
    arguments = [*colour_sentences(tmp_path), "--head-epochs", "3", "--fine-tune-epochs", "1",
                 "--strategy", "multi_worker"]
    workers = run_workers(subprocess_env, out, *arguments,
                          recipe="recipes.glove_text_classification",
                          reports="workers/worker_{index}.json")
    assert [worker["replicas"] for worker in workers] == [2, 2]
    assert workers[0]["weights_digest"] == workers[1]["weights_digest"]
    assert workers[0]["epochs_run"] == {"head": [0, 1, 2], "fine_tune": [0]}
    head_loss = workers[0]["loss"]["head"]
    assert head_loss == workers[1]["loss"]["head"] and head_loss[-1] < head_loss[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == workers[1]["test_accuracy"] >= 0.9
    evaluation = json.loads((out / "evaluation" / "evaluation.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    # The chief's saved model takes raw strings, as on one machine.
    from templates.training.saving import load_model

    model = load_model(out / "model.keras")
    probabilities = keras.ops.convert_to_numpy(
        model(np.array(["the wall is painted teal today"])))
    assert probabilities.shape == (1, 2)

    # --find-learning-rates under multi_worker (a one-worker cluster, to keep it short): the finder
    # runs on the loop before each phase and the chief keeps its plots.
    found = tmp_path / "found"
    result = subprocess.run(
        [sys.executable, "-m", "recipes.glove_text_classification", "--output-dir",
         str(found), *arguments, "--find-learning-rates"],
        env={**subprocess_env, "TF_CONFIG": json.dumps(
            {"cluster": {"worker": [f"127.0.0.1:{free_port()}"]},
             "task": {"type": "worker", "index": 0}})},
        capture_output=True, text=True, timeout=300,
        cwd=subprocess_env["PYTHONPATH"].split(":")[0])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    head = json.loads((found / "lr_finder_head.json").read_text())
    assert head["rule"] == "minimum_over_10"  # the plan's finder_rule, as on one machine
    assert head["learning_rates"][0] <= head["suggestion"] <= head["learning_rates"][-1]
    assert head["used"] == head["suggestion"] and head["fallback"] is None
    # After the head, the training loss is ~1e-5: the fine-tuning sweep diverges (by the
    # finder's rule) within a few steps, and the run falls back to the default rate.
    tuned = json.loads((found / "lr_finder_fine_tune.json").read_text())
    assert tuned["used"] == (tuned["suggestion"] if tuned["fallback"] is None else 5e-4)
    for phase in ("head", "fine_tune"):
        assert (found / f"lr_finder_{phase}.png").is_file()


def test_the_loop_recipe_takes_the_hardware_flags_and_scales_float16_losses(subprocess_env,
                                                                           tmp_path):
    # One process, no TF_CONFIG: the loop on this machine with a float16 policy, where
    # Keras wraps the optimiser in a LossScaleOptimizer and the loop scales the loss.
    result = subprocess.run(
        [sys.executable, "-m", "recipes.multi_worker_digits", "--output-dir", str(tmp_path),
         "--epochs", "3", "--strategy", "cpu", "--mixed-precision", "float16",
         "--find-learning-rates"],
        env=subprocess_env, capture_output=True, text=True, timeout=300,
        cwd=subprocess_env["PYTHONPATH"].split(":")[0])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "dtype policy mixed_float16" in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["replicas"] == 1 and all(np.isfinite(metrics["loss"]))
    assert metrics["loss"][-1] < 0.5 * metrics["loss"][0] and metrics["train_accuracy"] > 0.8
    # --find-learning-rates ran the finder on the same loop and trained at its suggestion.
    finding = json.loads((tmp_path / "lr_finder_train.json").read_text())
    rates = finding["learning_rates"]
    assert rates[0] <= finding["suggestion"] <= rates[-1]
    assert (tmp_path / "lr_finder_train.png").is_file()


def test_the_loop_finder_restores_the_weights_and_suggests_a_swept_rate():
    import tensorflow as tf

    from templates.training.multi_worker import find_learning_rate_multi_worker

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    before = [weight.copy() for weight in model.get_weights()]
    finding = find_learning_rate_multi_worker(
        choose_strategy("cpu"), lambda: model,
        lambda context: tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16), 16,
        steps=60)
    for restored, saved in zip(model.get_weights(), before):
        np.testing.assert_array_equal(restored, saved)
    rates = finding.learning_rates
    assert 3 <= len(rates) <= 60 and rates == sorted(rates)
    assert rates[0] <= finding.suggestion <= rates[-1]
    # The loss first falls, then the sweep stops once it diverges at high rates.
    assert min(finding.smoothed_losses) < finding.smoothed_losses[0]


MIRRORED_HEAD_SCRIPT = """
import json, sys
import numpy as np, tensorflow as tf, keras
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
from templates.training.phases import train_head
from templates.models.pretrained import TransferModel
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 6)).astype("float32")
y = (x[:, 0] > 0).astype("int32")
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
with strategy.scope():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    backbone = keras.Model(inputs, keras.layers.Dense(8, activation="tanh")(inputs))
    head_inputs = keras.Input((8,))
    head = keras.Model(head_inputs, keras.layers.Dense(2, activation="softmax")(head_inputs))
    transfer = TransferModel(backbone, head)
    history = train_head(transfer, data, data, epochs=20, learning_rate=0.05,
                         batch_size=16, seed=0, verbose=0)
from templates.reports.evaluation import predict_labelled
with strategy.scope():
    probabilities, labels = predict_labelled(transfer.model, data)
json.dump({"replicas": strategy.num_replicas_in_sync,
           "val_accuracy": history.history["val_accuracy"],
           "predicted_rows": len(probabilities), "labels": len(labels)}, sys.stdout)
"""


def test_cached_head_features_train_under_a_mirrored_strategy(subprocess_env):
    # Two logical CPUs stand in for GPUs. Keras 3.15's predict_on_batch under a
    # several-replica strategy returns every replica's outputs for the whole batch
    # (twice the rows here), which broke the feature cache (features no longer matched
    # the labels) and would have skewed the evaluation report; batch_predictor calls
    # the model instead. The cached features then train the head through array_batches
    # (tf.data reading NumPy-drawn orders) with its optimiser built at compile time.
    result = subprocess.run([sys.executable, "-c", MIRRORED_HEAD_SCRIPT], env=subprocess_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["replicas"] == 2
    assert outcome["predicted_rows"] == outcome["labels"] == 96
    assert outcome["val_accuracy"][-1] >= 0.9


@pytest.mark.acceptance  # two recipe runs, one on a one-worker cluster
def test_a_multi_worker_checkpoint_folder_resumes_on_one_machine(subprocess_env, tmp_path):
    """Issue 38: one implementation of the phases. The multi-worker loop writes the
    checkpoint files run_transfer writes on one machine, so a run started on a (here
    one-worker) cluster resumes under model.fit: its head is restored, not retrained,
    and only the fine-tuning trains."""
    arguments = [*colour_sentences(tmp_path), "--head-epochs", "3", "--output-dir",
                 str(tmp_path / "run")]
    cluster = json.dumps({"cluster": {"worker": [f"127.0.0.1:{free_port()}"]},
                          "task": {"type": "worker", "index": 0}})
    cwd = subprocess_env["PYTHONPATH"].split(":")[0]
    first = subprocess.run(
        [sys.executable, "-m", "recipes.glove_text_classification", *arguments,
         "--fine-tune-epochs", "0", "--strategy", "multi_worker"],
        env={**subprocess_env, "TF_CONFIG": cluster}, capture_output=True, text=True,
        timeout=300, cwd=cwd)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    checkpoints = tmp_path / "run" / "checkpoints"
    assert json.loads((checkpoints / "head.done.json").read_text()) == {"phase": "head",
                                                                         "epochs": 3}
    head_epochs = json.loads((checkpoints / "head.epochs.json").read_text())
    resumed = subprocess.run(
        [sys.executable, "-m", "recipes.glove_text_classification", *arguments,
         "--fine-tune-epochs", "2", "--strategy", "cpu", "--resume"],
        env=subprocess_env, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "head restored; fine_tune continues from its epoch 1" in resumed.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["resumed"] == {"finished_phases": ["head"], "phase": "fine_tune",
                                  "epoch": 1}
    # Restored from the loop's files, not retrained: its epochs are the loop's.
    assert json.loads((checkpoints / "head.epochs.json").read_text()) == head_epochs
    assert len(json.loads((checkpoints / "fine_tune.epochs.json").read_text())) == 2
    assert metrics["test_accuracy"] >= 0.9
