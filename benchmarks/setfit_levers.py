"""SetFit's head, the class means and more contrastive epochs, on validation: levers for
32 per class.

At K labelled SST-2 sentences per class (the selection draws, seeds 11-15), MiniLM is
tuned on SetFit's pairs as the text-encoder recipe's ``--contrastive`` tunes it
(``--contrastive-epochs``: SetFit's 1, or more), then scored on the same tuned encoder:
by the recipe's Keras head (`templates.training.label_curve`, as ``benchmarks.few_shot_text
--methods contrastive20`` trains it; ``--head-init class_means``: started from the class
means), by SetFit's own head, scikit-learn's logistic regression fitted to convergence on
the pooled embeddings (``C=1``, SetFit's, and ``C=100``), and by the nearest class mean
of those embeddings (`templates.models.nearest_class_mean`, nothing trained).

    python -m benchmarks.setfit_levers --preset ../shared/presets/all-MiniLM-L6-v2 \\
        --data ../shared/data/text/sst2 --contrastive-epochs 1 --output runs/setfit_levers_1

Ends with the curve's JSON; each point's logistic-regression scores are kept beside it
(``before_training`` of ``curve.transfer.K.SEED``), and finished points are skipped when
the command is run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from benchmarks.few_shot_text import Sst2Setup
from templates import (
    ContrastiveSettings,
    TrainingState,
    contrastive_tune,
    extract_features,
    label_curve,
    nearest_class_mean_head,
)
from templates.training.plan import HEAD_INITS


def main(argv=None) -> dict:
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser(prog="python -m benchmarks.setfit_levers",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--data", required=True, help="SST-2's stsa.binary.{train,dev,test}.")
    parser.add_argument("--counts", type=int, nargs="+", default=[32])
    parser.add_argument("--contrastive-epochs", type=int, default=1)
    parser.add_argument("--head-init", choices=HEAD_INITS, default="random",
                        help="How the recipe's head starts (the plan's head_init).")
    parser.add_argument("--seed", type=int, default=11, help="The first draw's seed.")
    parser.add_argument("--output", default="runs/setfit_levers")
    args = parser.parse_args(argv)

    setup = Sst2Setup(args.preset, args.data, args.seed)
    texts, labels, encoder, plan = setup.texts, setup.labels, setup.encoder, setup.plan
    validation, test = setup.validation, setup.test
    settings = ContrastiveSettings(contrastive=True,
                                   contrastive_epochs=args.contrastive_epochs)

    def tune(transfer, rows, seed):
        subset = [texts[row] for row in rows]
        details = contrastive_tune(transfer, subset, labels[rows], settings, seed)
        # The tuned encoder's pooled vectors, labels read with them (length-bucketed
        # batches come in their own order).
        train = extract_features(transfer.feature_extractor,
                                 transfer.batches(subset, labels[rows], 256))
        scored = {name: extract_features(transfer.feature_extractor, batches, what=name)
                  for name, batches in (("validation", validation), ("test", test))}
        for strength in (1.0, 100.0):  # SetFit's C=1, and a weaker penalty
            head = LogisticRegression(C=strength, max_iter=5000).fit(*train)
            details[f"logistic_regression_C{strength:g}"] = {
                name: float(head.score(*pair)) for name, pair in scored.items()}
        means = nearest_class_mean_head(*train, num_classes=2)
        details["nearest_class_mean"] = {
            name: float(np.mean(np.argmax(means.predict(features, verbose=0), axis=1)
                                == labels_of))
            for name, (features, labels_of) in scored.items()}
        return details

    curve = label_curve(
        args.counts, labels, lambda rows, seed: encoder.batches(
            [texts[row] for row in rows], labels[rows], plan.batch_size, shuffle=True,
            seed=seed), setup.build, validation, test,
        dataclasses.replace(settings.plan_for(plan), head_init=args.head_init),
        state=TrainingState(args.output, resume=True), before_training=tune,
        directory=args.output, title="SST-2, SetFit's levers")
    print(json.dumps(curve.summary(), indent=1))
    return curve.summary()


if __name__ == "__main__":
    main()
