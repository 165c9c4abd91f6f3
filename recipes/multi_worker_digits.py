"""
Title: Data-parallel training on several machines with MultiWorkerMirroredStrategy
Description: Train a small CNN on scikit-learn's handwritten digits with one process
per machine, gradients all-reduced every step, checkpoints written by the chief and
resumable. Keras 3's `model.fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585); `templates.train_multi_worker` drives the same Keras model with
a `strategy.run` loop instead. This recipe trains one network from scratch (no reused
part, no two phases), so it drives that loop itself; a transfer across machines is
`run_transfer`, as the cats and text recipes run it with `--strategy multi_worker`.

How to run, on each of two machines (same command, its own task index):

    export TF_CONFIG='{"cluster": {"worker": ["host-a:12345", "host-b:12345"]},
                       "task": {"type": "worker", "index": 0}}'      # index 1 on host-b
    python -m recipes.multi_worker_digits --output-dir /shared/runs/digits_mw

Both machines need the same code and packages, and the port open between them. The
chief (worker 0) writes checkpoints and outputs to `--output-dir`; give it a folder
both machines see (NFS, a mounted bucket) so `--resume` works after a crash on any of
them. Every worker writes `worker_INDEX.json` (replicas, loss per epoch, a digest of its
final weights: identical on all workers); the chief also writes `metrics.json` and
`evaluation/` (per-digit scores, confusion matrix, most confidently wrong scans) on a
seeded fifth of the scans held out from training, and with `--tensorboard DIR` the loss
and learning rate per epoch. On one machine, two processes on 127.0.0.1
(ports 12345 and 12346) do the same; `tests/test_multi_worker.py` does exactly that.
Without TF_CONFIG the recipe trains on this machine alone.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from templates import cli, require_tensorflow  # noqa: E402

require_tensorflow("recipes.multi_worker_digits", "its loop is tf.distribute's "
                       "MultiWorkerMirroredStrategy; on JAX, --strategy mirrored in the other "
                       "recipes trains on several devices")
import tensorflow as tf  # noqa: E402

from templates import (  # noqa: E402
    SCHEDULES,
    TrainingState,
    is_chief,
    learning_rate_multi_worker,
    local_predict,
    scan_evaluation_report,
    scheduled,
    task_index,
    train_multi_worker,
    weights_digest,
    write_json,
)


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m recipes.multi_worker_digits",
                                     description=__doc__.split("How to run")[0].strip())
    parser.add_argument("--epochs", type=cli.number(int, 1), default=5)
    parser.add_argument("--per-replica-batch-size", type=cli.number(int, 1, 65536), default=32)
    parser.add_argument("--learning-rate", type=cli.number(float, above=0, maximum=1), default=2e-3)
    # Of the shared training options, the schedule, the finder and TensorBoard logs
    # apply to this loop; early stopping and discriminative rates are left to the
    # model.fit recipes (there is no validation pass and one optimiser here).
    parser.add_argument("--schedule", choices=SCHEDULES, default="constant",
                        help="Learning-rate schedule over the whole run (the rate given is "
                             "the peak for one_cycle).")
    parser.add_argument("--seed", type=cli.number(int, 0, 2**32 - 1), default=0)
    parser.add_argument("--resume", action="store_true",
                        help="Continue from the chief's checkpoint in OUTPUT_DIR/checkpoints.")
    parser.add_argument("--output-dir", default="runs/multi_worker_digits")
    parser.add_argument("--find-learning-rates", action="store_true",
                        help="Run the learning-rate finder on the same loop first and train "
                             "at its suggestion; writes lr_finder_train.png/.json.")
    parser.add_argument("--tensorboard", metavar="DIR",
                        help="TensorBoard logs (loss and learning rate per epoch, written "
                             "by the chief).")
    cli.add_hardware_arguments(parser)
    return parser.parse_args(argv)


def build_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Rescaling(1 / 16.0)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    # The output stays float32 under a mixed precision policy (a float16 softmax would
    # feed the loss rounded probabilities).
    outputs = keras.layers.Dense(10, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def main(argv=None) -> int:
    args = parse_arguments(argv)
    keras.utils.set_random_seed(args.seed)
    # With TF_CONFIG set, --strategy auto means multi_worker: every process joins the
    # cluster here (it waits for the others). Mixed precision float16 gets loss scaling
    # in the loop; --xla does not apply (the loop's step is a plain tf.function).
    if args.strategy == "auto" and os.environ.get("TF_CONFIG"):
        args.strategy = "multi_worker"
    choice = cli.setup_hardware(args, multi_worker=True)
    with cli.own_output_dir(args, choice):  # the chief holds --output-dir
        return train(args, choice)


def train(args: argparse.Namespace, choice) -> int:
    """The recipe on every worker: data, model, the loop, the outputs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # A seeded fifth of the scans is held out for the evaluation report.
    order = np.random.default_rng(args.seed).permutation(len(digits.target))
    held_out, kept = order[: len(order) // 5], order[len(order) // 5:]
    images = digits.images[kept][..., None].astype("float32")
    labels = digits.target[kept].astype("int32")
    global_batch = choice.global_batch_size(args.per_replica_batch_size)
    steps_per_epoch = len(labels) // global_batch

    # Each input pipeline (one per worker) reads its own shard of the examples.
    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        dataset = dataset.shard(context.num_input_pipelines, context.input_pipeline_id)
        dataset = dataset.shuffle(len(labels), seed=args.seed).repeat()
        return dataset.batch(context.get_per_replica_batch_size(global_batch))

    with choice.strategy.scope():  # one model, mirrored on every worker
        model = build_model()
    learning_rate = args.learning_rate
    if args.find_learning_rates:
        # The finder on the same loop (every worker in step); the chief keeps the plot.
        learning_rate = learning_rate_multi_worker(choice, lambda: model, dataset_fn,
                                                   global_batch, args.learning_rate,
                                                   args.output_dir)
    # Checkpointed as one phase, "train", in the files run_transfer writes: the chief
    # writes them, every worker resumes from them (a folder they share).
    state = TrainingState(os.path.join(args.output_dir, "checkpoints"), resume=args.resume)
    model, history = train_multi_worker(
        choice, lambda: model, dataset_fn, global_batch, steps_per_epoch, args.epochs,
        learning_rate=scheduled(learning_rate, args.schedule, args.epochs, steps_per_epoch),
        state=state, log_dir=args.tensorboard)

    # Every worker holds the same weights now. A plain call of the model reads them
    # locally (model.predict would run collectives, and the other workers may be gone).
    probabilities = keras.ops.convert_to_numpy(model(images, training=False))
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})  # as recorded
    report = {"replicas": history.replicas, "loss": history.loss,
              "epochs_run": history.epochs_run, "weights_digest": weights_digest(model),
              "train_accuracy": accuracy, "chief": is_chief(choice.strategy), "task": task}
    write_json(os.path.join(args.output_dir, f"worker_{task_index()}.json"), report)
    print(f"replicas {history.replicas}; loss per epoch "
          f"{', '.join(f'{value:.4f}' for value in history.loss)}; "
          f"weights {report['weights_digest']}", flush=True)
    if report["chief"]:
        # The evaluation folder on the held-out scans, from plain calls on the chief's
        # copy (no collective op, so the other workers need not wait).
        evaluation = scan_evaluation_report(
            model, digits.images[held_out][..., None].astype("float32"),
            digits.target[held_out].astype("int32"), [str(digit) for digit in range(10)],
            os.path.join(args.output_dir, "evaluation"), "Digits, held-out fifth (multi-worker)",
            grad_cam_count=0, predict=local_predict(model))
        report["evaluation"] = {"set": "held-out fifth", "accuracy": evaluation["accuracy"],
                                "macro_f1": evaluation["macro"]["f1"]}
        write_json(os.path.join(args.output_dir, "metrics.json"), report)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
