"""What every worker of a multi-worker run does around training: which one is the
chief, scoring its own copy without
collective ops, and writing the run's outputs (`finish_multi_worker`).

Plain Keras and the standard library: the recipes import it on any backend, and only the
training loop itself (`templates.training.multi_worker`) needs TensorFlow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.files import write_json
from templates.training.checkpoints import save_on_every_worker
from templates.training.hardware import StrategyChoice
from templates.training.saving import save_model, write_labels


def is_chief(strategy) -> bool:
    """Whether this process writes checkpoints and outputs (worker 0, or single-host)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def finish_multi_worker(
    choice: StrategyChoice,
    run: Any,
    model: keras.Model,
    saved_model: keras.Model,
    output_dir: str | os.PathLike,
    class_names: list[str],
    evaluation: dict[str, Any],
    report: Callable[[Callable[[Any], Any]], dict] | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    """Score, record and save a multi-worker run; return its metrics.

    Every worker scores its (identical) copy of ``model`` on each ``evaluation`` set
    with `local_accuracy` and writes ``OUTPUT_DIR/workers/worker_I.json``; every worker
    joins the save of ``saved_model`` (`save_on_every_worker`); the chief keeps
    ``model.keras`` and writes ``labels.txt``, ``metrics.json`` and, with ``report``,
    the evaluation folder.

    Args:
        run: The `templates.training.run.TransferRun` of the multi-worker training.
        evaluation: ``{"val_accuracy": batches, "test_accuracy": batches}`` (either may
            be left out).
        report: Writes the recipe's evaluation folder given a batch predictor (called
            on the chief with `local_predict`, which runs no collective op) and returns
            its headline figures (`templates.reports.evaluation.evaluate_run`).
        metadata: Recorded in the metrics (e.g. `templates.reports.environment.run_metadata`).
    """
    output_dir = os.fspath(output_dir)
    chief = is_chief(choice.strategy)
    metrics = {
        "strategy": "multi_worker", "replicas": choice.replicas,
        "loss": run.per_phase("loss"),
        "epochs_run": {phase: result.epochs_run for phase, result in run.phases.items()},
        "learning_rates": run.learning_rates,
        **{name: local_accuracy(model, batches) for name, batches in evaluation.items()},
        "weights_digest": weights_digest(model), "chief": chief, **metadata,
    }
    write_json(os.path.join(output_dir, "workers", f"worker_{task_index()}.json"), metrics)
    save_on_every_worker(os.path.join(output_dir, "model.keras"),
                         lambda path: save_model(saved_model, path))
    if chief:
        write_labels(class_names, os.path.join(output_dir, "labels.txt"))
        if report is not None:
            metrics["evaluation"] = report(local_predict(model))
        write_json(os.path.join(output_dir, "metrics.json"), metrics)
    score = "test_accuracy" if "test_accuracy" in metrics else "val_accuracy"
    print(f"replicas {choice.replicas}; final {score} {metrics[score]:.4f}; "
          f"weights {metrics['weights_digest']}; outputs in {output_dir}", flush=True)
    return metrics


def local_predict(model: keras.Model) -> Callable[[Any], Any]:
    """A batch predictor for this worker alone: a plain call in inference mode (see
    `local_accuracy`); for `templates.reports.evaluation.evaluation_report(predict=...)`."""
    return lambda inputs: model(inputs, training=False)


def local_accuracy(model: keras.Model, batches) -> float:
    """Accuracy of ``model`` on ``(inputs, labels)`` batches, computed on this worker.

    Plain model calls read the (identical) local copy of the weights: under
    `MultiWorkerMirroredStrategy`, ``model.evaluate`` would run collectives that need
    every worker.
    """
    correct = total = 0
    for inputs, labels in batches:
        probabilities = keras.ops.convert_to_numpy(model(inputs, training=False))
        labels = np.asarray(keras.ops.convert_to_numpy(labels)).reshape(-1)
        correct += int(np.sum(probabilities.argmax(axis=-1) == labels))
        total += len(labels)
    if total == 0:
        raise CookbookError("Cannot compute an accuracy: the data yielded no examples.")
    return correct / total


def task_index() -> int:
    """This worker's index in ``TF_CONFIG`` (0 without one)."""
    return int(json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0))


def weights_digest(model: keras.Model) -> str:
    """A short SHA-256 of every weight, to compare replicas across machines."""
    import hashlib

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]
