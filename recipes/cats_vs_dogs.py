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
`model.keras` (takes 0..255 RGB images), `labels.txt`, `saved_model/`, `evaluation/`,
the finder's `lr_finder_*`, and with the options `tflite/`, `transfer_report.*`,
`label_curve.*`. Classify new photos: `python -m recipes.predict OUTPUT_DIR photo.jpg`.

## Why this recipe looks the way it does

Transfer learning from ImageNet has two phases. First the backbone is frozen and only
a small new head learns: the backbone's features are computed **once** and cached,
so each head epoch takes a fraction of a second instead of a full backbone pass.
Then the top of the backbone is unfrozen and trains at a much lower learning rate, so
the pretrained features are adjusted, not destroyed. Each phase's rate comes from a
short learning-rate sweep (on validation photos it beat fixed rates). During that
second phase every BatchNormalization layer must stay in inference mode. In Keras 3,
`base(x, training=False)` does not guarantee it once the base is unfrozen
(keras-team/keras#20285); `templates.fine_tune` sets those layers to
`trainable = False`, which does.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil

# Keep TensorFlow's C++ start-up chatter out of the recipe's output (see the guide:
# TensorFlow 2.21 prints some of it before any Python setting can take effect).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from templates import (  # noqa: E402
    DEFAULT_CACHE_MEMORY_GB,
    MAX_IMAGE_SIZE,
    TransferPlan,
    block_cut_points,
    cli,
    cut_candidates,
    download_dataset,
    evaluate_run,
    finish_multi_worker,
    flip_averaged,
    flip_scores,
    head_training_features,
    image_augmentation,
    image_batches_by_size,
    image_candidates,
    image_dataset,
    label_curve,
    load_image_splits,
    parse_backbone,
    pretrained_model,
    report_against_scratch,
    reuse_depth_sweep,
    run_metadata,
    run_transfer,
    select_source,
    tensorboard_logs,
    write_model_outputs,
)


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.cats_vs_dogs",
        description="Cats vs dogs by transfer learning from a keras.applications backbone.",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", help="Class folders, or train/ and validation/ or test/ "
                      "of them; downloads cats_and_dogs_filtered when omitted.")
    data.add_argument("--test-dir", help="Folder of class folders used as the test set.")
    data.add_argument("--labels-csv", help="Instead of --data-dir: a path,label CSV (paths "
                      "relative to it); validation and test sets split off it if not given.")
    data.add_argument("--validation-csv", help="Validation images as a path,label CSV.")
    data.add_argument("--test-csv", help="Test images as a path,label CSV.")
    data.add_argument("--validation-fraction", type=cli.number(float, above=0, below=1),
                      default=0.2, help="Share split off for validation (and testing). 0.2.")
    data.add_argument("--multi-label", action="store_true", help="Any number of labels per "
                      "image (CSV labels separated by |): per-label thresholds.")
    data.add_argument("--cache-memory-gb", type=cli.number(float, 0),
                      default=DEFAULT_CACHE_MEMORY_GB, help="Memory for each cache (decoded "
                      "images, features); beyond it memory-mapped from OUTPUT_DIR/cache/. "
                      f"Default {DEFAULT_CACHE_MEMORY_GB:g}: both fit a 16 GB machine.")
    model = parser.add_argument_group("backbone")
    model.add_argument("--backbone", default="MobileNetV2", help="A keras.applications name, "
                       "keras_hub:PRESET (name or folder) or tfhub:HANDLE, then options and "
                       "a cut: NAME[,option=value...][@CUT], e.g. MobileNet,alpha=0.25@-30.")
    model.add_argument("--alpha", type=cli.number(float, above=0, maximum=2), default=None,
                       help="Width multiplier for MobileNet families.")
    model.add_argument("--weights", default="imagenet", help="imagenet (a preset's own), "
                       "none (random) or a weights file.")
    model.add_argument("--image-size", type=cli.number(int, 32, MAX_IMAGE_SIZE), default=None,
                       help="Square image side; the backbone's default when omitted.")
    model.add_argument("--fine-tune-from", default="default",
                       type=lambda text: int(text) if text.lstrip("-").isdigit() else text,
                       help="First backbone layer to unfreeze (a name, or an index such as "
                       "-20); the registry's choice by default.")
    # Augmented views and test-time flips did not help on validation photos
    # (docs/results.md): options, off by default.
    options = parser.add_argument_group("options")
    options.add_argument("--augment", nargs="?", const="flip_rotate", default=None,
                         choices=("flip_rotate", "randaugment"),
                         help="Random flips and rotations (or flips and RandAugment) while "
                         "fine-tuning, and for the head on --augmented-views cached views.")
    options.add_argument("--augmented-views", type=cli.number(int, 0, 64), default=4,
                         metavar="K", help="With --augment: the head trains on K cached "
                         "augmented views of every photo (0: through the backbone). 4.")
    options.add_argument("--test-time-flips", action="store_true", help="Average each "
                         "photo's prediction with its mirror image's (the saved model too).")
    options.add_argument("--reuse-sweep", type=cli.number(int, 0, 1000), default=0,
                         metavar="N", help="Cut the backbone at N block ends, train a head on "
                         "each and write reuse_sweep.json/.png.")
    options.add_argument("--estimate", action="store_true", help="With --reuse-sweep N: rank "
                         "the cuts from their frozen features in seconds instead.")
    cli.add_selection_arguments(parser, "Candidate backbones, each spelled as --backbone is "
                                "(NAME[,option=value...][@CUT]), e.g. MobileNet,alpha=0.25 "
                                "MobileNet,alpha=0.25@-30 MobileNet,alpha=0.25,weights=none.")
    cli.add_run_arguments(parser, "runs/cats_vs_dogs")
    # Chosen on validation photos (docs/results.md): warm-up + cosine, and the finder's
    # rates, so --learning-rate and --fine-tune-learning-rate are the fallbacks
    # (--no-find-learning-rates uses them).
    cli.add_plan_arguments(parser, TransferPlan(schedule="warmup_cosine",
                                                find_learning_rates=True))
    cli.add_hardware_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    # ## Hardware
    # --strategy picks a TPU, GPUs, the CPU or several machines; models are built in its
    # scope, --batch-size counts per replica; options built on model.fit are refused by
    # name on several machines.
    choice = cli.setup_hardware(args, args.data_dir, args.test_dir, args.labels_csv,
                                multi_worker=True)
    # The run owns --output-dir: a second run into it stops here, before any work.
    with cli.own_output_dir(args, choice), choice.strategy.scope():
        return run_recipe(args, choice)


