"""Benchmark: the fixed costs that dominate small runs, before and after the library's fixes.

Prints one JSON object with:

* ``evaluate_ms``: one ``evaluate`` call on 180 small examples given as NumPy arrays,
  as a `keras.utils.PyDataset` (`ShuffledArrays`) and as `array_batches` (a `tf.data`
  pipeline on the TensorFlow backend). Keras rebuilds its own `tf.data` pipeline for
  arrays and PyDatasets on every pass; ``fit`` pays the same per epoch.
* ``first_fit_seconds``: a new small model's first 15-epoch ``fit`` (tracing included),
  compiled the usual way and with `compile_classifier`, which creates the optimiser's
  and the metric's variables before the first trace (``train_traces`` counts the traces).
* ``embedding_step_ms``: one fine-tuning step of the GloVe recipe's CNN on a
  ``--vocabulary``-row embedding of which only ``--trainable-rows`` rows can be reached
  by training, with the whole table trainable and with `PretrainedEmbedding`'s
  ``trainable_rows`` (``split_table``).
* ``digits_recipe_seconds`` (unless ``--skip-recipe``): wall time of
  ``python -m recipes.develop_model_digits`` with its defaults, imports included.

    python -m benchmarks.small_run_overheads
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from templates.data.batches import ShuffledArrays, array_batches  # noqa: E402
from templates.training.compilation import compile_classifier  # noqa: E402


def best_ms(function, repeats: int) -> float:
    function()  # warm-up (tracing)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return round(1000 * min(timings), 1)


class CountingModel(keras.Model):
    traces = 0

    def train_step(self, data):
        CountingModel.traces += 1
        return super().train_step(data)


def small_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D()(x))
    return CountingModel(inputs, keras.layers.Dense(5, activation="softmax")(x))


def evaluate_costs(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.random((180, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 5, 180).astype("int32")
    model = small_model()
    compile_classifier(model, 1e-3)
    batches = array_batches(x, y, 256, shuffle=False)
    return {
        "numpy_arrays": best_ms(lambda: model.evaluate(x, y, batch_size=256, verbose=0),
                                repeats),
        "pydataset": best_ms(lambda: model.evaluate(ShuffledArrays(x, y, 256, seed=0),
                                                    verbose=0), repeats),
        "array_batches": best_ms(lambda: model.evaluate(batches, verbose=0), repeats),
    }


def first_fit_costs() -> dict:
    rng = np.random.default_rng(1)
    x = rng.random((25, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 5, 25).astype("int32")
    results = {}
    for name in ("keras_compile", "compile_classifier"):
        keras.utils.set_random_seed(0)
        model = small_model()
        if name == "keras_compile":
            model.compile(optimizer=keras.optimizers.Adam(1e-3),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        else:
            compile_classifier(model, 1e-3)
        CountingModel.traces = 0
        data = array_batches(x, y, 8, seed=0)
        started = time.perf_counter()
        model.fit(data, epochs=15, verbose=0)
        results[name] = {"seconds": round(time.perf_counter() - started, 2),
                         "train_traces": CountingModel.traces}
    return results


def embedding_costs(vocabulary: int, trainable_rows: int, repeats: int) -> dict:
    from templates.models.embeddings import EmbeddingMatrix
    from templates.models.freezing import unfreeze_from
    from templates.models.text_classifiers import pretrained_text_classifier

    rng = np.random.default_rng(2)
    matrix = EmbeddingMatrix(
        matrix=rng.normal(size=(vocabulary, 50)).astype("float32"),
        pretrained_rows=np.ones(vocabulary, bool), vocabulary=[""] * vocabulary,
        hits=vocabulary, case_folded_hits=0, misses=0, missing_examples=[])
    ids = rng.integers(0, trainable_rows, size=(32, 53)).astype("int32")
    labels = rng.integers(0, 2, 32).astype("int32")
    results = {}
    for name, rows in (("whole_table_trainable", None), ("split_table", trainable_rows)):
        keras.utils.set_random_seed(0)
        transfer = pretrained_text_classifier(matrix, 2, 53, "cnn", filters=200,
                                              trainable_rows=rows)
        unfreeze_from(transfer.backbone, None)
        compile_classifier(transfer.model, 1e-4)
        results[name] = best_ms(lambda: transfer.model.train_on_batch(ids, labels), repeats)
    return results


def digits_recipe_seconds() -> dict:
    with tempfile.TemporaryDirectory() as output:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "recipes.develop_model_digits", "--output-dir", output],
            capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-2000:])
        with open(os.path.join(output, "transfer_report.json"), encoding="utf-8") as handle:
            difference = json.load(handle)["difference"]
    return {"wall_seconds": round(seconds, 1),
            "transfer_minus_scratch": {key: round(value, 4) for key, value in
                                       difference.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.small_run_overheads",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--vocabulary", type=int, default=115000)
    parser.add_argument("--trainable-rows", type=int, default=15000)
    parser.add_argument("--skip-recipe", action="store_true")
    args = parser.parse_args(argv)
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "keras": keras.__version__, "backend": keras.backend.backend()},
        "evaluate_ms": evaluate_costs(args.repeats),
        "first_fit_seconds": first_fit_costs(),
        "embedding_step_ms": {"vocabulary": args.vocabulary,
                              "trainable_rows": args.trainable_rows,
                              **embedding_costs(args.vocabulary, args.trainable_rows,
                                                args.repeats)},
    }
    if not args.skip_recipe:
        report["digits_recipe"] = digits_recipe_seconds()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
