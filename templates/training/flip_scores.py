"""Test-time flips, scored: validation and test accuracy with and without flip averaging.
"""

from __future__ import annotations

import keras


def flip_scores(run, model: keras.Model, validation=None, test=None) -> dict:
    """Accuracies of the flip-averaged ``model``, with the run's own beside them.

    Returns:
        ``{"val_accuracy": ..., "test_accuracy": ..., "without_flips": {...}}`` for the
        sets given: merged over `templates.training.run.TransferRun.metrics`, the recipe's
        headline scores become those of the model it saves.
    """
    from templates.training.phases import evaluate_accuracy

    scores = {}
    for key, data in (("val_accuracy", validation), ("test_accuracy", test)):
        if data is not None:
            scores[key] = evaluate_accuracy(model, data)
    return {**scores, "without_flips": {key: run.scores.get(key) for key in scores}}