def run_recipe(args: argparse.Namespace, choice) -> int:
    """The recipe, inside the strategy's scope."""
    # ## The plan
    # One object owns every training setting: the seed (each epoch's randomness is drawn
    # from (seed, epoch), so a resumed run ends where an uninterrupted one would), both
    # phases' epochs and rates, the schedule; --augment adds its layers (the head then
    # trains on cached features of --augmented-views views). Everything below reads it.
    plan = cli.transfer_plan(args, choice=choice, fine_tune_from=args.fine_tune_from,
                             feature_memory_gb=args.cache_memory_gb)
    plan = plan.with_augmentation(
        args.augment and image_augmentation(args.augment, plan.seed), args.augmented_views)
    os.makedirs(args.output_dir, exist_ok=True)

    # ## Data
    # Without --data-dir we fetch the standard archive. Every file is opened once up
    # front: corrupt, truncated and non-image files are skipped and listed in
    # metrics.json instead of crashing training halfway through; so are bad rows of
    # --labels-csv, and copies of a photo across splits (by its bytes).
    data_dir = args.labels_csv or args.data_dir or download_dataset("cats_and_dogs_filtered")
    splits = load_image_splits(data_dir, args.test_csv or args.test_dir,
                               args.validation_fraction, plan.seed, args.validation_csv,
                               multi_label=args.multi_label)
    print(splits.describe(data_dir))
    plan = plan.for_training_set(splits.train.labels)  # balanced weights, steps per epoch
    # Decoded once to uint8 (memory-mapped from OUTPUT_DIR/cache beyond
    # --cache-memory-gb), float32 per batch, at whatever size the backbone takes.
    batches = image_batches_by_size(splits, plan.batch_size, plan.seed,
                                    cache_dir=os.path.join(args.output_dir, "cache"),
                                    memory_limit_gb=args.cache_memory_gb)

    # ## Model
    # The backbone's own preprocessing (MobileNet's scaling to [-1, 1], a keras-hub
    # preset's image converter) is a layer inside the model, so the saved model takes
    # plain 0..255 RGB images.
    source = parse_backbone(args.backbone, args.alpha, args.weights, args.image_size)
    options = dict(num_classes=len(splits.class_names), class_names=splits.class_names,
                   fine_tune_from=args.fine_tune_from, multi_label=args.multi_label)

    def build(spelled=None):  # a backbone's model with this data's head
        return pretrained_model(**(spelled or source).model_options(), **options)

    # --select-from A B C: rank candidate backbones (options, cuts, weights) on their
    # frozen features of these photos, in seconds, before paying to train one; the pick
    # then trains below, its features already cached. The table says when the
    # candidates are too close to call.
    selection = None
    if args.select_from:
        selection = select_source(
            image_candidates(args.select_from, batches, alpha=args.alpha,
                             weights=args.weights, image_size=args.image_size, **options),
            seed=plan.seed, rank_by=args.select_by, directory=args.output_dir,
            title="Cats vs dogs: candidate backbones", multi_label=args.multi_label)
        if args.select_only:
            return 0
        source = parse_backbone(selection.pick, args.alpha, args.weights, args.image_size)
    transfer = selection.transfer if selection else build()
    image_size = transfer.model.input_shape[1]  # --image-size, or the backbone's own
    train, validation, test = batches(image_size)

    # ## Training: the two phases of the plan
    # Phase 1 trains the head on the frozen backbone (on its features, computed once,
    # unless --augment needs the backbone in the training graph); phase 2 unfreezes the
    # top of the backbone, every BatchNormalization layer kept frozen, at a lower rate
    # (--discriminative-factor: each earlier block slower still). The learning-rate
    # finder chooses each phase's rate. Every epoch is checkpointed: after a crash or a
    # kill, --resume restores finished phases, says so, and continues the phase in
    # progress from its last finished epoch, if what shapes the weights is unchanged
    # (recorded now: the plan, backbone, image size, classes and a digest of the data).
    state = cli.checkpoints(args, plan, settings=dict(
        backbone=selection.pick if selection else args.backbone, alpha=args.alpha,
        weights=args.weights, image_size=image_size, augment=args.augment,
        multi_label=args.multi_label, classes=splits.class_names,
        data=splits.fingerprint()))
    run = run_transfer(transfer, train, validation, plan, state, test=test,
                       output_dir=args.output_dir, measure_start=args.compare_scratch,
                       features=selection.features_for(plan) if selection else None)

    # ## Evaluation and outputs
    # --test-time-flips: the model users get averages each photo with its mirror image.
    # model.keras takes 0..255 RGB images; --export-tflite files are scored on the test
    # photos; evaluation/ holds per-class scores, the confusion matrix, the most
    # confidently wrong photos and Grad-CAM heat maps.
    model = flip_averaged(transfer.model) if args.test_time_flips else transfer.model
    title = f"Cats vs dogs, {source.spelling} ({source.weights_name} weights)"
    metadata = run_metadata(backbone=source.spelling, weights=source.weights_name,
                            alpha=source.alpha, cut_at=source.cut_at, image_size=image_size,
                            data_dir=data_dir, seed=plan.seed)

    def evaluate(predict=None):
        return evaluate_run(transfer.model, splits, validation, test, args.output_dir, title,
                            plan.seed, args.multi_label, scored_model=model, predict=predict)

    if choice.name == "multi_worker":
        # Keras 3's model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras
        # #20585), so run_transfer ran the plan on a strategy.run loop; every worker
        # scores its copy and joins the save, the chief writes the outputs.
        finish_multi_worker(choice, run, transfer.model, model, args.output_dir,
                            splits.class_names, {"val_accuracy": validation,
                                                 "test_accuracy": test},
                            report=evaluate, **metadata)
        return 0
    metrics = {**run.metrics(), **splits.counts(), **metadata,
               "fine_tune_from": transfer.fine_tune_from}
    tflite = write_model_outputs(
        args.output_dir, model, splits.class_names, run.history, title=title,
        tflite_model=model if args.export_tflite is not None else None,
        tflite_modes=cli.tflite_modes(args), representative_data=train, test=test)
    if tflite:
        metrics["tflite"] = tflite
    metrics["evaluation"] = evaluate()
    if args.test_time_flips:
        metrics.update(flip_scores(run, model, validation, test))
    if selection:
        metrics["selection"] = selection.brief()

    # ## Did transfer help? How much of the backbone to reuse?
    # --compare-scratch trains the same architecture from random weights on the same
    # plan; --reuse-sweep N cuts the backbone at N block ends (early blocks compute
    # generic edges, later ones ImageNet-specific parts) and trains a head on each, or
    # with --estimate ranks the cuts from their frozen features in seconds.
    logs = tensorboard_logs(args.tensorboard)
    scratch = dataclasses.replace(source, weights=None)
    if args.compare_scratch:
        metrics.update(report_against_scratch(
            run, lambda: build(scratch).model, train, validation, test, args.output_dir,
            state=state, phase_callbacks=logs,
            title=f"Cats vs dogs: {source.spelling} pretrained transfer vs scratch").metrics())
    if args.reuse_sweep:
        build_at = lambda cut: build(dataclasses.replace(source, cut_at=cut))  # noqa: E731
        cuts = block_cut_points(transfer.backbone, args.reuse_sweep)
        if args.estimate:
            metrics["reuse_estimates"] = select_source(
                cut_candidates(build_at, cuts), train, validation, seed=plan.seed,
                directory=os.path.join(args.output_dir, "reuse_estimates"),
                title=f"Reuse depth, estimated: {source.spelling}").brief()
        else:
            metrics["reuse_sweep"] = reuse_depth_sweep(
                build_at, cuts, train, validation, test, state=state, phase_callbacks=logs,
                plan=run.plan.with_rates(run.learning_rates).head_only(),
                directory=args.output_dir, title=f"Reuse depth: {source.spelling} blocks")
    # ## How many labels do you need? (--label-curve 2 5 10 20)
    # The same model and plan on K photos per class (a new draw per seed), the same
    # validation and test photos. The pretrained backbone's features of every training
    # photo are computed once; each subset's head trains on its rows of them.
    if args.label_curve:
        ordered = image_dataset(splits.train, image_size, plan.batch_size)
        metrics["label_curve"] = label_curve(
            args.label_curve, splits.train.labels, lambda rows, seed: image_dataset(
                splits.train.subset(rows), image_size, plan.batch_size, shuffle=True,
                seed=seed), build, validation, test, plan, state=state,
            features=head_training_features(build(), ordered), directory=args.output_dir,
            build_scratch=(lambda: build(scratch).model) if args.compare_scratch else None,
            title=f"Cats vs dogs, {source.spelling}: photos per class").summary()
    # The decoded photos on disk only served a run that is resumed before it ends.
    shutil.rmtree(os.path.join(args.output_dir, "cache"), ignore_errors=True)
    return cli.write_metrics(args, metrics, choice)


if __name__ == "__main__":
    cli.run_main(main)
