"""A head-only label-count curve: held-out features computed once, against every point
reading the validation and test sets through the frozen part again.

`templates.training.label_curve` trains a head-only plan's points on features: the
validation and test examples go through the frozen part once, on the first point. Before
(and still, when a ``before_training`` hook may change the frozen part), every point
ran the whole model over them: once to cache the validation features for the head, then
over validation and test to score the phase; that way is run here by the curve's own
point function without the held-out features (``every_point``). Both ways run on the
same points, in the order A B B A (the first pays the start-up), as the recipes run them:

* ``sst2``: the text-encoder recipe's frozen head (MiniLM) on K SST-2 sentences per
  class, validated on 872, scored on 1,821 (`benchmarks.few_shot_text.Sst2Setup`);
* ``cats``: the cats recipe's head (``--backbone``) on K photos per class, the training
  photos' features computed once and shared (the recipe's ``features=``), validated on a
  fifth of the training folder, scored on the test folder.

    python -m benchmarks.label_curve_speed --preset ../shared/presets/all-MiniLM-L6-v2 \\
        --sst2 ../shared/data/text/sst2 --cats ../shared/data/cats_vs_dogs

Ends with one JSON object: each setup's seconds per way (both runs), their ratio, and
whether the two ways' points agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import templates.training.label_curve as label_curve_module
from benchmarks.few_shot_text import Sst2Setup
from templates import (
    TransferPlan,
    head_training_features,
    image_dataset,
    label_curve,
    load_image_splits,
    parse_backbone,
    pretrained_model,
)


def sst2_curve(args) -> dict:
    setup = Sst2Setup(args.preset, args.sst2)
    texts, labels, encoder = setup.texts, setup.labels, setup.encoder
    plan = dataclasses.replace(setup.plan, fine_tune_epochs=0)
    return dict(
        counts=[args.sst2_count], train_labels=labels,
        train_for=lambda rows, seed: encoder.batches(
            [texts[row] for row in rows], labels[rows], plan.batch_size, shuffle=True,
            seed=seed),
        build_transfer=setup.build, validation=setup.validation, test=setup.test, plan=plan)


def cats_curve(args) -> dict:
    # The cats recipe's split (a fifth of the training folder validates, seed 0) and plan.
    splits = load_image_splits(os.path.join(args.cats, "train"),
                               os.path.join(args.cats, "test"), 0.2, 0)
    plan = TransferPlan(schedule="warmup_cosine", find_learning_rates=True, fine_tune_epochs=0)
    source = parse_backbone(args.backbone)

    def build():
        return pretrained_model(**source.model_options(), num_classes=2,
                                class_names=splits.class_names)

    first = build()  # its input size and the training photos' features, once
    size = first.model.input_shape[1]
    data = {name: image_dataset(getattr(splits, name), size, plan.batch_size)
            for name in ("train", "validation", "test")}
    return dict(
        counts=[args.cats_count], train_labels=splits.train.labels,
        train_for=lambda rows, seed: image_dataset(
            splits.train.subset(rows), size, plan.batch_size, shuffle=True, seed=seed),
        build_transfer=build, validation=data["validation"], test=data["test"], plan=plan,
        features=head_training_features(first, data["train"]))


def every_point_curve(curve: dict) -> list[dict]:
    """The curve's points as before: each point's own run of `run_transfer` on the whole
    model (the curve's point function, given no held-out features)."""
    point = label_curve_module._train_point
    label_curve_module._train_point = lambda *given, **named: point(
        *given, **{**named, "held_out": None})
    try:
        return label_curve(**curve).points
    finally:
        label_curve_module._train_point = point


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.label_curve_speed",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--preset", help="The text encoder (with --sst2).")
    parser.add_argument("--sst2", help="A folder with SST-2's stsa.binary.{train,dev,test}.")
    parser.add_argument("--sst2-count", type=int, default=8, help="Sentences per class.")
    parser.add_argument("--cats", help="A folder with the cats and dogs' train/ and test/.")
    parser.add_argument("--backbone", default="MobileNet,alpha=0.25",
                        help="Spelled as the cats recipe's --backbone.")
    parser.add_argument("--cats-count", type=int, default=2, help="Photos per class.")
    args = parser.parse_args(argv)
    setups = {name: make for name, make, given in (
        ("sst2", sst2_curve, args.sst2 and args.preset), ("cats", cats_curve, args.cats))
        if given}
    report = {}
    for name, make in setups.items():
        curve = make(args)
        seconds = {"held_out_once": [], "every_point": []}
        points = {}
        for way in ("held_out_once", "every_point", "every_point", "held_out_once"):
            start = time.perf_counter()
            points[way] = every_point_curve(curve) if way == "every_point" else label_curve(
                **curve).points
            seconds[way].append(round(time.perf_counter() - start, 1))
        agree = all(abs(a[key] - b[key]) < 1e-6 for a, b in zip(*points.values())
                    for key in ("val_accuracy", "test_accuracy"))
        report[name] = {"points": len(points["held_out_once"]), "seconds": seconds,
                        "every_point_over_held_out_once": round(
                            sum(seconds["every_point"]) / sum(seconds["held_out_once"]), 2),
                        "points_agree": agree}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
