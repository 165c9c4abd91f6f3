"""One transfer, planned and run: `TransferPlan` says how, `run_transfer` does it.

    transfer = pretrained_model("mobilenet", num_classes=2, alpha=0.25)
    plan = TransferPlan(head_epochs=10, fine_tune_epochs=3, seed=1)
    run = run_transfer(transfer, train, validation, plan, checkpoints="runs/cats/checkpoints")
    run.history["val_accuracy"], run.learning_rates, run.phases["head"].seconds

This is the library's one implementation of the two phases of a transfer:

1. the head learns with the reused part frozen (`templates.phases.train_head`; by
   default on the frozen part's features, computed once);
2. the top of the reused part is unfrozen, every BatchNormalization layer kept frozen,
   and everything trains at a lower rate (`templates.phases.fine_tune`), optionally
   with discriminative rates per block.

Before each phase the learning-rate finder can choose the rate (it falls back to the
plan's rate when its sweep cannot be trusted); within a phase the rate follows the
plan's schedule; early stopping and best-epoch restore watch the plan's ``monitor``.
Every epoch is checkpointed under ``checkpoints``: with ``resume=True`` finished phases
(and the rates the finder chose for them) are restored, and the phase in progress
continues from its last finished epoch, ending where an uninterrupted run would.

The recipes, `templates.comparison` (transfer against scratch, the reuse-depth sweep)
and the develop-model template all train through `run_transfer`. Under a
`tf.distribute.MultiWorkerMirroredStrategy`, where Keras 3's ``fit`` fails
(keras-team/keras#20585), the same call runs the same plan on a ``strategy.run`` loop
(`templates.multi_worker.train_transfer_multi_worker`); options that loop cannot honour
are refused by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from templates.checkpoints import TrainingState, run_phase
from templates.learning_rates import (
    SCHEDULES,
    SUGGESTION_RULES,
    choose_learning_rate,
    discriminative_multipliers,
    finder_bounds,
    record_finding,
    scheduled,
)
from templates.multi_label import is_multi_label
from templates.phases import (
    Transferable,
    compile_classifier,
    evaluate_scores,
    find_fine_tune_learning_rate,
    find_head_learning_rate,
    fine_tune,
    head_training_features,
    train_head,
)
from templates.reports import merge_histories

MONITORS = ("val_accuracy", "val_loss", "val_balanced_accuracy", "val_macro_f1",
            "val_micro_f1")
PHASES = ("head", "fine_tune")


@dataclasses.dataclass
class TransferPlan:
    """How a transfer trains: everything `run_transfer` needs but the model and data.

    ``TransferPlan()`` is a good start (ten head epochs, three of fine-tuning, Adam at
    1e-3 then 1e-4, early stopping after three epochs without a better validation
    accuracy, the best epoch restored). Everything but ``augmentation`` and
    ``callbacks`` is plain data: `to_dict` / `from_dict` round-trip it through JSON.

    Attributes:
        head_epochs: Epochs of phase 1 (reused part frozen).
        fine_tune_epochs: Epochs of phase 2 (0 skips fine-tuning).
        learning_rate: The head's Adam rate (with ``find_learning_rates``, the rate
            used when the finder's sweep cannot be trusted).
        fine_tune_learning_rate: The fine-tuning rate (likewise).
        batch_size: Examples per batch when training on cached features (batches the
            caller gives are used as they are).
        cache_features: Train the head on the frozen part's features, computed once.
        schedule: Rate within each phase: one of `templates.learning_rates.SCHEDULES`.
        discriminative_factor: Fine-tune each earlier block of the reused part this
            many times slower than the next (fastai: 2.6); ``None``: one rate.
        steps_per_epoch: Batches per epoch, for a schedule; ``None`` reads it from the
            training batches.
        find_learning_rates: Run the learning-rate finder before each phase.
        finder_rule: How the finder suggests a rate (`SUGGESTION_RULES`): the loss
            minimum / 10 by default, chosen on the validation data of selection seeds,
            photos and text (docs/results.md).
        fine_tune_from: First layer of the reused part to unfreeze: ``"default"`` (the
            template's choice), a layer name or index, or ``None`` (all of it).
        patience: Stop a phase after this many epochs without a better ``monitor``
            (0: never early).
        restore_best: End each phase with its best epoch's weights.
        monitor: What early stopping and best-epoch restore watch (`MONITORS`).
        seed: Every epoch's data order, dropout and augmentation are drawn from
            ``(seed, epoch)`` (`templates.reproducibility`).
        class_weight: ``{label: weight}`` scaling each training example's loss in both
            phases (and the scratch run of a comparison), e.g. `balanced_class_weight`
            for imbalanced classes; ``None``: every example counts 1.
        label_smoothing: Train towards smoothed targets (the true class gets
            ``1 - s + s / classes``; `templates.losses`) in both phases and the scratch
            run of a comparison; 0: none. The finder sweeps the plain loss.
        augmented_views: With ``augmentation`` and ``cache_features``: the head trains
            on cached features of the originals and of K augmented views of every
            training example, extracted once (`templates.phases.head_training_features`);
            fine-tuning applies ``augmentation`` in the graph. 0: no views.
        augmentation: Keras layers applied to training inputs (with
            ``cache_features=False``, or through ``augmented_views``); not serialised.
        callbacks: Extra Keras callbacks per phase, ``{"head": [...], "fine_tune":
            [...]}`` (e.g. TensorBoard); not serialised.
    """

    head_epochs: int = 10
    fine_tune_epochs: int = 3
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    batch_size: int = 32
    cache_features: bool = True
    schedule: str = "constant"
    discriminative_factor: float | None = None
    steps_per_epoch: int | None = None
    find_learning_rates: bool = False
    finder_rule: str = "minimum_over_10"
    fine_tune_from: str | int | None = "default"
    patience: int = 3
    restore_best: bool = True
    monitor: str = "val_accuracy"
    seed: int = 0
    augmented_views: int = 0
    class_weight: dict[int, float] | None = None
    label_smoothing: float = 0.0
    augmentation: keras.layers.Layer | None = dataclasses.field(
        default=None, repr=False, compare=False)
    callbacks: dict[str, list[keras.callbacks.Callback]] = dataclasses.field(
        default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        checks = [
            (self.head_epochs >= 0 and self.fine_tune_epochs >= 0,
             f"epochs must be 0 or more; got head_epochs={self.head_epochs}, "
             f"fine_tune_epochs={self.fine_tune_epochs}"),
            (self.learning_rate > 0 and self.fine_tune_learning_rate > 0,
             f"learning rates must be positive; got {self.learning_rate} and "
             f"{self.fine_tune_learning_rate}"),
            (self.batch_size >= 1, f"batch_size must be at least 1; got {self.batch_size}"),
            (self.schedule in SCHEDULES,
             f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}"),
            (self.discriminative_factor is None or self.discriminative_factor >= 1,
             f"discriminative_factor must be 1 or more (earlier blocks learn slower); got "
             f"{self.discriminative_factor}"),
            (self.finder_rule in SUGGESTION_RULES,
             f"unknown finder_rule {self.finder_rule!r}; choose from "
             f"{', '.join(SUGGESTION_RULES)}"),
            (self.patience >= 0, f"patience must be 0 or more; got {self.patience}"),
            (self.monitor in MONITORS,
             f"unknown monitor {self.monitor!r}; choose from {', '.join(MONITORS)}"),
            (self.seed >= 0, f"seed must be a non-negative integer; got {self.seed}"),
            (0.0 <= self.label_smoothing < 1.0,
             f"label_smoothing must be in [0, 1); got {self.label_smoothing}"),
            (self.augmented_views >= 0,
             f"augmented_views must be 0 or more; got {self.augmented_views}"),
            (self.augmentation is None or not self.cache_features or self.augmented_views,
             "augmentation changes the inputs every epoch, so the head cannot train on "
             "features cached once: set cache_features=False, or augmented_views=K to "
             "cache the features of K augmented views of every training example"),
            (not self.augmented_views or self.augmentation is not None,
             "augmented_views needs an augmentation to draw the views with"),
            (self.class_weight is None or (
                isinstance(self.class_weight, dict) and self.class_weight
                and all(float(weight) > 0 for weight in self.class_weight.values())),
             f"class_weight must be None or a non-empty {{label: positive weight}} dict; "
             f"got {self.class_weight!r}"),
            (set(self.callbacks) <= set(PHASES),
             f"callbacks are given per phase, {{'head': [...], 'fine_tune': [...]}}; got "
             f"the keys {sorted(self.callbacks)}"),
        ]
        for passed, message in checks:
            if not passed:
                raise ValueError(f"TransferPlan: {message}.")

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (``augmentation`` and ``callbacks`` by name)."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.name not in ("augmentation", "callbacks")}
        data["augmentation"] = None if self.augmentation is None else self.augmentation.name
        data["callbacks"] = {phase: [type(callback).__name__ for callback in callbacks]
                             for phase, callbacks in self.callbacks.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], augmentation: keras.layers.Layer | None = None,
                  callbacks: dict[str, list[keras.callbacks.Callback]] | None = None
                  ) -> TransferPlan:
        """The plan `to_dict` wrote; its augmentation and callbacks (written by name
        only) are given again here."""
        names = {field.name for field in dataclasses.fields(cls)} - {"augmentation",
                                                                      "callbacks"}
        unknown = sorted(set(data) - names - {"augmentation", "callbacks"})
        if unknown:
            raise ValueError(f"TransferPlan.from_dict: unknown fields {unknown}.")
        fields = {key: value for key, value in data.items() if key in names}
        if fields.get("class_weight"):  # JSON object keys are strings
            fields["class_weight"] = {int(label): float(weight)
                                      for label, weight in fields["class_weight"].items()}
        return cls(**fields, augmentation=augmentation, callbacks=callbacks or {})

    def with_rates(self, learning_rates: dict[str, float]) -> TransferPlan:
        """This plan with the rates a run used (`TransferRun.learning_rates`) and no
        finder: what a second model must train with to be compared fairly."""
        return dataclasses.replace(
            self, learning_rate=learning_rates.get("head", self.learning_rate),
            fine_tune_learning_rate=learning_rates.get("fine_tune",
                                                       self.fine_tune_learning_rate),
            find_learning_rates=False)

    def early_stopping(self) -> dict[str, Any]:
        """The settings `templates.checkpoints.TrainingState.callbacks` takes."""
        return {"keep_best": self.restore_best or bool(self.patience),
                "patience": self.patience or None, "restore_best": self.restore_best,
                "monitor": self.monitor}


def balanced_class_weight(labels) -> dict[int, float]:
    """``{label: weight}`` that makes every class weigh as much in the loss as the
    others: ``examples / (classes * examples of the label)``, scikit-learn's
    ``compute_class_weight("balanced")`` over the labels present."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise ValueError("balanced_class_weight needs at least one label.")
    classes = np.unique(labels)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(label): round(float(weight), 6) for label, weight in zip(classes, weights)}


