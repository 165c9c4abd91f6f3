"""`templates.export.formats`: TFLite exports, plain and quantised, scored by the interpreter."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from templates.export.formats import TFLITE_MODES, export_tflite, tflite_accuracy


def bright_dark(count=128, seed=0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 2).astype("int32")
    images = rng.uniform(0, 120, (count, 16, 16, 3)) + labels[:, None, None, None] * 120
    return images.astype("float32"), labels


def test_quantised_exports_are_smaller_and_keep_their_accuracy(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)  # most of the weights: 200k
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    images, labels = bright_dark()
    model.fit(images, labels, epochs=3, batch_size=16, verbose=0)
    test_images, test_labels = bright_dark(64, seed=1)
    keras_accuracy = model.evaluate(test_images, test_labels, verbose=0, return_dict=True)[
        "accuracy"]
    batches = tf.data.Dataset.from_tensor_slices((test_images, test_labels)).batch(16)

    sizes, accuracies = {}, {}
    for mode in TFLITE_MODES:
        path = export_tflite(model, tmp_path, ["dark", "bright"], mode=mode,
                             representative_data=[(images[:32], labels[:32])],
                             filename=f"{mode}.tflite")
        sizes[mode] = os.path.getsize(path)
        accuracies[mode] = tflite_accuracy(path, batches)
    # Weights in int8 take about a quarter of float32's bytes, float16 about half.
    assert sizes["dynamic"] <= sizes["float32"] / 3 and sizes["int8"] <= sizes["float32"] / 3
    assert sizes["float16"] <= sizes["float32"] * 0.6
    for mode, accuracy in accuracies.items():  # run by the interpreter, quantised
        assert accuracy >= keras_accuracy - 0.05, (mode, accuracies, keras_accuracy)
    assert (tmp_path / "labels.txt").read_text().split() == ["dark", "bright"]
    # Where the bytes go (benchmarks.tflite_sizes): the parts add up to the file; only
    # the quantised files carry quantisation parameters, int8 per channel of its
    # weights and biases as well as per activation.
    from benchmarks.tflite_sizes import size_breakdown

    parts = {mode: size_breakdown(tmp_path / f"{mode}.tflite") for mode in TFLITE_MODES}
    for mode, part in parts.items():
        assert part["file_bytes"] == sizes[mode]
        assert part["weight_bytes"] + part["quantization_bytes"] + part["name_bytes"] + part[
            "other_bytes"] == sizes[mode]
    assert parts["float32"]["quantization_bytes"] == parts["float16"]["quantization_bytes"] == 0
    assert parts["float32"]["weight_bytes"] >= 4 * 200_000
    assert parts["int8"]["quantized_channels"] > parts["dynamic"]["quantized_channels"] >= 16

    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(model, tmp_path, mode="int8")
    with pytest.raises(ValueError, match="Unknown TFLite mode"):
        export_tflite(model, tmp_path, mode="int4")


def test_load_model_in_a_fresh_process_finds_the_schedules_and_optimisers(tmp_path):
    """`load_model` registers every custom object the library compiles in, so a model saved
    with a warm-up schedule and a discriminative optimiser loads in a new process."""
    import subprocess
    import sys

    from conftest import REPOSITORY

    save = (
        "import keras, sys\n"
        "from templates.training.optimizers import DiscriminativeAdam\n"
        "from templates.training.saving import save_model\n"
        "from templates.training.schedules import WarmupCosine\n"
        "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])\n"
        "model.compile(DiscriminativeAdam(WarmupCosine(0.1, 10)), 'mse')\n"
        "model.fit(keras.ops.ones((4, 3)), keras.ops.ones((4, 2)), verbose=0)\n"
        "save_model(model, sys.argv[1])\n")
    load = ("import sys\nfrom templates.training.saving import load_model\n"
            "print(type(load_model(sys.argv[1]).optimizer).__name__)\n")
    path = str(tmp_path / "model.keras")
    for script in (save, load):
        result = subprocess.run([sys.executable, "-c", script, path], capture_output=True,
                                text=True, cwd=REPOSITORY, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "DiscriminativeAdam"
