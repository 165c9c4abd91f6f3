"""Few labels, SST-2: a sentence encoder's frozen head, fine-tuning, and SetFit's pairs.

At K labelled sentences per class (5 seeds each up to 32, each a new stratified draw
from the training set), every method trains the text-encoder recipe's model and is
scored on the same validation and test sets (`templates.training.label_curve`):

* ``head``: the head on the frozen, pooled encoder (no fine-tuning);
* ``head_from_means``: the same head started from the class means (``--head-init
  class_means``);
* ``fine_tune``: the recipe's defaults, the head then the whole encoder at 5e-5 (kept
  only if it beats the head on validation);
* ``contrastive``: SetFit's way (`templates.training.contrastive`), the encoder tuned on
  pairs of the K-per-class sentences (SetFit 1.0's oversampled pairs), then the head;
* ``contrastive20``: the same with the paper's 20 pairs of each kind per sentence;
* ``--compare-scratch``: beside ``head``, the same encoder from random weights trained on
  the same draws, as the recipe's ``--label-curve --compare-scratch`` trains it (every
  layer, the head's epochs at the recipe's scratch rate, 1e-4).

    python -m benchmarks.few_shot_text --preset ../shared/presets/all-MiniLM-L6-v2 \
        --data ../shared/data/text/sst2 --counts 8 16 32 --output runs/few_shot_text

Ends with one JSON object on stdout (each method's mean, spread and seeds per K); every finished
point is kept in ``--output`` and skipped when the command is run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os

from templates import (
    ContrastiveSettings,
    TrainingState,
    TransferPlan,
    contrastive_tune,
    label_curve,
    load_text_splits,
    pretrained_text_encoder,
)
from templates.cli import label_count

METHODS = ("head", "head_from_means", "fine_tune", "contrastive", "contrastive20")


class Sst2Setup:
    """SST-2 and the text-encoder recipe's encoder and plan, as the few-shot text
    benchmarks share them: the ``splits``, the training ``texts`` and ``labels``, a
    fresh ``build()`` of the encoder (its pooling: mean, unit length for MiniLM; its
    sequence length fitted once), the ``validation`` and ``test`` batches, and the recipe's ``plan``
    with ``seed`` (the first draw's)."""

    def __init__(self, preset: str, data: str, seed: int = 0,
                 evaluation_length: int | None = None):
        files = [os.path.join(data, f"stsa.binary.{name}") for name in ("train", "dev", "test")]
        self.splits = splits = load_text_splits(*files)
        self.texts, self.labels = splits.train.texts, splits.labels["train"]
        self.test_sentences = len(splits.test)
        self.encoder = pretrained_text_encoder(preset, 2, fit_texts=self.texts,
                                               class_names=["0", "1"])
        self.build = functools.partial(
            pretrained_text_encoder, preset, 2, sequence_length=self.encoder.sequence_length,
            fit_texts=self.texts, class_names=["0", "1"])
        # Validation and test read at the training length, or (``evaluation_length``)
        # longer: the encoder takes any length up to its own (each batch is padded to
        # its longest text), so only the tokeniser changes.
        reader = self.encoder if not evaluation_length else pretrained_text_encoder(
            preset, 2, sequence_length=evaluation_length, load_weights=False,
            class_names=["0", "1"])
        self.validation, self.test = (
            reader.batches(getattr(splits, name).texts, splits.labels[name], 256)
            for name in ("validation", "test"))
        # The recipe's defaults (recipes.text_encoder_classification).
        self.plan = TransferPlan(learning_rate=1e-2, fine_tune_learning_rate=5e-5,
                                 scratch_learning_rate=1e-4, seed=seed)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.few_shot_text",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, help="A keras-hub text preset or folder.")
    parser.add_argument("--data", required=True, help="A folder with SST-2's "
                        "stsa.binary.{train,dev,test}.")
    parser.add_argument("--counts", type=label_count, nargs="+", default=[8, 16, 32],
                        help="Labels per class (all: the whole training set, 3 seeds).")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--contrastive-learning-rate", type=float,
                        default=ContrastiveSettings.contrastive_learning_rate,
                        help="The contrastive methods' rate (SetFit's 2e-5).")
    parser.add_argument("--compare-scratch", action="store_true",
                        help="With the head: the random encoder's curve too.")
    parser.add_argument("--scratch-learning-rate", type=float,
                        help="The random encoder's rate (default: the recipe's, 1e-4), to "
                        "choose it on validation with --seed 11.")
    parser.add_argument("--seed", type=int, default=0, help="The first draw's seed: 0 for "
                        "the reported figures, 11 to choose settings on other draws.")
    parser.add_argument("--head-epoch-factor", choices=("auto", "1"), default="auto",
                        help="auto: the plan's extra head epochs on a small training set "
                        "(TransferPlan.head_epoch_factor); 1: without them, to measure them.")
    parser.add_argument("--evaluation-sequence-length", type=int,
                        help="Read the validation and test sentences up to this many "
                        "tokens (default: the length fitted to the training sentences).")
    parser.add_argument("--output", default="runs/few_shot_text")
    args = parser.parse_args(argv)
    if args.head_epoch_factor == "1":  # label_curve fits each point's plan: lift the rule
        import templates.training.plan

        templates.training.plan.HEAD_STEPS_AT_LEAST = 1

    setup = Sst2Setup(args.preset, args.data, args.seed, args.evaluation_sequence_length)
    texts, labels, encoder, build = setup.texts, setup.labels, setup.encoder, setup.build
    validation, test, plan = setup.validation, setup.test, setup.plan
    if args.scratch_learning_rate:
        plan = dataclasses.replace(plan, scratch_learning_rate=args.scratch_learning_rate)
    results = {}
    for method in args.methods:
        pairs = ContrastiveSettings(contrastive=method.startswith("contrastive"),
                                    contrastive_pairs=20 if method == "contrastive20" else None,
                                    contrastive_learning_rate=args.contrastive_learning_rate)
        method_plan = (dataclasses.replace(plan, fine_tune_epochs=0) if method == "head"
                       else dataclasses.replace(plan, fine_tune_epochs=0,
                                                head_init="class_means")
                       if method == "head_from_means" else pairs.plan_for(plan))

        def tune(transfer, rows, seed, pairs=pairs):
            return contrastive_tune(transfer, [texts[row] for row in rows], labels[rows],
                                    pairs, seed)

        state = TrainingState(os.path.join(args.output, method), resume=True)
        curve = label_curve(
            args.counts, labels, lambda rows, seed: encoder.batches(
                [texts[row] for row in rows], labels[rows], plan.batch_size, shuffle=True,
                seed=seed), build, validation, test, method_plan, state=state,
            before_training=tune if pairs.contrastive else None,
            build_scratch=(functools.partial(encoder.scratch_model, seed=plan.seed)
                           if args.compare_scratch and method == "head" else None),
            directory=os.path.join(args.output, method), title=f"SST-2, {method}")
        results[method] = curve.summary()["transfer"]
        if "scratch" in curve.summary():
            results["scratch"] = curve.summary()["scratch"]
    report = {"preset": args.preset, "test_sentences": setup.test_sentences, "methods": results}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
