"""Few photos per class: the head on frozen features, the nearest class mean, fine-tuning.

Every photo's features are computed once (training, validation and test sets, in
order); at K photos per class (5 seeds each up to 32, each a new stratified draw from
the training set, `templates.training.label_curve`) each method is scored on the same
test set:

* ``head``: the cats recipe's head on the K-per-class features (its plan: the rate
  finder, warm-up and cosine decay, early stopping on the same validation set), no
  fine-tuning;
* ``ncm``: the nearest class mean of those features, nothing trained (the recipes'
  ``--head-init class_means --head-epochs 0 --fine-tune-epochs 0``,
  `templates.models.nearest_class_mean`);
* ``head_from_means``: the recipe's head started from those class means
  (``--head-init class_means``, weight imprinting) and trained as ``head`` is;
* ``fine_tune``: the recipe's whole run on the K-per-class photos (head, then the top of
  the backbone, kept only if it beats the head on validation); it reads photos, so it
  is slower, and runs only at ``--fine-tune-counts``;
* ``head_flip_rotate``, ``head_randaugment``: the head on the features of the K-per-class
  photos and of 4 augmented views of each (the recipe's ``--augment KIND
  --augmented-views 4``; RandAugment is Keras's own layer), at ``--augment-counts``;
* ``scratch``: the same network from random weights, every layer trained on the
  K-per-class photos as the recipe's ``--label-curve --compare-scratch`` trains it (the
  head's and fine-tuning's epochs at the head's rate);
* ``head_mixup``, ``head_cutmix``: the same with 4 views mixed by Keras's ``MixUp`` or
  ``CutMix`` (each photo blended with, or patched from, another of the K-per-class
  photos). They mix labels too, and the recipes' losses take integer labels: each mixed
  view's label is drawn from its mixing weights (class a with probability lambda), whose
  expected loss is the mixed label's.

    python -m benchmarks.few_shot_images --backbone keras_hub:../shared/presets/efficientnet_lite0 \
        --data-dir ../shared/data/cats_vs_dogs/train --test-dir ../shared/data/cats_vs_dogs/test

Ends with one JSON object on stdout (each method's mean, spread and seeds per K); every finished
point is kept in ``--output`` and skipped when the command is run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import keras
import numpy as np

from templates import (
    TrainingState,
    TransferPlan,
    array_batches,
    classification_head,
    extract_features,
    head_on_features,
    head_training_features,
    image_augmentation,
    image_dataset,
    load_image_splits,
    parse_backbone,
    pretrained_model,
    run_transfer,
    scratch_point,
    seeds_for,
    stratified_subset,
)
from templates.cli import label_count

METHODS = ("head", "ncm", "head_from_means", "fine_tune", "scratch", "head_flip_rotate",
           "head_randaugment", "head_mixup", "head_cutmix")
MIXING = {"head_mixup": "MixUp", "head_cutmix": "CutMix"}
AUGMENTED = ("head_flip_rotate", "head_randaugment", *MIXING)  # at --augment-counts
VIEWS = 4  # augmented views of each photo (the cats recipe's --augmented-views)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.few_shot_images",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="MobileNet,alpha=0.25",
                        help="Spelled as the cats recipe's --backbone.")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--test-dir", required=True)
    parser.add_argument("--counts", type=label_count, nargs="+", default=[1, 2, 5, 10, 20],
                        help="Photos per class (all: the whole training set, 3 seeds).")
    parser.add_argument("--fine-tune-counts", type=int, nargs="*", default=[10])
    parser.add_argument("--augment-counts", type=int, nargs="*", default=[5, 10])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=0, help="The first draw's seed: 0 for "
                        "the reported figures, 11 to choose settings on other draws.")
    parser.add_argument("--head-epoch-factor", choices=("auto", "1"), default="auto",
                        help="auto: the plan's extra head epochs on a small training set "
                        "(TransferPlan.head_epoch_factor); 1: without them, to measure them.")
    parser.add_argument("--output", default="runs/few_shot_images")
    args = parser.parse_args(argv)

    # The cats recipe's split (a fifth of the training folder validates, seed 0) and plan.
    splits = load_image_splits(args.data_dir, args.test_dir, 0.2, 0)
    plan = TransferPlan(schedule="warmup_cosine", find_learning_rates=True)
    source = parse_backbone(args.backbone)

    def build(scratch=False):  # scratch: the same network, weights drawn at random
        spelled = dataclasses.replace(source, weights=None) if scratch else source
        return pretrained_model(**spelled.model_options(), num_classes=2,
                                class_names=splits.class_names)

    transfer = build()
    size = transfer.model.input_shape[1]
    data = {name: image_dataset(getattr(splits, name), size, plan.batch_size)
            for name in ("train", "validation", "test")}
    # Kept in --output, so a second command (other methods) reads them back.
    cache = os.path.join(args.output, "features.npz")
    if os.path.isfile(cache):
        with np.load(cache) as saved:
            features = {name: (saved[f"{name}_x"], saved[f"{name}_y"]) for name in data}
    else:
        features = {name: extract_features(transfer.feature_extractor, batches, what=name)
                    for name, batches in data.items()}
        os.makedirs(args.output, exist_ok=True)
        np.savez(cache, **{f"{name}_{part}": array for name, pair in features.items()
                           for part, array in zip("xy", pair)})
    labels = features["train"][1]
    shape = features["train"][0].shape[1:]
    validation, test = (array_batches(*features[name], batch_size=256, shuffle=False)
                        for name in ("validation", "test"))
    results: dict[str, dict] = {}
    for method in args.methods:
        state = TrainingState(os.path.join(args.output, method), resume=True)
        counts = (args.fine_tune_counts if method == "fine_tune" else args.augment_counts
                  if method in AUGMENTED else args.counts)
        for count in counts:
            scores = []
            key = "all" if count is None else count
            for seed in seeds_for(count, args.seed):
                name = f"{method}.{key}.{seed}"
                point = state.result(name)
                if point is None:
                    point = score_point(method, count, seed, labels, features, shape,
                                        validation, test, plan, splits, data, build, size,
                                        transfer, args.head_epoch_factor == "auto")
                    state.save_result(name, point)
                    print(f"{method}, {key} per class, seed {seed}: test accuracy "
                          f"{point['test_accuracy']:.3f}", flush=True)
                    keras.backend.clear_session()
                scores.append(point["test_accuracy"])
            results.setdefault(method, {})[key] = {
                "mean": round(float(np.mean(scores)), 4), "sd": round(float(np.std(scores, ddof=1)), 4),
                "min": round(float(np.min(scores)), 4), "seeds": len(scores)}
    report = {"backbone": args.backbone, "test_photos": int(len(features["test"][1])),
              "validation_photos": int(len(features["validation"][1])), "methods": results}
    print(json.dumps(report, indent=1))
    return report


def score_point(method, count, seed, labels, features, shape, validation, test, plan,
                splits, data, build, size, extractor, epoch_factor=True) -> dict:
    rows = stratified_subset(labels, count, seed)
    keras.utils.set_random_seed(seed)
    point_plan = dataclasses.replace(plan, seed=seed).for_training_set(labels[rows])
    if not epoch_factor:
        point_plan = dataclasses.replace(point_plan, head_epoch_factor=1)
    if method in ("ncm", "head_from_means"):  # the head starts as the class means
        point_plan = dataclasses.replace(point_plan, head_init="class_means")
        if method == "ncm":  # and stays it
            point_plan = dataclasses.replace(point_plan, head_epochs=0)
    if method == "scratch":  # as templates.training.label_curve trains a scratch point
        train = image_dataset(splits.train.subset(rows), size, plan.batch_size, shuffle=True,
                              seed=seed)
        return scratch_point(build(scratch=True).model, train, data["validation"],
                             data["test"], point_plan)
    if method.startswith("head") or method == "ncm":
        inputs, targets = features["train"][0][rows], labels[rows]
        if method in AUGMENTED:  # the originals and VIEWS augmented (or mixed) views of each
            photos = image_dataset(splits.train.subset(rows), size, plan.batch_size)
            inputs, targets = (
                mixed_view_features(extractor, photos, MIXING[method], seed)
                if method in MIXING else head_training_features(
                    extractor, photos, image_augmentation(method[len("head_"):], seed),
                    VIEWS, seed))
            point_plan = dataclasses.replace(plan, seed=seed).for_training_set(targets)
            if not epoch_factor:
                point_plan = dataclasses.replace(point_plan, head_epoch_factor=1)
        model = head_on_features(classification_head(shape, 2, dropout=0.2))
        train = array_batches(inputs, targets, plan.batch_size, seed=seed)
        run = run_transfer(model, train, validation, point_plan.head_only(), test=test,
                           verbose=0)
    else:
        transfer = build()
        train = image_dataset(splits.train.subset(rows), size, plan.batch_size, shuffle=True,
                              seed=seed)
        run = run_transfer(transfer, train, data["validation"], point_plan, test=data["test"],
                           verbose=0, features=(features["train"][0][rows], labels[rows]))
    return {"test_accuracy": float(run.test_scores["accuracy"]),
            "val_accuracy": float(run.scores.get("val_accuracy", float("nan")))}


def mixed_view_features(extractor, photos, layer_name: str, seed: int):
    """The features of the photos and of VIEWS views mixed by ``keras.layers.MixUp`` or
    ``CutMix``, each view's integer label drawn from its mixed label."""
    images = np.concatenate([batch for batch, _ in photos])
    labels = np.concatenate([batch for _, batch in photos]).astype("int64")
    one_hot = np.eye(int(labels.max()) + 1, dtype="float32")[labels]
    mixing = getattr(keras.layers, layer_name)(seed=seed)
    rng = np.random.default_rng(seed)
    features = [extractor.feature_extractor.predict(images, verbose=0)]
    targets = [labels]
    for _ in range(VIEWS):
        mixed = mixing({"images": images, "labels": one_hot}, training=True)
        features.append(extractor.feature_extractor.predict(
            keras.ops.convert_to_numpy(mixed["images"]), verbose=0))
        weights = keras.ops.convert_to_numpy(mixed["labels"])
        targets.append(np.array([rng.choice(len(row), p=row / row.sum()) for row in weights]))
    return np.concatenate(features), np.concatenate(targets).astype("int32")


if __name__ == "__main__":
    main()
