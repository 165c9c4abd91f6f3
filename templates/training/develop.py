"""The develop-model template: develop a source model, check it, reuse it, tune it.

The four steps of the develop-model approach:

1. **Select a source task**: a related problem with abundant data, and a model builder.
2. **Develop the source model**, then check it is skilful: it must beat a naive
   baseline (the majority class) on held-out source data by a clear margin, otherwise
   there is nothing worth transferring and `develop_source_model` refuses it.
3. **Reuse** all or part of it (cut at a named layer or a depth) under a new head.
4. **Tune** it on the target task with the same head-then-fine-tune schedule as the
   pretrained-model template (`templates.training.phases.train_head` and `fine_tune`).

The source model and its baseline check are saved, so a later run reuses them
instead of retraining.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.files import write_json
from templates.models.backbones import cut_backbone
from templates.models.heads import classification_head
from templates.models.transfer_model import TransferModel
from templates.training.compilation import compile_classifier
from templates.training.phases import evaluate_accuracy
from templates.training.plan import TransferPlan
from templates.training.saving import load_model, save_model

SOURCE_MODEL_FILE = "source_model.keras"
SOURCE_CHECK_FILE = "source_check.json"
SOURCE_DATA_FILE = "source_data.json"


class UnskilledSourceModelError(CookbookError):
    """The source model does not clearly beat the naive baseline: nothing to transfer."""


@dataclasses.dataclass
class SourceCheck:
    """How the source model compares with the naive baseline on held-out source data.

    Attributes:
        accuracy: The source model's held-out accuracy.
        baseline_accuracy: Accuracy of always predicting the training majority class.
        margin: How far above the baseline the model had to be.
        skilful: Whether ``accuracy >= baseline_accuracy + margin``.
        baseline: Name of the baseline.
        metric: What ``accuracy`` and ``baseline_accuracy`` measure (word vectors are
            judged by a similarity correlation or analogy accuracy instead).
    """

    accuracy: float
    baseline_accuracy: float
    margin: float
    skilful: bool
    baseline: str = "majority class"
    metric: str = "held-out accuracy"


def labels_of(data) -> np.ndarray:
    """Integer labels of ``(inputs, labels)`` arrays or of an iterable of such batches."""
    if isinstance(data, tuple) and len(data) == 2:
        return np.asarray(keras.ops.convert_to_numpy(data[1])).reshape(-1)
    return np.concatenate([np.asarray(keras.ops.convert_to_numpy(labels)).reshape(-1)
                           for _, labels in data])


def majority_baseline_accuracy(train_labels: Sequence[int], evaluation_labels: Sequence[int]
                               ) -> float:
    """Accuracy of always predicting the most frequent training label."""
    train_labels = np.asarray(train_labels, dtype=int)
    evaluation_labels = np.asarray(evaluation_labels, dtype=int)
    if train_labels.size == 0 or evaluation_labels.size == 0:
        raise CookbookError("The naive baseline needs non-empty training and evaluation labels.")
    majority = np.bincount(train_labels).argmax()
    return float(np.mean(evaluation_labels == majority))


def _fit(model: keras.Model, data, epochs: int, batch_size: int, verbose):
    # No per-epoch validation: the held-out data serves the skill check after training,
    # and scoring it every epoch cost the digits recipe a third of its source training.
    if isinstance(data, tuple):
        return model.fit(data[0], data[1], epochs=epochs, batch_size=batch_size,
                         verbose=verbose)
    return model.fit(data, epochs=epochs, verbose=verbose)


def check_source_model(
    model: keras.Model, train_labels, held_out, margin: float = 0.05
) -> SourceCheck:
    """Compare a compiled source classifier with the majority-class baseline."""
    accuracy = evaluate_accuracy(model, held_out)
    baseline = majority_baseline_accuracy(train_labels, labels_of(held_out))
    return SourceCheck(accuracy, baseline, margin, accuracy >= baseline + margin)


def develop_source_model(
    build_model: Callable[[], keras.Model],
    train_data,
    held_out_data,
    plan: TransferPlan | None = None,
    margin: float = 0.05,
    allow_unskilled: bool = False,
    directory: str | os.PathLike | None = None,
    verbose: int | str = "auto",
) -> tuple[keras.Model, SourceCheck]:
    """Steps 1-2: train the source model and check it beats the naive baseline.

    Args:
        build_model: Returns an uncompiled classifier (softmax output) for the source
            task.
        train_data: Source training data: ``(inputs, labels)`` arrays or batches.
        held_out_data: Held-out source data, same form, for the skill check.
        plan: How the source model trains: ``head_epochs`` epochs of Adam at
            ``learning_rate``, ``batch_size`` examples per batch, Keras's generators
            seeded with ``seed`` before the model is built (``None``: `TransferPlan`'s
            defaults, ten epochs at 1e-3 in batches of 32, seed 0).
        margin: Accuracy points (0..1) the model must be above the baseline.
        allow_unskilled: Return an unskilled model instead of raising (explicit
            override; the check is still recorded).
        directory: Where the source model and its check are saved. If both files are
            already there, they are loaded and nothing is retrained, provided the
            source data are the same: for ``(inputs, labels)`` arrays a digest of
            both data sets is saved beside them (``source_data.json``) and other data
            are trained on afresh, so a model trained on other examples (perhaps the
            target's test examples) is never served. Batches cannot be digested; a
            saved model is then reused as it is.
        verbose: Passed to ``fit``.

    Raises:
        UnskilledSourceModelError: when the model is not clearly better than the
            baseline and ``allow_unskilled`` is false.
    """
    model_path = check_path = data_path = digest = None
    if directory is not None:
        digest = _data_digest(train_data, held_out_data)
        model_path = os.path.join(directory, SOURCE_MODEL_FILE)
        check_path = os.path.join(directory, SOURCE_CHECK_FILE)
        data_path = os.path.join(directory, SOURCE_DATA_FILE)
        if (os.path.isfile(model_path) and os.path.isfile(check_path)
                and (digest is None or _saved_digest(data_path) == digest)):
            check = read_saved_check(check_path, margin, allow_unskilled)
            return load_model(model_path), check

    plan = plan or TransferPlan()
    keras.utils.set_random_seed(plan.seed)
    model = build_model()
    compile_classifier(model, plan.learning_rate)
    _fit(model, train_data, plan.head_epochs, plan.batch_size, verbose)
    check = check_source_model(model, labels_of(train_data), held_out_data, margin)
    if directory is not None:
        # The check is saved even when it fails, so the refusal can be inspected.
        write_json(check_path, dataclasses.asdict(check))
        save_model(model, model_path)
        if digest is not None:
            write_json(data_path, {"digest": digest})
    _enforce(check, allow_unskilled, check_path)
    return model, check


def _data_digest(*data_sets) -> str | None:
    """SHA-256 of ``(inputs, labels)`` NumPy arrays (shapes and types included), or
    ``None`` when any data set is in another form (batches cannot be read twice)."""
    digest = hashlib.sha256()
    for data in data_sets:
        if not (isinstance(data, tuple) and len(data) == 2
                and all(isinstance(part, np.ndarray) for part in data)):
            return None
        for part in data:
            digest.update(f"{part.shape}{part.dtype}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def _saved_digest(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle).get("digest")
    except (OSError, ValueError, AttributeError):
        return None


def read_saved_check(path: str, margin: float, allow_unskilled: bool) -> SourceCheck:
    """Read a saved `SourceCheck` and enforce it again.

    The saved score is judged against today's ``margin``, not the one it was saved
    with, so tightening the margin refuses a source model saved under a looser one.
    """
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    check = SourceCheck(
        saved["accuracy"], saved["baseline_accuracy"], margin,
        saved["accuracy"] >= saved["baseline_accuracy"] + margin,
        saved.get("baseline", "majority class"),
        saved.get("metric", "held-out accuracy"),
    )
    _enforce(check, allow_unskilled, path)
    return check


def _enforce(check: SourceCheck, allow_unskilled: bool, where: str | None) -> None:
    if check.skilful or allow_unskilled:
        return
    raise UnskilledSourceModelError(
        f"The source model is not clearly better than the naive baseline: "
        f"{check.metric} {check.accuracy:.3f} vs {check.baseline} {check.baseline_accuracy:.3f} "
        f"(required margin {check.margin:.3f}). Reusing it would transfer nothing useful; "
        "train it longer, give it more source data or pick a more related source task, "
        "or pass allow_unskilled=True (--allow-unskilled in the text recipe) to reuse it "
        "anyway."
        + (f" (check saved in {where})" if where else "")
    )


def default_cut(model: keras.Model) -> str:
    """The layer feeding the source model's output layer: everything but the old head."""
    if len(model.layers) < 3:
        raise CookbookError(f"{model.name} is too small to reuse: it has no hidden layer.")
    return model.layers[-2].name


def reuse_model(
    source_model: keras.Model,
    num_classes: int,
    cut_at: str | int | None = "default",
    pooling: str = "avg",
    dropout: float = 0.2,
    hidden_units: Sequence[int] = (),
    fine_tune_from: str | int | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "developed_model",
) -> TransferModel:
    """Step 3: keep the source model up to ``cut_at`` (frozen) and add a new head.

    The reused part is a copy: tuning the returned model never changes
    ``source_model``, so several seeds or cut points reused from one source model
    each start from the same source weights.

    Args:
        source_model: The trained source classifier.
        num_classes: Number of target classes.
        cut_at: A layer name, a depth, or ``"default"`` (the layer before the source's
            output layer).
        pooling, dropout, hidden_units: Head options (see `classification_head`).
        fine_tune_from: First reused layer to unfreeze in `fine_tune` (``None``: all).
        class_names: Optional target class names.
        name: Name of the full model.
    """
    if cut_at == "default":
        cut_at = default_cut(source_model)
    copy = keras.models.clone_model(source_model)
    copy.set_weights(source_model.get_weights())
    reused = cut_backbone(copy, cut_at)
    reused.trainable = False
    head = classification_head(reused.output_shape[1:], num_classes, pooling=pooling,
                               dropout=dropout, hidden_units=hidden_units)
    return TransferModel(reused, head, fine_tune_from=fine_tune_from,
                         class_names=class_names, name=name)


@dataclasses.dataclass
class DevelopedModel:
    """What `develop_model` returns: the target model ready to tune, and its source."""

    transfer: TransferModel
    source_model: keras.Model
    source_check: SourceCheck


def develop_model(
    build_model: Callable[[], keras.Model],
    source_train,
    source_held_out,
    num_classes: int,
    cut_at: str | int | None = "default",
    source_plan: TransferPlan | None = None,
    margin: float = 0.05,
    allow_unskilled: bool = False,
    directory: str | os.PathLike | None = None,
    verbose: int | str = "auto",
    **head_options,
) -> DevelopedModel:
    """Steps 1-3 of the develop-model approach in one call: the source model trained
    as ``source_plan`` says (`develop_source_model`), checked, cut at ``cut_at`` under a
    new head.

    Then tune the returned ``transfer`` with `templates.training.phases.train_head` and
    `templates.training.phases.fine_tune` (step 4), exactly as for a pretrained model.
    """
    source_model, check = develop_source_model(
        build_model, source_train, source_held_out, source_plan, margin=margin,
        allow_unskilled=allow_unskilled, directory=directory, verbose=verbose,
    )
    transfer = reuse_model(source_model, num_classes, cut_at=cut_at, **head_options)
    return DevelopedModel(transfer, source_model, check)


def articulation_layers(model: keras.Model) -> list[str]:
    """Layers every path from input to output goes through: the valid cut points.

    In a chain every layer qualifies; in a ResNet only the block outputs do. Read from
    the functional config (its ``inbound_nodes``), so it works for any functional model.
    """
    layers = model.layers
    position = {layer.name: index for index, layer in enumerate(layers)}
    invalid: set[int] = set()
    for entry in model.get_config()["layers"]:
        target = position[entry["name"]]
        for source_name in _history_names(entry.get("inbound_nodes", [])):
            # An edge from source to target bypasses every layer strictly between them.
            invalid.update(range(position[source_name] + 1, target))
    return [
        layer.name for index, layer in enumerate(layers)
        if index > 0 and index not in invalid and len(layer.output.shape) in (2, 4)
    ]


def _history_names(structure) -> Iterable[str]:
    if isinstance(structure, dict):
        history = structure.get("keras_history")
        if history is not None:
            yield history[0]
        for value in structure.values():
            yield from _history_names(value)
    elif isinstance(structure, (list, tuple)):
        for value in structure:
            yield from _history_names(value)
