"""
Title: Cats vs dogs with a pretrained ImageNet backbone
Description: Reuse a `keras.applications` backbone (or a keras-hub preset, or a TF-Hub
module), train a new head on cached features, then fine-tune the top of the backbone
with BatchNormalization kept frozen, each phase at the learning-rate finder's rate.

How to run:

    # Downloads cats_and_dogs_filtered and the ImageNet weights (needs internet):
    python -m recipes.cats_vs_dogs --output-dir runs/cats_vs_dogs

    # Offline, with local photos and Keras's weights cache:
    KERAS_HOME=$PWD/../shared/keras_home python -m recipes.cats_vs_dogs \
        --data-dir ../shared/data/cats_vs_dogs --backbone MobileNet --alpha 0.25

    # Rank candidate backbones on frozen features first (--select-only: just the table):
    python -m recipes.cats_vs_dogs --select-from MobileNet,alpha=0.25 \
        MobileNet,alpha=0.25@-30 MobileNet,alpha=0.25,weights=none

    python -m recipes.cats_vs_dogs --help

Outputs in `--output-dir`: `metrics.json`, `history.json`, `learning_curves.png`,
`model.keras` (takes 0..255 RGB images), `labels.txt`, `saved_model/` (for serving),
`evaluation/` (per-class scores, confusion matrix, most confidently wrong photos,
Grad-CAM, `report.md`), the finder's `lr_finder_*.png/.json`, and with the options
`tflite/` and `transfer_report.*`. Classify new photos with `python -m recipes.predict
OUTPUT_DIR photo.jpg`.

## Why this recipe looks the way it does

Transfer learning from ImageNet has two phases. First the backbone is frozen and only
a small new head learns: the backbone's features are computed **once** and cached,
so each head epoch takes a fraction of a second instead of a full backbone pass.
Then the top of the backbone is unfrozen and trains at a much lower learning rate, so
the pretrained features are adjusted, not destroyed. Each phase's rate comes from a
short learning-rate sweep (the loss minimum / 10, bounded, falling back to the given
rate when the sweep cannot be trusted): on validation photos it beat fixed rates. During that
second phase every BatchNormalization layer must stay in inference mode. In Keras 3,
`base(x, training=False)` does not guarantee it once the base is unfrozen
(keras-team/keras#20285); `templates.training.phases.fine_tune` sets those layers to
`trainable = False`, which does.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

# Keep TensorFlow's C++ start-up chatter out of the recipe's output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from templates.cli import (  # noqa: E402
    accuracy_gate,
    add_hardware_arguments,
    add_image_data_arguments,
    add_run_arguments,
    add_selection_arguments,
    add_training_arguments,
    select_source,
    setup_hardware,
    start_multi_worker,
    tensorboard_callbacks,
    tflite_modes,
    transfer_plan,
)
from templates.data.downloads import DownloadError, download_dataset  # noqa: E402
from templates.data.files import write_json  # noqa: E402
from templates.data.images import image_batches_by_size, load_image_splits  # noqa: E402
from templates.export.outputs import write_model_outputs  # noqa: E402
from templates.models.backbone_spelling import parse_backbone  # noqa: E402
from templates.models.backbones import WeightsUnavailableError, block_cut_points
from templates.models.flip_averaging import flip_averaged
from templates.models.pretrained import pretrained_model  # noqa: E402
from templates.reports.candidates import image_candidates
from templates.reports.comparison import report_against_scratch, reuse_depth_sweep  # noqa: E402
from templates.reports.environment import run_metadata  # noqa: E402
from templates.reports.evaluation import (
    evaluation_summary,
    image_evaluation_report,
    multi_label_evaluation,
)
from templates.reports.flip_scores import flip_scores  # noqa: E402
from templates.reports.selection import cut_candidates  # noqa: E402
from templates.training.checkpoints import TrainingState  # noqa: E402
from templates.training.multi_worker import finish_multi_worker  # noqa: E402
from templates.training.phases import batch_predictor  # noqa: E402
from templates.training.run import run_transfer  # noqa: E402


def _layer_name_or_index(value: str) -> str | int:
    return int(value) if value.lstrip("-").isdigit() else value


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.cats_vs_dogs",
        description="Cats vs dogs by transfer learning from a keras.applications backbone.",
    )
    add_image_data_arguments(parser)
    parser.add_argument("--backbone", default="MobileNetV2",
                        help="keras.applications constructor name (case-insensitive), "
                        "keras_hub:PRESET (a keras-hub preset name or a local preset folder) "
                        "or tfhub:HANDLE; options and a cut may follow: "
                        "NAME[,option=value...][@CUT], e.g. MobileNet,alpha=0.25@-30.")
    parser.add_argument("--alpha", type=float, default=None,
                        help="Width multiplier for MobileNet families.")
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' (a keras-hub preset's own), 'none' (random "
                        "initialisation) or a weights file.")
    parser.add_argument("--image-size", type=int, default=None,
                        help="Square image side; the backbone's default when omitted.")
    parser.add_argument("--fine-tune-from", default="default", type=_layer_name_or_index,
                        help="First backbone layer to unfreeze (a name, or an index such "
                        "as -20); the registry's choice by default.")
    parser.add_argument("--augment", nargs="?", const="flip_rotate", default=None,
                        choices=("flip_rotate", "randaugment"),
                        help="Random flips and rotations (or flips and RandAugment: "
                        "--augment randaugment) while fine-tuning, and for the head on "
                        "--augmented-views cached views (through the backbone in the graph "
                        "when there are none: slow).")
    parser.add_argument("--augmented-views", type=int, default=4, metavar="K",
                        help="With --augment: cache the backbone's features of K augmented "
                        "views of every training photo, once, and train the head on them "
                        "(default 4; 0: the head trains through the backbone).")
    parser.add_argument("--test-time-flips", action="store_true",
                        help="Average each photo's prediction with its mirror image's (twice "
                        "the inference time); the saved model does it too.")
    parser.add_argument("--reuse-sweep", type=int, default=0, metavar="N",
                        help="Also measure how much of the backbone to reuse: cut it at N "
                             "block ends (first to last), train a head on each for --epochs "
                             "and write reuse_sweep.json/.png.")
    parser.add_argument("--estimate", action="store_true",
                        help="With --reuse-sweep N: rank the N cuts from their frozen "
                        "features in seconds (reuse_estimates/selection.json) instead of "
                        "training a head on each.")
    # Chosen on validation photos (docs/results.md): warm-up + cosine, and the finder's
    # rates, so --learning-rate and --fine-tune-learning-rate are the fallbacks
    # (--no-find-lr uses them). Augmented views and test-time flips did not help on
    # validation: options.
    add_selection_arguments(parser, "Candidate backbones, each spelled as --backbone is "
                            "(NAME[,option=value...][@CUT]), e.g. MobileNet,alpha=0.25 "
                            "MobileNet,alpha=0.25@-30 MobileNet,alpha=0.25,weights=none.")
    add_run_arguments(parser, "runs/cats_vs_dogs")
    add_training_arguments(parser, schedule="warmup_cosine", find_lr=True)
    add_hardware_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    # ## Hardware
    # --strategy picks a TPU, GPUs, the CPU or several machines; models and optimisers
    # are built inside its scope, and --batch-size counts per replica, so the global
    # batch grows with the replicas. --mixed-precision auto uses float16 on recent
    # NVIDIA GPUs.
    choice = setup_hardware(args, args.data_dir, args.test_dir, args.labels_csv,
                            multi_worker=True)
    args.batch_size = choice.global_batch_size(args.batch_size)
    if choice.name == "multi_worker":
        start_multi_worker(args)  # options built on model.fit are refused here, by name
    with choice.strategy.scope():
        return run(args, choice)


def run(args: argparse.Namespace, choice) -> int:
    """The recipe, inside the strategy's scope."""
    keras.utils.set_random_seed(args.seed)
    source = parse_backbone(args.backbone, args.alpha, args.weights, args.image_size)
    os.makedirs(args.output_dir, exist_ok=True)

    # ## Data
    # Without --data-dir we fetch the standard archive. Every file is opened once up
    # front: corrupt, truncated and non-image files are skipped and listed in
    # metrics.json instead of crashing training halfway through.
    # --labels-csv lists path,label rows instead; bad rows are skipped and named too.
    data_dir = args.labels_csv or args.data_dir or download_dataset("cats_and_dogs_filtered")
    splits = load_image_splits(data_dir, args.test_csv or args.test_dir,
                               args.validation_fraction, args.seed, args.validation_csv,
                               multi_label=args.multi_label)
    print(f"Data: {data_dir} ({splits.layout}); classes {splits.class_names}; "
          f"train {len(splits.train.files)}, validation {len(splits.validation.files)}, "
          f"test {len(splits.test.files) if splits.test else 0}; "
          f"skipped {len(splits.skipped)} unreadable files or rows.")
    for item in splits.skipped:
        print(f"  skipped {item.path}: {item.reason}")

    # ## Model
    # The backbone's own preprocessing (MobileNet's scaling to [-1, 1], a keras-hub
    # preset's image converter) is a layer inside the model, so the saved model takes
    # plain 0..255 RGB images.
    # Images are decoded and resized once per size, cached, then shuffled every epoch.
    batches = image_batches_by_size(splits, args.batch_size, args.seed)
    model_options = dict(num_classes=len(splits.class_names), class_names=splits.class_names,
                         fine_tune_from=args.fine_tune_from)
    # --select-from A B C: rank candidate backbones (options, cuts, weights) on their
    # frozen features of these photos, in seconds, before paying to train one; the pick
    # then trains below, its features already cached. The table says when the
    # candidates are too close to call.
    selection = None
    if args.select_from:
        selection = select_source(args, image_candidates(
            args.select_from, lambda size: batches(size)[:2], alpha=args.alpha,
            weights=args.weights, image_size=args.image_size, **model_options),
            title="Cats vs dogs: candidate backbones")
        if args.select_only:
            return 0
        source = parse_backbone(selection.pick, args.alpha, args.weights, args.image_size)
    transfer = selection.transfer if selection else pretrained_model(
        **source.model_options(), **model_options, multi_label=args.multi_label)
    image_size = transfer.model.input_shape[1]  # --image-size, or the backbone's own
    train, validation, test = batches(image_size)
    augmentation = None
    if args.augment:
        augmentation = keras.Sequential(
            [keras.layers.RandomFlip("horizontal", seed=args.seed),
             keras.layers.RandAugment(value_range=(0, 255), seed=args.seed)
             if args.augment == "randaugment" else
             keras.layers.RandomRotation(0.1, seed=args.seed)],
            name=f"augmentation_{args.augment}",
        )

    # ## Training: the two phases, as one plan
    # Phase 1 trains the head on the frozen backbone (on its features, computed once,
    # unless --augment needs the backbone in the training graph); phase 2 unfreezes the
    # top of the backbone, every BatchNormalization layer kept frozen, at a lower rate
    # (--discriminative-factor: each earlier block slower still). --find-lr lets the
    # learning-rate finder choose each phase's rate. Every epoch is checkpointed: after
    # a crash or a kill, --resume restores finished phases and continues the phase in
    # progress from its last finished epoch. The seed fixes each epoch's data order and
    # dropout from (seed, epoch) alone, so the resumed run ends exactly where an
    # uninterrupted one would.
    plan = transfer_plan(args, splits.train.labels, augmentation=augmentation,
                         augmented_views=args.augmented_views if args.augment else 0,
                         cache_features=not args.augment or args.augmented_views > 0,
                         steps_per_epoch=math.ceil(len(splits.train.files) / args.batch_size))
    state = TrainingState(os.path.join(args.output_dir, "checkpoints"), resume=args.resume)
    run = run_transfer(transfer, train, validation, plan, checkpoints=state, test=test,
                       output_dir=args.output_dir, measure_start=args.compare_scratch,
                       features=selection.features_for(plan) if selection else None)

    # ## Evaluation: what the model gets wrong, and where it looks
    # Per-class precision/recall/F1, the confusion matrix, the most confidently wrong
    # photos, and Grad-CAM heat maps on the backbone's last convolutional block.
    # (The test or validation batches built above are reused: their images are cached.)
    # --test-time-flips: the model users get averages each photo with its mirror image.
    model = flip_averaged(transfer.model) if args.test_time_flips else transfer.model
    evaluated, evaluated_data = ((splits.test, test) if splits.test
                                 else (splits.validation, validation))
    title = f"Cats vs dogs, {source.spelling} ({source.weights_name} weights)"
    report = lambda predict=None: image_evaluation_report(  # noqa: E731
        transfer.model, evaluated, evaluated_data, os.path.join(args.output_dir, "evaluation"),
        title, seed=args.seed, predict=predict or batch_predictor(model))
    if args.multi_label:  # each label's threshold chosen on validation (thresholds.json)
        report = lambda predict=None: multi_label_evaluation(  # noqa: E731
            model, validation, evaluated_data, splits.class_names, args.output_dir,
            evaluated.files, title, predict=predict)
    metadata = run_metadata(backbone=source.spelling, weights=source.weights_name,
                            alpha=source.alpha, cut_at=source.cut_at, image_size=image_size,
                            data_dir=data_dir, seed=args.seed)

    # ## Several machines: --strategy multi_worker
    # Keras 3's model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585),
    # so there run_transfer ran the same plan on a strategy.run loop, each worker on its
    # shard of the photos, gradients all-reduced every step. Every worker scores its
    # (identical) copy and joins the save; the chief writes the outputs. Start the same
    # command on every machine, each with its TF_CONFIG (README, "Several machines").
    if choice.name == "multi_worker":
        finish_multi_worker(choice, run, transfer.model, transfer.model, args.output_dir,
                            splits.class_names, {"val_accuracy": validation,
                                                 **({"test_accuracy": test} if test else {})},
                            report=report, **metadata)
        return 0

    # ## Outputs
    # model.keras takes plain 0..255 RGB images; saved_model/ serves them.
    # --export-tflite MODE...: each TFLite file scored on the test photos as it runs.
    tflite = write_model_outputs(args.output_dir, model, splits.class_names, run.history,
                                 title=title, tflite_model=model if args.export_tflite
                                 is not None else None, tflite_modes=tflite_modes(args),
                                 representative_data=train, test=test)
    evaluation = report()
    metrics = {
        **run.metrics(), **(flip_scores(run, model, validation, test)
                            if args.test_time_flips else {}),
        "evaluation": {"set": "test" if splits.test else "validation",
                       **evaluation_summary(evaluation)},
        "images": {"train": len(splits.train.files), "validation": len(splits.validation.files),
                   "test": len(splits.test.files) if splits.test else 0,
                   "skipped": len(splits.skipped)},
        "skipped_files": [{"path": s.path, "reason": s.reason} for s in splits.skipped],
        "fine_tune_from": transfer.fine_tune_from, **metadata,
        **({"selection": selection.brief()} if selection else {}),
        **({"tflite": tflite} if tflite else {}),
    }
    if args.compare_scratch:
        # ## Did transfer help? The same architecture from random weights, trained for
        # all the epochs at the head's rate, same data, seed, schedule and early stopping.
        keras.utils.set_random_seed(args.seed)
        comparison = report_against_scratch(
            run, pretrained_model(**dataclasses.replace(source, weights=None).model_options(),
                                  num_classes=len(splits.class_names),
                                  multi_label=args.multi_label).model,
            train, validation, test, args.output_dir, state=state,
            title=f"Cats vs dogs: {source.spelling} pretrained transfer vs scratch",
            phase_callbacks=lambda phase: tensorboard_callbacks(args.tensorboard, phase))
        metrics.update(comparison.metrics())
        print(comparison.summary_text())
    if args.reuse_sweep and args.estimate:
        # ## How much of the backbone to reuse, estimated: the N cuts ranked from their
        # frozen features in seconds (the trained sweep below, without --estimate,
        # is there to check it).
        metrics["reuse_estimates"] = select_source(args, cut_candidates(
            lambda cut: pretrained_model(**dataclasses.replace(source, cut_at=cut)
                                         .model_options(), **model_options),
            block_cut_points(transfer.backbone, args.reuse_sweep)), train, validation,
            title=f"Reuse depth, estimated: {source.spelling}",
            directory=os.path.join(args.output_dir, "reuse_estimates")).brief()
    elif args.reuse_sweep:
        # ## How much of the backbone to reuse
        # Early blocks compute generic edges and textures, later ones ImageNet-specific
        # parts; heads trained on the backbone cut at N block ends show which depth
        # serves these photos best.
        metrics["reuse_sweep"] = reuse_depth_sweep(
            lambda cut: pretrained_model(**dataclasses.replace(source, cut_at=cut).model_options(),
                                         num_classes=len(splits.class_names),
                                         multi_label=args.multi_label),
            block_cut_points(transfer.backbone, args.reuse_sweep), train, validation, test,
            budget=dataclasses.replace(plan.with_rates(run.learning_rates),
                                       fine_tune_epochs=0, callbacks={}),
            seed=args.seed, state=state, directory=args.output_dir,
            title=f"Reuse depth: {source.spelling} blocks, cats vs dogs (head only)",
            phase_callbacks=lambda phase: tensorboard_callbacks(args.tensorboard, phase))
    write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
    return accuracy_gate(args, metrics)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DownloadError, WeightsUnavailableError, ValueError) as error:
        # Expected failures (offline, bad paths, bad arguments) get one clear message,
        # not a traceback.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
