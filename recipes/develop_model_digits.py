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

The plan's options (`--find-learning-rates`, `--schedule`...) apply to transfer and scratch
alike. Outputs: `source/TASK/` (the source model and its check, reused by later runs),
`transfer_report.json/.png`, `reuse_sweep.json/.png`, `evaluation/`, `metrics.json`.

## The idea

The target (tell 5-9 apart) has a handful of labels per digit; a related source task
has plenty: odd vs even on every scan the target does not use (a coarse label, far
cheaper to collect). To answer it the network learns the strokes, loops and corners of
every digit, so it should give the target a head start. "Should" is not enough: the
same architecture trains from scratch with the same data, epochs, seeds and optimiser,
and the report shows the difference (the source was chosen on other splits than the
tests use: docs/results.md).
"""

from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from templates import (  # noqa: E402
    SOURCE_TASKS,
    TARGET_DIGITS,
    TransferPlan,
    array_batches,
    cli,
    compare_with_scratch,
    develop_model,
    label_curve,
    load_digits_by_task,
    quiet_retracing_warnings,
    reuse_depth_sweep,
    reuse_model,
    scan_evaluation_report,
    select_source,
    source_model_candidate,
    tensorboard_logs,
)

# Every run below builds new small models, each tracing its own functions: expected
# here, so TensorFlow's "retracing" warning would only alarm the reader.
quiet_retracing_warnings()


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.develop_model_digits",
        description="Develop-model transfer from odd-vs-even to digits 5-9, vs scratch.",
    )
    parser.add_argument("--labels-per-class", type=cli.number(int, 1), default=5,
                        help="Labelled target training examples per digit.")
    parser.add_argument("--source-task", default="parity", choices=sorted(SOURCE_TASKS),
                        help="The source task: parity (odd vs even, the default), "
                        "low_digits (tell 0-4 apart), loops (0, 6, 8, 9 against the rest), "
                        "unrelated (memorised noise patterns: a control).")
    parser.add_argument("--seeds", type=cli.number(int, 1), default=5,
                        help="Runs of the transfer report, seeded from --seed on.")
    parser.add_argument("--source-epochs", type=cli.number(int, 1), default=30,
                        help="Epochs of source-model training.")
    parser.add_argument("--skip-sweep", action="store_true", help="Skip the reuse sweep.")
    cli.add_label_curve_argument(parser)  # K up to --labels-per-class (all: that many)
    parser.add_argument("--output-dir", default="runs/develop_model_digits")
    parser.add_argument("--tensorboard", metavar="DIR",
                        help="Write TensorBoard logs under DIR (one folder per phase).")
    # One plan for transfer and scratch alike (--find-learning-rates measures the head's
    # rate once for both); no early stopping by default: the report compares a fixed
    # budget. --learning-rate is the transferred head's rate and the scratch model's.
    cli.add_plan_arguments(parser, TransferPlan(
        fine_tune_epochs=5, learning_rate=1e-2, fine_tune_learning_rate=1e-3, batch_size=8,
        patience=0, restore_best=False))
    cli.add_hardware_arguments(parser)
    cli.add_selection_arguments(parser, "Candidate source tasks by name (or all): "
                            f"{', '.join(SOURCE_TASKS)}.")
    parser.add_argument("--resume", action="store_true", help="Continue an interrupted run "
                        "in --output-dir: finished runs are reused, not retrained.")
    return parser.parse_args(argv)


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


def develop_source(args, task: str, seed: int, replicas: int = 1):
    """Develop (or reload) the source model of ``task`` and check its skill."""
    data = load_digits_by_task(args.labels_per_class, seed, source_task=task)
    # The source model's own plan: --source-epochs of Adam at 1e-3, 32 scans per batch
    # and replica, the run's seed.
    source_plan = TransferPlan(head_epochs=args.source_epochs, fine_tune_epochs=0,
                               batch_size=32 * replicas, seed=seed)
    return develop_model(
        lambda: build_digit_model(len(SOURCE_TASKS[task])), data["source_train"],
        data["source_held_out"], num_classes=len(TARGET_DIGITS), source_plan=source_plan,
        directory=os.path.join(args.output_dir, "source", task), verbose=0)


def reuse(source_model, cut_at="pool"):
    """The source network up to ``cut_at`` under a new head for digits 5-9."""
    return reuse_model(source_model, len(TARGET_DIGITS), cut_at=cut_at, pooling="flatten")


def main(argv=None) -> int:
    args = parse_arguments(argv)
    # ## Hardware, as in the other recipes; batch sizes count per replica.
    choice = cli.setup_hardware(args)
    with cli.own_output_dir(args, choice), choice.strategy.scope():
        return run_recipe(args, choice)


def run_recipe(args: argparse.Namespace, choice) -> int:
    """The recipe, inside the strategy's scope."""
    started = time.perf_counter()
    os.makedirs(args.output_dir, exist_ok=True)
    # ## The plan: one for transfer and scratch alike; --batch-size counts per replica.
    plan = cli.transfer_plan(args, choice=choice, callbacks={})

    # ## Step 0 (--select-from): which source task?
    # Each candidate's source model is developed and checked against its baseline, then
    # its frozen features of the target scans scored in seconds (probes, LogME, LEEP).
    source_task = args.source_task
    if args.select_from:
        tasks = list(SOURCE_TASKS) if args.select_from == ["all"] else args.select_from
        target = load_digits_by_task(args.labels_per_class, plan.seed)
        candidates = [source_model_candidate(
            task, functools.partial(develop_source, args, task, plan.seed, choice.replicas),
            len(TARGET_DIGITS), cut_at="pool", pooling="flatten") for task in tasks]
        selection = select_source(
            [candidate for candidate in candidates if candidate],
            array_batches(*target["train"], batch_size=plan.batch_size, seed=plan.seed),
            array_batches(*target["validation"], batch_size=512, shuffle=False),
            seed=plan.seed, rank_by=args.select_by, directory=args.output_dir,
            title="Digits 5-9: candidate source tasks")
        if args.select_only:
            return 0
        source_task = selection.pick

    # ## Steps 1-2: develop the source model and check it is skilful
    # The source model (one output per source class) must clearly beat the majority-class
    # baseline on held-out source scans, or develop_model raises instead of transferring
    # nothing. Saved under source/TASK/, a second run skips this training.
    data = load_digits_by_task(args.labels_per_class, plan.seed, source_task=source_task)
    developed = develop_source(args, source_task, plan.seed, choice.replicas)
    check = developed.source_check
    print(f"Source model ({source_task}): held-out accuracy {check.accuracy:.3f} vs "
          f"majority-class baseline {check.baseline_accuracy:.3f} -> skilful: {check.skilful}")

    # ## Steps 3-4 vs scratch: the transfer report
    # Transfer: the source's convolutions (up to the pooling layer; see the sweep),
    # frozen under a new head, then everything fine-tuned at a lower rate. Scratch: the
    # same architecture, randomly initialised, same epochs and data.
    plan = plan.for_training_set(data["train"][1])
    train = array_batches(*data["train"], batch_size=plan.batch_size, seed=plan.seed)
    validation = array_batches(*data["validation"], batch_size=512, shuffle=False)
    test = array_batches(*data["test"], batch_size=512, shuffle=False)
    # Checkpointed: --resume reuses finished runs and continues the one in progress.
    state = cli.checkpoints(args, plan, settings=dict(
        source_task=source_task, labels_per_class=args.labels_per_class,
        seeds=args.seeds, source_epochs=args.source_epochs), backup_overhead=0.1)
    logs = tensorboard_logs(args.tensorboard)
    report = compare_with_scratch(
        lambda: reuse(developed.source_model), lambda: reuse(build_digit_model()).model,
        train, validation, test, plan=plan, repeats=args.seeds, slope_epochs=5, state=state,
        phase_callbacks=logs,
        output_dir=args.output_dir)
    report.write(args.output_dir,
                 f"{source_task} -> digits 5-9, {args.labels_per_class} labels per class")
    print(report.summary_text())

    # ## What the first seed's transferred model gets wrong (restored from its
    # checkpoint): per-digit scores, confusion matrix, worst errors, Grad-CAM.
    transfer = reuse(developed.source_model)
    state.restore(f"seed{plan.seed}.transfer.{plan.phases()[-1]}", transfer.model)
    evaluation = scan_evaluation_report(
        transfer.model, *data["test"], [str(digit) for digit in TARGET_DIGITS],
        os.path.join(args.output_dir, "evaluation"), "Digits 5-9 (transferred, first seed)")

    # ## How much to reuse
    # The source network up to each depth that adds weights (the first convolution; the
    # second with its pooling; the dense feature layer). Up to "pool" with the first
    # seed is the report's first transferred run: the sweep restores it.
    reuse_depth_sweep(
        lambda cut: reuse(developed.source_model, cut),
        [] if args.skip_sweep else ["conv_1", "pool", "features"], train, validation, test,
        plan=report.plan, state=state, phase_callbacks=logs,
        trained_runs={"pool": f"seed{plan.seed}.transfer"}, directory=args.output_dir,
        title=f"Reuse depth, {source_task} -> 5-9 ({args.labels_per_class} labels/class)")

    # ## Where does transfer stop paying? (--label-curve 1 2 5 all)
    # The transferred model and scratch on K of the labelled scans per digit (a new draw
    # per seed), the same validation and test scans: does scratch catch up, and where?
    curve = args.label_curve and label_curve(
        args.label_curve, data["train"][1], lambda rows, seed: array_batches(
            data["train"][0][rows], data["train"][1][rows], plan.batch_size, seed=seed),
        lambda: reuse(developed.source_model), validation, test, plan, state=state,
        build_scratch=lambda: reuse(build_digit_model()).model, directory=args.output_dir,
        title=f"{source_task} -> digits 5-9: labels per class")

    return cli.write_metrics(args, {
        "source_task": source_task, "source_check": check.__dict__,
        "labels_per_class": args.labels_per_class,
        "target_images": {name: int(len(data[name][1]))
                          for name in ("train", "validation", "test")},
        "transfer_test_accuracy": report.mean("transfer", "test_accuracy"),
        "scratch_test_accuracy": report.mean("scratch", "test_accuracy"),
        "plan": report.plan.to_dict(),
        "evaluation": {"set": "test", "seed": plan.seed, "accuracy": evaluation["accuracy"],
                       "macro_f1": evaluation["macro"]["f1"]},
        **({"label_curve": curve.summary()} if curve else {}),
        "seconds": round(time.perf_counter() - started, 1)}, choice, gate=False)


if __name__ == "__main__":
    cli.run_main(main)