@dataclasses.dataclass
class PhaseResult:
    """One phase of a `TransferRun`.

    Attributes:
        epochs: Epochs recorded (across restarts; fewer than planned after an early stop).
        seconds: Wall time of this call's work on the phase (0 when restored; on the
            multi-worker loop, which runs both phases in one call, the last phase
            carries the whole run's time).
        learning_rate: The peak rate the phase trained at (the finder's, or the plan's).
        scores: Scores after the phase: ``val_accuracy``, ``test_accuracy`` and the
            other compiled metrics (``val_macro_f1``...).
        restored: Whether the phase had finished in an earlier run.
        epochs_run: On the multi-worker loop, the epochs this call trained (a resumed
            run skips finished ones); empty on one machine.
    """

    epochs: int
    seconds: float
    learning_rate: float
    scores: dict[str, float]
    restored: bool
    epochs_run: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TransferRun:
    """What `run_transfer` did.

    Attributes:
        history: Per-epoch logs of both phases (`templates.reports.merge_histories`:
            ``epoch`` counted on across phases, ``phase``, one list per metric).
        phases: ``{"head": PhaseResult, "fine_tune": PhaseResult}``.
        plan: The plan that ran.
        start_scores: Every compiled validation metric before any training
            (``{"accuracy": ..., "macro_f1": ...}``; with ``measure_start=True``).
        test_scores: Every compiled test metric at the end (when test data was given).
    """

    history: dict[str, list[float]]
    phases: dict[str, PhaseResult]
    plan: TransferPlan
    start_scores: dict[str, float] = dataclasses.field(default_factory=dict)
    test_scores: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def start_accuracy(self) -> float | None:
        """Validation accuracy before any training (with ``measure_start=True``)."""
        return self.start_scores.get("accuracy")

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy at the end (when test data was given)."""
        return self.test_scores.get("accuracy")

    @property
    def learning_rates(self) -> dict[str, float]:
        """The rate each phase trained at."""
        return {phase: result.learning_rate for phase, result in self.phases.items()}

    @property
    def validation_curve(self) -> list[float]:
        """Validation accuracy per epoch, both phases."""
        return self.curve("accuracy")

    def curve(self, metric: str) -> list[float]:
        """Validation ``metric`` (``"accuracy"``, ``"macro_f1"``...) per epoch, both
        phases."""
        return list(self.history.get(f"val_{metric}", []))

    def per_phase(self, key: str) -> dict[str, list[float]]:
        """``history[key]`` split by phase: ``{"head": [...], "fine_tune": [...]}``."""
        split: dict[str, list[float]] = {}
        for phase, value in zip(self.history["phase"], self.history.get(key, [])):
            split.setdefault("fine_tune" if phase == "fine-tuning" else phase, []).append(value)
        return split

    @property
    def scores(self) -> dict[str, float]:
        """The scores after the last phase."""
        return list(self.phases.values())[-1].scores if self.phases else {}

    def metrics(self) -> dict[str, Any]:
        """What a recipe's ``metrics.json`` records of the run: the final scores, the
        scores and wall time after each phase, the rates used and the plan."""
        metrics: dict[str, Any] = {**self.scores}
        for phase, key in (("head", "head"), ("fine_tune", "fine_tuned")):
            if phase in self.phases:
                metrics[key] = self.phases[phase].scores
                metrics[f"{phase}_seconds"] = self.phases[phase].seconds
        metrics.update(learning_rates=self.learning_rates, plan=self.plan.to_dict())
        return metrics

    def to_dict(self) -> dict[str, Any]:
        return {"history": self.history,
                "phases": {name: dataclasses.asdict(result)
                           for name, result in self.phases.items()},
                "learning_rates": self.learning_rates, "start_accuracy": self.start_accuracy,
                "test_accuracy": self.test_accuracy, "start_scores": self.start_scores,
                "test_scores": self.test_scores, "plan": self.plan.to_dict()}


def check_plan_fits(plan: TransferPlan, model: keras.Model) -> None:
    """Refuse, by name, what a plan asks that the model's kind cannot do: class weights
    and balanced accuracy need single labels; micro F1 is a multi-label score."""
    multi = is_multi_label(model)
    problems = [message for refused, message in (
        (multi and plan.class_weight is not None,
         "class_weight scales single-label examples; a multi-label model's examples "
         "carry several labels"),
        (multi and plan.monitor == "val_balanced_accuracy",
         "val_balanced_accuracy is a single-label score; watch val_micro_f1, "
         "val_macro_f1, val_accuracy (exact match) or val_loss"),
        (not multi and plan.monitor == "val_micro_f1",
         "val_micro_f1 is a multi-label score (for single labels it is the accuracy)"),
        (multi and _is_multi_worker(getattr(model, "distribute_strategy", None)),
         "a multi-label model does not train on the multi-worker loop (its loss and "
         "metrics are single-label); train it on one machine"),
    ) if refused]
    if problems:
        raise ValueError(f"TransferPlan does not fit {model.name}: {'; '.join(problems)}.")


def steps_per_epoch(batches) -> int:
    """Batches per pass over ``batches``: its ``len`` or its known `tf.data` cardinality.

    Raises:
        ValueError: when neither is known (give ``TransferPlan(steps_per_epoch=...)``).
    """
    try:
        return len(batches)
    except TypeError:
        pass
    cardinality = getattr(batches, "cardinality", None)
    if cardinality is not None:
        count = int(cardinality())
        if count > 0:
            return count
    raise ValueError(
        "A learning-rate schedule needs the number of batches per epoch, and these "
        "batches do not tell it (no len(), unknown tf.data cardinality): give "
        "TransferPlan(steps_per_epoch=...).")


def run_transfer(
    transfer: Transferable,
    train: Iterable,
    validation: Iterable | None = None,
    plan: TransferPlan | None = None,
    checkpoints: str | os.PathLike | TrainingState | None = None,
    *,
    resume: bool = False,
    test: Iterable | None = None,
    output_dir: str | os.PathLike | None = None,
    name: str | None = None,
    measure_start: bool = False,
    score_phases: bool = True,
    verbose: int | str = "auto",
    features: tuple[np.ndarray, np.ndarray] | None = None,
) -> TransferRun:
    """Train ``transfer`` in two phases as ``plan`` says; return what happened.

    Args:
        transfer: A template's model (`templates.pretrained.pretrained_model`,
            `templates.develop.reuse_model`, `templates.text_classifiers
            .pretrained_text_classifier`), reused part frozen.
        train: Training batches of ``(inputs, integer labels)``, re-iterable (a
            `tf.data.Dataset`, a `keras.utils.PyDataset`...). Under a
            `MultiWorkerMirroredStrategy`: a batched `tf.data.Dataset` (each worker
            reads its shard) or a ``dataset_fn(input_context)``.
        validation: Batches for early stopping, best-epoch restore and the scores.
        plan: How to train (`TransferPlan`; ``None``: ``TransferPlan()``).
        checkpoints: A folder (or a `templates.checkpoints.TrainingState`) where every
            epoch is checkpointed. ``None``: a temporary folder when early stopping
            needs one, else none.
        resume: Continue from what ``checkpoints`` holds (a folder only; a
            `TrainingState` carries its own choice).
        test: Batches scored after each phase and at the end.
        output_dir: Where the finder writes ``lr_finder_PHASE.png/.json``.
        name: Prefix of the phases' names in ``checkpoints`` (``NAME.head``), so several
            runs can share one folder.
        measure_start: Score the validation data before any training (for the
            transfer report's start measure).
        score_phases: Score validation (and test) data after each phase.
        verbose: Passed to ``fit``.
        features: The frozen part's features of ``train``, already extracted
            (`templates.selection.Selection.features`, or
            `templates.phases.head_training_features`): the head phase and its finder
            train on them instead of extracting them again. Not with the plan's
            ``augmented_views`` (those add views) or without ``cache_features``.

    Returns:
        A `TransferRun`.
    """
    plan = plan or TransferPlan()
    check_plan_fits(plan, transfer.model)
    if features is not None and (plan.augmented_views or not plan.cache_features):
        raise ValueError("run_transfer(features=...) gives the cached features of the "
                         "training examples, but the plan asks for augmented_views or "
                         "cache_features=False: drop one or the other.")
    strategy = getattr(transfer.model, "distribute_strategy", None)
    if _is_multi_worker(strategy):
        return _run_multi_worker(transfer, strategy, train, validation, plan, checkpoints,
                                 resume, test, output_dir)
    with checkpoint_state(checkpoints, resume, plan) as state:
        return _run(transfer, train, validation, plan, state, test, output_dir, name,
                    measure_start, score_phases, verbose, features)


def _run(transfer, train, validation, plan, state, test, output_dir, name, measure_start,
         score_phases, verbose, features=None) -> TransferRun:
    prefix = f"{name}." if name else ""
    steps = None
    if plan.schedule != "constant":
        steps = plan.steps_per_epoch or steps_per_epoch(train)
    start_scores = {}
    if measure_start:
        compile_classifier(transfer.model, plan.learning_rate, monitor=plan.monitor)
        start_scores = evaluate_scores(transfer.model, validation)

    phases: dict[str, PhaseResult] = {}
    histories = []
    # ## Phase 1: the head learns on the frozen reused part.
    head = prefix + "head"
    started = time.perf_counter()
    views = plan.augmented_views if plan.cache_features else 0
    if (features is None and (plan.find_learning_rates or views)
            and not _finished(state, head) and plan.cache_features):
        # The finder and the head train on the same features: extracted once (with
        # augmented_views, of the original and K augmented views of every example).
        features = head_training_features(transfer, train, plan.augmentation if views else None,
                                          views, plan.seed)
    rate = _phase_rate(
        state, head, plan.learning_rate, plan.find_learning_rates, output_dir,
        lambda: find_head_learning_rate(transfer, train, plan.batch_size, plan.seed,
                                        train_features=features, rule=plan.finder_rule),
        title="Learning-rate finder: head on the frozen reused part")
    restored = _finished(state, head)
    history = run_planned_phase(state, head, transfer.model, plan, lambda callbacks: (
        train_head(transfer, train, validation, epochs=plan.head_epochs,
                   learning_rate=_shaped(rate, plan, plan.head_epochs, steps),
                   cache_features=plan.cache_features,
                   augmentation=None if views else plan.augmentation,
                   batch_size=plan.batch_size, seed=plan.seed, train_features=features,
                   class_weight=plan.class_weight, monitor=plan.monitor,
                   label_smoothing=plan.label_smoothing,
                   callbacks=callbacks + list(plan.callbacks.get("head", [])),
                   verbose=verbose)))
    histories.append(history)
    phases["head"] = PhaseResult(
        epochs=len(history.epoch), seconds=round(time.perf_counter() - started, 2),
        learning_rate=rate, restored=restored,
        scores=(_scores(transfer.model, validation, test, plan.monitor)
                if score_phases else {}))

    # ## Phase 2: unfreeze the top of the reused part, BatchNorm frozen, lower rate.
    if plan.fine_tune_epochs > 0:
        tuned = prefix + "fine_tune"
        started = time.perf_counter()
        from_layer = (transfer.fine_tune_from if plan.fine_tune_from == "default"
                      else plan.fine_tune_from)
        rate = _phase_rate(
            state, tuned, plan.fine_tune_learning_rate, plan.find_learning_rates,
            output_dir,
            lambda: find_fine_tune_learning_rate(transfer, train, from_layer=from_layer,
                                                 rule=plan.finder_rule, seed=plan.seed),
            title="Learning-rate finder: fine-tuning")
        multipliers = None
        if plan.discriminative_factor:
            multipliers = discriminative_multipliers(transfer.backbone, from_layer,
                                                     plan.discriminative_factor)
        restored = _finished(state, tuned)
        head_epochs = len(history.epoch)
        history = run_planned_phase(state, tuned, transfer.model, plan, lambda callbacks: (
            fine_tune(transfer, train, validation, epochs=plan.fine_tune_epochs,
                      learning_rate=_shaped(rate, plan, plan.fine_tune_epochs, steps),
                      from_layer=from_layer, augmentation=plan.augmentation,
                      initial_epoch=head_epochs, learning_rate_multipliers=multipliers,
                      class_weight=plan.class_weight, monitor=plan.monitor,
                      label_smoothing=plan.label_smoothing,
                      callbacks=callbacks + list(plan.callbacks.get("fine_tune", [])),
                      verbose=verbose)))
        histories.append(history)
        phases["fine_tune"] = PhaseResult(
            epochs=len(history.epoch), seconds=round(time.perf_counter() - started, 2),
            learning_rate=rate, restored=restored,
            scores=(_scores(transfer.model, validation, test, plan.monitor)
                if score_phases else {}))

    test_scores = {}
    if test is not None:
        test_scores = (_test_part(list(phases.values())[-1].scores) if score_phases
                       else evaluate_scores(transfer.model, test, plan.monitor))
    names = ["head", "fine-tuning"][:len(histories)]
    return TransferRun(history=merge_histories(list(zip(names, histories))), phases=phases,
                       plan=plan, start_scores=start_scores, test_scores=test_scores)


def _scores(model, validation, test, monitor: str) -> dict[str, float]:
    """Every compiled metric on the validation and test data (``val_accuracy``,
    ``test_accuracy``, ``test_macro_f1``...)."""
    scores = {}
    for prefix, data in (("val", validation), ("test", test)):
        if data is not None:
            scores.update({f"{prefix}_{name}": value
                           for name, value in evaluate_scores(model, data, monitor).items()})
    return scores


def _test_part(scores: dict[str, float]) -> dict[str, float]:
    """``{"accuracy": ...}`` from a phase's ``{"test_accuracy": ..., "val_...": ...}``."""
    return {name[len("test_"):]: value for name, value in scores.items()
            if name.startswith("test_")}


def _shaped(rate: float, plan: TransferPlan, epochs: int, steps: int | None):
    return rate if plan.schedule == "constant" else scheduled(rate, plan.schedule, epochs,
                                                               steps)


def _finished(state: TrainingState | None, phase: str) -> bool:
    return state is not None and state.finished(phase)


def run_planned_phase(state: TrainingState | None, phase: str, model: keras.Model,
                      plan: TransferPlan, train) -> keras.callbacks.History:
    """One phase through ``state`` (checkpointed, resumable, with the plan's seed and
    early-stopping rule), or directly when there is no state."""
    if state is None:
        return train([])
    return run_phase(state, phase, model, train, seed=plan.seed,
                     early_stopping=plan.early_stopping())


def _phase_rate(state, phase, default, find, output_dir, finder, title) -> float:
    """The phase's rate: the plan's, or the finder's (chosen once, kept in ``state``)."""
    if not find:
        return default
    kept = state.result(f"{phase}.learning_rate") if state is not None else None
    if kept is not None:
        return float(kept["learning_rate"])
    if _finished(state, phase):
        return default  # finished before the finder's choice was recorded
    finding = finder()
    if output_dir is not None:
        rate = record_finding(finding, output_dir, phase.rsplit(".", 1)[-1], title=title,
                              default=default)
    else:
        rate, reason = choose_learning_rate(finding, default, finder_bounds(phase))
        if reason:
            print(f"Learning-rate finder ({phase}): {reason}")
    if state is not None:
        state.save_result(f"{phase}.learning_rate", {"learning_rate": rate})
    return rate


@contextlib.contextmanager
def checkpoint_state(checkpoints: str | os.PathLike | TrainingState | None, resume: bool,
                     plan: TransferPlan):
    """The `TrainingState` for a run under ``plan``: the given one, one on the given
    folder, a temporary one when the plan's early stopping needs a folder, or ``None``
    (use with `run_planned_phase`)."""
    if isinstance(checkpoints, TrainingState):
        yield checkpoints
    elif checkpoints is not None:
        yield TrainingState(checkpoints, resume=resume, seed=plan.seed)
    elif plan.early_stopping()["keep_best"]:
        with tempfile.TemporaryDirectory(prefix="transfer-checkpoints-") as folder:
            yield TrainingState(folder, seed=plan.seed)
    else:
        yield None


def _is_multi_worker(strategy) -> bool:
    if strategy is None or keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


# ## Several machines
# Keras 3's model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585):
# the same plan runs on the strategy.run loop of templates.multi_worker instead.
def _run_multi_worker(transfer, strategy, train, validation, plan: TransferPlan,
                      checkpoints, resume: bool, test, output_dir) -> TransferRun:
    import tensorflow as tf

    from templates.hardware import StrategyChoice
    from templates.multi_worker import (
        find_learning_rate_multi_worker,
        is_chief,
        local_accuracy,
        train_transfer_multi_worker,
    )

    tensorboard = [callback for callbacks in plan.callbacks.values() for callback in callbacks
                   if isinstance(callback, keras.callbacks.TensorBoard)]
    refused = [name for name, used in (
        ("augmentation", plan.augmentation is not None),
        ("discriminative_factor", plan.discriminative_factor is not None),
        ("class_weight", plan.class_weight is not None),
        ("label_smoothing", bool(plan.label_smoothing)),
        ("callbacks (other than TensorBoard)",
         sum(map(len, plan.callbacks.values())) > len(tensorboard)),
    ) if used]
    if refused:
        raise ValueError(
            f"TransferPlan {', '.join(refused)}: not available under a multi-worker "
            "strategy, whose strategy.run loop replaces model.fit (keras-team/keras#20585); "
            "leave them unset there or train on one machine.")
    if plan.patience or plan.restore_best:
        print("Early stopping and best-epoch restore need model.fit: under a multi-worker "
              "strategy each phase runs all its epochs.", flush=True)
    global_batch_size = plan.batch_size
    if callable(train) and not isinstance(train, tf.data.Dataset):
        dataset_fn = train
        if plan.steps_per_epoch is None:
            raise ValueError("TransferPlan.steps_per_epoch is needed when the training data "
                             "is a dataset_fn (its size cannot be read).")
        steps = plan.steps_per_epoch
    else:
        steps = plan.steps_per_epoch or steps_per_epoch(train)

        def dataset_fn(context):  # each worker reads every n-th example
            shard = train.unbatch().shard(context.num_input_pipelines,
                                          context.input_pipeline_id)
            return shard.batch(context.get_per_replica_batch_size(global_batch_size)).repeat()

    device = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    choice = StrategyChoice(strategy, "multi_worker", strategy.num_replicas_in_sync, device)
    folder = checkpoints.directory if isinstance(checkpoints, TrainingState) else checkpoints
    resume = checkpoints.resume if isinstance(checkpoints, TrainingState) else resume
    rates = {"head": plan.learning_rate, "fine_tune": plan.fine_tune_learning_rate}
    epochs = {"head": plan.head_epochs, "fine_tune": plan.fine_tune_epochs}

    def before_phase(phase: str):
        # The finder on the same loop, every worker in step: the all-reduced losses are
        # the same everywhere, so every worker chooses the same rate.
        finding = find_learning_rate_multi_worker(choice, lambda: transfer.model, dataset_fn,
                                                  global_batch_size)
        rates[phase], reason = choose_learning_rate(finding, rates[phase],
                                                    finder_bounds(phase))
        if is_chief(strategy) and output_dir is not None:
            record_finding(finding, output_dir, phase, default=rates[phase],
                           title=f"Learning-rate finder ({phase}, multi-worker)")
        return scheduled(rates[phase], plan.schedule, epochs[phase], steps)

    started = time.perf_counter()
    histories = train_transfer_multi_worker(
        choice, transfer, dataset_fn, global_batch_size, steps, plan.head_epochs,
        plan.fine_tune_epochs,
        learning_rate=scheduled(plan.learning_rate, plan.schedule, plan.head_epochs, steps),
        fine_tune_learning_rate=scheduled(plan.fine_tune_learning_rate, plan.schedule,
                                          plan.fine_tune_epochs, steps),
        checkpoint_dir=None if folder is None else os.path.join(folder, "multi_worker"),
        resume=resume, from_layer=plan.fine_tune_from,
        log_dir=os.path.dirname(tensorboard[0].log_dir) if tensorboard else None,
        before_phase=before_phase if plan.find_learning_rates else None)
    scores = {}
    if validation is not None:
        scores["val_accuracy"] = local_accuracy(transfer.model, validation)
    if test is not None:
        scores["test_accuracy"] = local_accuracy(transfer.model, test)
    seconds = round(time.perf_counter() - started, 2)
    phases = {phase: PhaseResult(epochs=len(history.loss), seconds=seconds if phase ==
                                 list(histories)[-1] else 0.0, learning_rate=rates[phase],
                                 scores=scores if phase == list(histories)[-1] else {},
                                 restored=not history.epochs_run,
                                 epochs_run=list(history.epochs_run))
              for phase, history in histories.items()}
    names = {"head": "head", "fine_tune": "fine-tuning"}
    return TransferRun(
        history=merge_histories([(names[phase], {"loss": history.loss})
                                 for phase, history in histories.items()]),
        phases=phases, plan=plan, test_scores=_test_part(scores))
