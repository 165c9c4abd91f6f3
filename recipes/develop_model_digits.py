"""
Title: The develop-model approach on handwritten digits, measured against scratch
Description: Develop a source model that tells odd from even digits (plenty of cheap
labels), check it beats a naive baseline, reuse it to tell digits 5-9 apart with only a
few labels per class, and report whether transfer helped (start, slope, asymptote) and
how much of the source model to reuse.

How to run (no download: scikit-learn ships the 1,797 real 8x8 scans):

    python -m recipes.develop_model_digits --labels-per-class 5 --output-dir runs/digits
    python -m recipes.develop_model_digits --select-from all --select-only  # rank the tasks
    python -m recipes.develop_model_digits --help

The shared training options (`--find-lr`, `--schedule`, `--patience`...) apply to the
transferred and the scratch runs alike. Outputs in `--output-dir`: `source/TASK/` (the
source model and its baseline check, reused by later runs), `transfer_report.json/.png`,
`reuse_sweep.json/.png`, `evaluation/` (the first seed's transferred model) and
`metrics.json`.

## The idea

The target task (tell 5, 6, 7, 8, 9 apart) has only a handful of labelled examples.
A related source task has plenty: tell odd from even, on every scan of 0-4 and on the
spare scans of 5-9 (a coarse label, far cheaper to collect than the digit; none of the
target's training, validation or test scans). To answer it the network must learn the
strokes, loops and corners of every digit, so it should give the target task a head
start. "Should" is not enough: the recipe trains the same architecture from scratch
with the same data, epochs, seeds and optimiser, and reports the difference. This
source was chosen over "tell 0-4 apart" on other splits than the one the tests use
(docs/results.md): with it transfer stays ahead to the end of the budget.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from templates.cli import (  # noqa: E402
    add_hardware_arguments,
    add_selection_arguments,
    add_training_arguments,
    select_source,
    setup_hardware,
    tensorboard_callbacks,
    transfer_plan,
)
from templates.training.finder import (  # noqa: E402
    record_finding,
)
from templates.data.batches import array_batches  # noqa: E402
from templates.data.files import write_json  # noqa: E402
from templates.reports.comparison import compare_with_scratch, reuse_depth_sweep  # noqa: E402
from templates.reports.evaluation import evaluation_report  # noqa: E402
from templates.reports.grad_cam import grad_cam_heatmaps, overlay  # noqa: E402
from templates.reports.selection import Candidate  # noqa: E402
from templates.training.checkpoints import TrainingState  # noqa: E402
from templates.training.develop import (
    UnskilledSourceModelError,
    develop_model,
    reuse_model,
)
from templates.training.phases import find_head_learning_rate  # noqa: E402

# Every run below builds new small models, and each model traces its own training and
# evaluation functions: that is expected here, so TensorFlow's warning about functions
# "retraced" in a loop would only alarm the reader.
logging.getLogger("tensorflow").addFilter(
    lambda record: "triggered tf.function retracing" not in record.getMessage())

TARGET_DIGITS = (5, 6, 7, 8, 9)
# Candidate source tasks, each labelled on the scans the target does not use (every
# 0-4 scan and the spare half of the 5-9 scans): the classes of each, in label order.
# `unrelated` is a deliberately unrelated control: jittered copies of noise patterns,
# each pattern labelled at random; learnable (it passes the baseline check) by
# memorising the patterns, nothing like strokes.
SOURCE_TASKS = {
    "parity": ("even", "odd"),                              # the digit modulo 2
    "low_digits": ("0", "1", "2", "3", "4"),                # tell 0-4 apart (0-4 scans)
    "loops": ("no loop", "loop"),                           # 0, 6, 8, 9 have closed loops
    "unrelated": ("a", "b", "c", "d"),  # random labels of noise patterns
}


def source_labels(task: str, images: np.ndarray, digits: np.ndarray, rng):
    """The scans and labels of one source task (``unrelated``: as many noise images)."""
    if task == "parity":
        return images, digits % 2
    if task == "low_digits":
        keep = digits < 5
        return images[keep], digits[keep]
    if task == "loops":
        return images, np.isin(digits, (0, 6, 8, 9)).astype(int)
    if task == "unrelated":
        # 200 noise patterns, each given one of 4 labels at random, seen as jittered
        # copies: learnable by memorising the patterns (held-out copies are recognised),
        # useless for strokes.
        patterns = rng.uniform(0, 16, size=(200, *images.shape[1:]))
        pattern_labels = rng.integers(0, 4, size=len(patterns))
        which = rng.integers(0, len(patterns), size=len(images))
        copies = patterns[which] + rng.normal(0, 1.5, size=images.shape)
        return np.clip(copies, 0, 16).astype("float32"), pattern_labels[which]
    raise ValueError(f"Unknown source task {task!r}; the tasks are {', '.join(SOURCE_TASKS)}.")


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.develop_model_digits",
        description="Develop-model transfer from odd-vs-even to digits 5-9, vs scratch.",
    )
    parser.add_argument("--labels-per-class", type=int, default=5,
                        help="Labelled target training examples per digit.")
    parser.add_argument("--source-task", default="parity", choices=sorted(SOURCE_TASKS),
                        help="The source task: parity (odd vs even, the default), "
                        "low_digits (tell 0-4 apart), loops (0, 6, 8, 9 against the rest), "
                        "unrelated (memorised noise patterns: a control).")
    parser.add_argument("--seed", type=int, default=0, help="First seed.")
    parser.add_argument("--seeds", type=int, default=5,
                        help="Number of seeds for the transfer report.")
    parser.add_argument("--source-epochs", type=int, default=30,
                        help="Epochs of source-model training (odd vs even).")
    parser.add_argument("--head-epochs", dest="epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--skip-sweep", action="store_true",
                        help="Skip the reuse-depth sweep.")
    parser.add_argument("--learning-rate", type=float, default=1e-2,
                        help="Head learning rate of the transferred model, and the scratch "
                             "model's learning rate.")
    parser.add_argument("--fine-tune-learning-rate", type=float, default=1e-3)
    parser.add_argument("--output-dir", default="runs/develop_model_digits")
    # The shared training options. Here --find-lr measures the head's rate on the target
    # data and uses it for transfer and scratch alike; there is no early stopping by
    # default, because the comparison is about a fixed budget.
    add_training_arguments(parser, patience=0, restore_best=False)
    add_hardware_arguments(parser)
    add_selection_arguments(parser, "Candidate source tasks by name (or all): "
                            f"{', '.join(SOURCE_TASKS)}.")
    parser.set_defaults(batch_size=8)  # target examples per batch and replica
    parser.add_argument("--resume", action="store_true", help="Continue an interrupted run "
                        "in --output-dir: finished runs are reused, not retrained.")
    return parser.parse_args(argv)


# ## Data
# scikit-learn's digits are real scans: 8x8 pixels, 16 grey levels.
def load_digits_by_task(labels_per_class: int, seed: int, validation_per_class: int = 80,
                        source_task: str = "parity"):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[..., None].astype("float32")  # (1797, 8, 8, 1), values 0..16
    labels = digits.target
    rng = np.random.default_rng(seed)

    # Target: a few labels per class for training, `validation_per_class` for
    # validation (the learning curves: 80 per class make one scan 0.25 points), and of
    # the rest half for the test and half for the source task.
    train, validation, test = [], [], []
    source = np.flatnonzero(~np.isin(labels, TARGET_DIGITS)).tolist()
    for digit in TARGET_DIGITS:
        members = np.flatnonzero(labels == digit)
        rng.shuffle(members)
        train += members[:labels_per_class].tolist()
        validation += members[labels_per_class:labels_per_class + validation_per_class].tolist()
        rest = members[labels_per_class + validation_per_class:]
        if len(rest) < 2:
            raise ValueError(
                f"--labels-per-class {labels_per_class} leaves no test scans of digit "
                f"{digit} ({len(members)} scans, {validation_per_class} for validation); "
                f"use at most {len(members) - validation_per_class - 2}.")
        test += rest[:len(rest) // 2].tolist()
        source += rest[len(rest) // 2:].tolist()
    # Source: the task's labels for every scan the target does not use.
    source_images, source_targets = source_labels(source_task, images[source],
                                                  labels[source], rng)
    order = rng.permutation(len(source_targets))
    held_out, kept = order[:len(order) // 5], order[len(order) // 5:]

    def pairs(indices, offset):
        return images[indices], (labels[indices] - offset).astype("int32")

    def task(indices):
        return source_images[indices], source_targets[indices].astype("int32")

    def shifted(pair):
        # Each source scan also moved one pixel each way: features that do not depend on
        # where a stroke sits serve new digits better (docs/results.md).
        x, y = pair
        views = [x] + [np.roll(x, step, axis=axis) for axis in (1, 2) for step in (-1, 1)]
        return np.concatenate(views), np.concatenate([y] * len(views))

    return {
        "source_train": shifted(task(kept)),
        "source_held_out": task(held_out),
        "train": pairs(np.array(train), 5), "validation": pairs(np.array(validation), 5),
        "test": pairs(np.array(test), 5),
    }


# ## The architecture
# One small convolutional network serves both tasks; only the last layer differs.
def build_digit_model(num_classes: int = len(TARGET_DIGITS)) -> keras.Model:
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Rescaling(1 / 16.0, name="scale")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_1")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv_2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    # Dropout makes the source features less specific to the source task.
    x = keras.layers.Dropout(0.4, name="dropout")(x)
    x = keras.layers.Dense(128, activation="relu", name="features")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def _evaluation_report(transfer, state, data, test, args) -> dict:
    phase = "fine_tune" if args.fine_tune_epochs else "head"
    state.restore(f"seed{args.seed}.transfer.{phase}", transfer.model)
    images = data["test"][0]

    def as_rgb(name):  # "test_12" -> the 8x8 scan as a 0..255 RGB image
        return np.repeat(images[int(name.split("_")[1])] * 16.0, 3, axis=-1)

    names = [str(digit) for digit in TARGET_DIGITS]
    heatmaps, probabilities = grad_cam_heatmaps(transfer.model, images[:6])
    overlays = [overlay(as_rgb(f"test_{index}"), heatmap) for index, heatmap in enumerate(heatmaps)]
    captions = [f"true {names[label]}, said {names[row.argmax()]} ({row.max():.0%})"
                for label, row in zip(data["test"][1][:6], probabilities)]
    return evaluation_report(
        transfer.model, test, names, os.path.join(args.output_dir, "evaluation"),
        examples=[f"test_{index}" for index in range(len(images))], load_example=as_rgb,
        title="Digits 5-9 (transferred, first seed)", grad_cam=(overlays, captions))


def develop_source(args, task: str, data, replicas: int = 1):
    """Develop (or reload) the source model of ``task`` and check its skill."""
    return develop_model(
        lambda: build_digit_model(len(SOURCE_TASKS[task])), data["source_train"],
        data["source_held_out"], num_classes=len(TARGET_DIGITS),
        source_epochs=args.source_epochs, batch_size=32 * replicas,
        directory=os.path.join(args.output_dir, "source", task), seed=args.seed, verbose=0)


def source_task_candidate(args, task: str, replicas: int = 1):
    """A selection candidate for ``task``: its source model reused up to the pooling
    layer, with its own head for LEEP; ``None`` (and a line saying so) when the source
    model fails its baseline check."""
    try:
        developed = develop_source(args, task, load_digits_by_task(
            args.labels_per_class, args.seed, source_task=task), replicas)
    except UnskilledSourceModelError as error:
        print(f"Source task {task}: refused, not ranked ({error})")
        return None
    source = developed.source_model
    return Candidate(task, lambda: reuse_model(source, len(TARGET_DIGITS), cut_at="pool",
                                               pooling="flatten"),
                     source_classifier=lambda transfer: source, pooling="flatten",
                     details={"source_check": developed.source_check.__dict__})


def main(argv=None) -> int:
    args = parse_arguments(argv)
    # ## Hardware
    # --strategy / --mixed-precision / --xla as in the other recipes (a CPU is plenty
    # for 8x8 scans); batch sizes below count per replica.
    choice = setup_hardware(args)
    with choice.strategy.scope():
        return run(args, choice.replicas)


def run(args: argparse.Namespace, replicas: int = 1) -> int:
    """The recipe, inside the strategy's scope."""
    started = time.perf_counter()
    os.makedirs(args.output_dir, exist_ok=True)

    # ## Step 0 (--select-from): which source task?
    # Each candidate task's source model is developed and checked against its baseline
    # first; then its frozen features of the target's few labelled scans are scored
    # (linear and k-NN probes on the validation scans, LogME, and LEEP through the
    # source's own head) in seconds, and the pick is the task the rest of the run uses.
    if args.select_from:
        tasks = list(SOURCE_TASKS) if args.select_from == ["all"] else args.select_from
        target = load_digits_by_task(args.labels_per_class, args.seed)
        candidates = [candidate for task in tasks
                      if (candidate := source_task_candidate(args, task, replicas))]
        selection = select_source(
            args, candidates, array_batches(*target["train"], batch_size=args.batch_size,
                                            seed=args.seed),
            array_batches(*target["validation"], batch_size=512, shuffle=False),
            title="Digits 5-9: candidate source tasks")
        if args.select_only:
            return 0
        args.source_task = selection.pick

    # ## Steps 1-2: develop the source model and check it is skilful
    # The source model (the same network with one output per source class) must clearly
    # beat the majority-class baseline on held-out source scans; otherwise
    # develop_model raises instead of transferring nothing. It is saved under
    # source/TASK/, so a second run skips this training.
    data = load_digits_by_task(args.labels_per_class, args.seed, source_task=args.source_task)
    developed = develop_source(args, args.source_task, data, replicas)
    check = developed.source_check
    print(f"Source model ({args.source_task}): held-out accuracy {check.accuracy:.3f} vs "
          f"majority-class baseline {check.baseline_accuracy:.3f} -> skilful: {check.skilful}")

    # ## Steps 3-4 vs scratch: the transfer report
    # Transfer: the source network's convolutions (up to the pooling layer; the dense
    # feature layer is specific to odd-vs-even, see the sweep below), frozen, under a new
    # head; then everything fine-tuned at a lower learning rate. Scratch: the identical
    # architecture, randomly initialised, trained for the same epochs on the same data.
    # Epoch e's order depends only on (seed, e), so a resumed run matches. Validation
    # and test sets are small: one batch each keeps the per-epoch validation to a step.
    train = array_batches(*data["train"], batch_size=args.batch_size * replicas, seed=args.seed)
    validation = array_batches(*data["validation"], batch_size=512, shuffle=False)
    test = array_batches(*data["test"], batch_size=512, shuffle=False)
    # One plan for both sides; no early stopping by default (--patience 0), because
    # the report compares a fixed budget. (--find-lr is applied below, once for both.)
    budget = transfer_plan(args, data["train"][1], batch_size=args.batch_size * replicas,
                           find_learning_rates=False, callbacks={})

    def reuse(source_model, cut_at="pool"):
        return reuse_model(source_model, len(TARGET_DIGITS), cut_at=cut_at, pooling="flatten")

    def scratch():
        return reuse(build_digit_model()).model

    # --find-lr measures the head's rate on the target data; transfer and scratch then
    # both use it, so the comparison stays fair.
    if args.find_lr:
        keras.utils.set_random_seed(args.seed)
        budget.learning_rate = record_finding(
            find_head_learning_rate(reuse(developed.source_model), train,
                                    batch_size=args.batch_size * replicas, seed=args.seed),
            args.output_dir, "head", title="Learning-rate finder: digits head",
            default=budget.learning_rate)
        keras.backend.clear_session()

    # Every run is checkpointed and kept when it finishes: --resume reuses finished runs
    # and continues the one in progress. An epoch here is as short as a backup, so
    # backups are paced to at most a tenth of the training time.
    state = TrainingState(os.path.join(args.output_dir, "checkpoints"), resume=args.resume,
                          backup_overhead=0.1)
    logs = lambda phase: tensorboard_callbacks(args.tensorboard, phase)  # noqa: E731
    report = compare_with_scratch(
        lambda: reuse(developed.source_model),
        scratch, train, validation, test, budget=budget,
        seeds=[args.seed + offset for offset in range(args.seeds)], slope_epochs=5,
        state=state, phase_callbacks=logs,
    )
    report.write_json(os.path.join(args.output_dir, "transfer_report.json"))
    report.plot(os.path.join(args.output_dir, "transfer_report.png"),
                title=f"{args.source_task} -> digits 5-9, {args.labels_per_class} labels per class")
    print(report.summary_text())

    # ## What the transferred model gets wrong
    # The first seed's transferred model, restored from its checkpoint: per-digit
    # scores, the confusion matrix, the most confidently wrong scans and Grad-CAM.
    evaluation = _evaluation_report(reuse(developed.source_model), state, data, test, args)

    # ## How much to reuse
    # Reuse the source network up to each depth that adds weights (the first
    # convolution; the second with its pooling, which has no weights of its own; the
    # dense feature layer) and measure target skill each time.
    cut_points = [] if args.skip_sweep else ["conv_1", "pool", "features"]
    # Reusing up to "pool" with the first seed is exactly the report's first transferred
    # run, so the sweep restores that run instead of training it again.
    reuse_depth_sweep(
        lambda cut: reuse(developed.source_model, cut),
        cut_points, train, validation, test, budget=budget, seed=args.seed, state=state,
        trained_runs={"pool": f"seed{args.seed}.transfer"}, phase_callbacks=logs,
        directory=args.output_dir,
        title=f"Reuse depth, {args.source_task} -> 5-9 ({args.labels_per_class} labels/class)",
    )

    write_json(os.path.join(args.output_dir, "metrics.json"), {
        "source_task": args.source_task, "source_check": check.__dict__,
        "labels_per_class": args.labels_per_class,
        "target_images": {name: int(len(data[name][1])) for name in ("train", "validation",
                                                                      "test")},
        "transfer_test_accuracy": report.mean("transfer", "test_accuracy"),
        "scratch_test_accuracy": report.mean("scratch", "test_accuracy"),
        "plan": budget.to_dict(),
        "evaluation": {"set": "test", "seed": args.seed, "accuracy": evaluation["accuracy"],
                       "macro_f1": evaluation["macro"]["f1"]},
        "seconds": round(time.perf_counter() - started, 1),
    })
    print(f"Outputs in {args.output_dir} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as error:
        # Expected failures (bad arguments, an unskilled source model) get one message.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
