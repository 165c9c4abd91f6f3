"""One transfer, planned and run: `TransferPlan` says how, `run_transfer` does it.

    transfer = pretrained_model("mobilenet", num_classes=2, alpha=0.25)
    plan = TransferPlan(head_epochs=10, fine_tune_epochs=3, seed=1)
    run = run_transfer(transfer, train, validation, plan, checkpoints="runs/cats/checkpoints")
    run.history["val_accuracy"], run.learning_rates, run.phases["head"].seconds

This is the library's one implementation of the two phases of a transfer:

1. the head learns with the reused part frozen (`templates.training.phases.train_head`; by
   default on the frozen part's features, computed once);
2. the top of the reused part is unfrozen, every BatchNormalization layer kept frozen,
   and everything trains at a lower rate (`templates.training.phases.fine_tune`), optionally
   with discriminative rates per block.

Before each phase the learning-rate finder can choose the rate (it falls back to the
plan's rate when its sweep cannot be trusted); within a phase the rate follows the
plan's schedule; early stopping and best-epoch restore watch the plan's ``monitor``.
Every epoch is checkpointed under ``checkpoints``: with ``resume=True`` finished phases
(and the rates the finder chose for them) are restored, and the phase in progress
continues from its last finished epoch, ending where an uninterrupted run would.

The recipes, `templates.training.comparison` (transfer against scratch, the reuse-depth sweep)
and the develop-model template all train through `run_transfer`. Under a
`tf.distribute.MultiWorkerMirroredStrategy`, where Keras 3's ``fit`` fails
(keras-team/keras#20585), the same call runs the same plan on a ``strategy.run`` loop
(`templates.training.multi_worker.loop_phase`); options that loop cannot honour
are refused by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Iterable

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.batches import steps_per_epoch
from templates.data.multi_label import is_multi_label
from templates.models.nearest_class_mean import imprint_class_means
from templates.models.transfer_model import Transferable
from templates.training.checkpoints import TrainingState, chief_process, run_phase
from templates.training.compilation import compile_classifier
from templates.training.finder import (
    choose_learning_rate,
    finder_bounds,
    record_finding,
)
from templates.training.history import merge_histories
from templates.training.optimizers import discriminative_multipliers
from templates.training.phases import (
    evaluate_scores,
    find_fine_tune_learning_rate,
    find_head_learning_rate,
    fine_tune,
    head_training_features,
    train_head,
)
from templates.training.plan import TransferPlan
from templates.training.results import PhaseResult, TransferRun, test_part
from templates.training.schedules import scheduled

FINDER_TITLES = {"head": "Learning-rate finder: head on the frozen reused part",
                 "fine_tune": "Learning-rate finder: fine-tuning"}


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
        transfer: A template's model (`templates.models.pretrained.pretrained_model`,
            `templates.training.develop.reuse_model`, `templates.models.text_classifiers
            .pretrained_text_classifier`), reused part frozen.
        train: Training batches of ``(inputs, integer labels)``, re-iterable (a
            `tf.data.Dataset`, a `keras.utils.PyDataset`...). Under a
            `MultiWorkerMirroredStrategy`: a batched `tf.data.Dataset` (each worker
            reads its shard) or a ``dataset_fn(input_context)``.
        validation: Batches for early stopping, best-epoch restore and the scores.
        plan: How to train (`TransferPlan`; ``None``: ``TransferPlan()``).
        checkpoints: A folder (or a `templates.training.checkpoints.TrainingState`) where every
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
            (`templates.selection.ranking.Selection.features`, or
            `templates.training.phases.head_training_features`): the head phase and its finder
            train on them instead of extracting them again. Not with the plan's
            ``augmented_views`` (those add views) or without ``cache_features``.

    Returns:
        A `TransferRun`.
    """
    plan = plan or TransferPlan()
    check_plan_fits(plan, transfer.model, features)
    if _is_multi_worker(getattr(transfer.model, "distribute_strategy", None)) or (
            not plan.cache_features):
        # The head trains through the whole model there, not on cached features: no
        # extra epochs for a small training set (`TransferPlan.head_epoch_factor`), and
        # the run's plan says so (a comparison with scratch matches its epochs).
        plan = dataclasses.replace(plan, head_epoch_factor=1)
    with checkpoint_state(checkpoints, resume, plan) as state:
        prefix = f"{name}." if name else ""
        resumed = report_resume(state, [prefix + phase for phase in plan.phases()])
        start_scores = _start_scores(transfer, validation, plan) if measure_start else {}
        # The two phases, as fastai's fine_tune: the head on the frozen reused part, then
        # the top of the reused part unfrozen (BatchNorm kept frozen) at a lower rate.
        phases, histories, head_weights = {}, [], None
        for phase in plan.phases():
            history, phases[phase] = _train_phase(
                phase, transfer, train, validation, plan, state, test=test,
                name=prefix + phase, output_dir=output_dir, verbose=verbose,
                score=score_phases, features=features,
                initial_epoch=sum(len(earlier.epoch) for earlier in histories))
            histories.append(history)
            if phase == "head" and plan.keep_fine_tuning == "if_better" and len(
                    plan.phases()) > 1:
                head_weights = transfer.model.get_weights()
        kept = keep_fine_tuning_if_better(transfer, phases, head_weights, validation, plan,
                                          score_phases)
        run = TransferRun(
            history=merge_histories(list(zip(["head", "fine-tuning"], histories))),
            phases=phases, plan=plan, start_scores=start_scores, resumed=resumed,
            fine_tuning_kept=kept)
        run.test_scores = _test_scores(transfer, run, test, plan, score_phases)
        return run


def keep_fine_tuning_if_better(transfer: Transferable, phases: dict[str, PhaseResult],
                               head_weights: list | None, validation, plan: TransferPlan,
                               scored: bool) -> bool | None:
    """Tune only when it pays: put the head's weights back when fine-tuning did not beat
    them on the validation data (the plan's `TransferPlan.compared_score`), and say so.

    Returns whether the fine-tuned weights were kept (``None`` when nothing was
    fine-tuned; ``True`` when the plan keeps them always or there is no validation data
    to judge by).
    """
    if "fine_tune" not in phases:
        return None
    if head_weights is None or validation is None:
        return True
    name = plan.compared_score()
    if scored and all(name in phases[phase].scores for phase in ("head", "fine_tune")):
        head_score = phases["head"].scores[name]
        tuned_score = phases["fine_tune"].scores[name]
    else:  # not scored, or the head's compile lacked the metric: score both sets now
        tuned_weights = transfer.model.get_weights()
        tuned_score = _scores(transfer.model, validation, None, plan.monitor).get(name)
        transfer.model.set_weights(head_weights)
        head_score = _scores(transfer.model, validation, None, plan.monitor).get(name)
        transfer.model.set_weights(tuned_weights)
        if tuned_score is None or head_score is None:
            return True  # a score the multi-worker loop does not measure: kept
    if tuned_score > head_score:
        print(f"Fine-tuning kept: {name} {tuned_score:.4f} against the head's "
              f"{head_score:.4f}.")
        return True
    transfer.model.set_weights(head_weights)
    print(f"Fine-tuning not kept: {name} {tuned_score:.4f}, not above the head's "
          f"{head_score:.4f}; the model ends with the head's weights "
          "(TransferPlan.keep_fine_tuning).")
    return False


def _start_scores(transfer: Transferable, validation, plan: TransferPlan) -> dict[str, float]:
    """Validation scores before any training (the transfer report's start measure)."""
    compile_classifier(transfer.model, plan.learning_rate, monitor=plan.monitor)
    return {name[4:]: value for name, value in
            _scores(transfer.model, validation, None, plan.monitor).items()}


def _test_scores(transfer: Transferable, run: TransferRun, test, plan: TransferPlan,
                 scored: bool) -> dict[str, float]:
    """Every compiled test metric of the weights the run ends with: the phase's scores,
    or measured now."""
    if test is None:
        return {}
    if scored:
        return test_part(run.scores)
    return evaluate_scores(transfer.model, test, plan.monitor)


def _train_phase(phase: str, transfer: Transferable, train: Iterable, validation,
                 plan: TransferPlan, state: TrainingState | None, *, test=None,
                 name: str | None = None, output_dir=None, verbose="auto",
                 score: bool = True, features: tuple[np.ndarray, np.ndarray] | None = None,
                 initial_epoch: int = 0) -> tuple[keras.callbacks.History, PhaseResult]:
    """One phase of ``plan`` (``"head"`` or ``"fine_tune"``): its rate (the plan's or the
    finder's), its checkpointed training (restored when it finished before), its scores.

    ``features``: the frozen part's features of ``train`` for the head (extracted here
    when the finder or augmented views need them); ``initial_epoch``: the epochs before
    this phase, so fine-tuning's epochs continue the head's numbering.
    """
    name = name or phase
    started = time.perf_counter()
    steps = (plan.steps_per_epoch or steps_per_epoch(train)
             if plan.schedule != "constant" else None)
    multi_worker = _is_multi_worker(getattr(transfer.model, "distribute_strategy", None))
    epochs = plan.epochs_of(phase)
    settings = dict(epochs=epochs, class_weight=plan.class_weight, monitor=plan.monitor,
                    label_smoothing=plan.label_smoothing, verbose=verbose)
    if multi_worker:
        # Several machines: the same phase on a strategy.run loop, since Keras 3's fit
        # fails under MultiWorkerMirroredStrategy (keras-team/keras#20585).
        from templates.training.multi_worker import loop_phase  # TensorFlow

        default = plan.learning_rate if phase == "head" else plan.fine_tune_learning_rate
        finder, trainer = loop_phase(phase, transfer, train, plan)
    elif phase == "head":
        views = plan.augmented_views if plan.cache_features else 0
        imprint = plan.head_init == "class_means" and not _finished(state, name)
        if features is None and not _finished(state, name) and (imprint or (
                plan.cache_features and (plan.find_learning_rates or views))):
            # The finder and the head train on the same features: extracted once (with
            # augmented_views, of the original and K augmented views of every example).
            features = head_training_features(
                transfer, train, plan.augmentation if views else None, views, plan.seed,
                memory_limit_gb=plan.feature_memory_gb)
        if imprint:  # the head starts as (with no epochs: is) the nearest class mean
            imprint_class_means(transfer.head, *features)
        default = plan.learning_rate
        finder = lambda: find_head_learning_rate(  # noqa: E731
            transfer, train, plan.batch_size, plan.seed, train_features=features,
            rule=plan.finder_rule)
        trainer = lambda **given: train_head(  # noqa: E731
            transfer, train, validation, cache_features=plan.cache_features,
            augmentation=None if views else plan.augmentation, batch_size=plan.batch_size,
            seed=plan.seed, train_features=features,
            feature_memory_gb=plan.feature_memory_gb, **given)
    else:
        from_layer = (transfer.fine_tune_from if plan.fine_tune_from == "default"
                      else plan.fine_tune_from)
        default = plan.fine_tune_learning_rate
        finder = lambda: find_fine_tune_learning_rate(  # noqa: E731
            transfer, train, from_layer=from_layer, rule=plan.finder_rule, seed=plan.seed)
        multipliers = (discriminative_multipliers(transfer.backbone, from_layer,
                                                  plan.discriminative_factor)
                       if plan.discriminative_factor else None)
        trainer = lambda **given: fine_tune(  # noqa: E731
            transfer, train, validation, from_layer=from_layer,
            augmentation=plan.augmentation, initial_epoch=initial_epoch,
            learning_rate_multipliers=multipliers, **given)
    rate = phase_rate(state, name, default, plan.find_learning_rates and epochs > 0,
                      output_dir, finder, title=FINDER_TITLES[phase])
    restored = _finished(state, name)
    done = len(state.history(name).epoch) if state is not None else 0
    history = run_phase(state, name, transfer.model, lambda callbacks: trainer(
        learning_rate=_shaped(rate, plan, epochs, steps),
        callbacks=callbacks + list(plan.callbacks.get(phase, [])), **settings), plan)
    result = PhaseResult(
        epochs=len(history.epoch), seconds=round(time.perf_counter() - started, 2),
        learning_rate=rate, restored=restored,
        epochs_run=[] if restored else list(range(done, len(history.epoch))),
        scores=_scores(transfer.model, validation, test, plan.monitor) if score else {})
    return history, result


def report_resume(state: TrainingState | None, phases: list[str]) -> dict | None:
    """Print what a resumed run restores, and return it (``None`` for a fresh run).

    ``{"finished_phases": [...], "phase": "fine_tune", "epoch": 3}``: the phases restored
    whole, the phase in progress and the epoch (counted from 1) it continues from.
    """
    if state is None or not state.resume:
        return None
    finished = [phase for phase in phases if state.finished(phase)]
    current = next((phase for phase in phases if not state.finished(phase)), None)
    done = len(state.history(current).epoch) if current else 0
    resumed = {"finished_phases": finished, "phase": current,
               "epoch": done + 1 if current else None}
    restored = ", ".join(finished) if finished else "no finished phase"
    going_on = (f"{current} continues from its epoch {done + 1}" if current
                else "nothing left to train")
    print(f"resumed from {state.directory}: {restored} restored; {going_on}.")
    return resumed


# What only model.fit can do, by flag, with the plan field it sets (None: a recipe option
# outside the plan). The one list of refusals of a multi-worker run, whose strategy.run
# loop replaces fit: `templates.cli.setup_hardware` refuses the flags before any work,
# `check_plan_fits` the plan's fields.
FIT_ONLY = {
    "--augment": "augmentation", "--discriminative-factor": "discriminative_factor",
    "--class-weight": "class_weight", "--label-smoothing": "label_smoothing",
    "--compare-scratch": None, "--reuse-sweep": None, "--export-tflite": None,
    "--assert-accuracy-at-least": None, "--test-time-flips": None, "--multi-label": None,
    "--label-curve": None,
}


def check_plan_fits(plan: TransferPlan, model: keras.Model, features=None,
                    multi_worker: bool | None = None) -> None:
    """Refuse, by name, what a plan asks that the model's kind cannot do: class weights
    and balanced accuracy need single labels; micro F1 is a multi-label score; given
    ``features`` replace the plan's own extraction, so not with augmented views."""
    if plan.class_weight == "balanced":
        raise CookbookError("TransferPlan(class_weight='balanced') needs the training labels: "
                            "run with plan.for_training_set(train_labels).")
    if features is not None and (plan.augmented_views or not plan.cache_features):
        raise CookbookError("run_transfer(features=...) gives the cached features of the "
                            "training examples, but the plan asks for augmented_views or "
                            "cache_features=False: drop one or the other.")
    multi = is_multi_label(model)
    if multi_worker is None:  # the model's strategy says
        multi_worker = _is_multi_worker(getattr(model, "distribute_strategy", None))
    problems = [message for refused, message in (
        (multi and plan.class_weight is not None,
         "class_weight scales single-label examples; a multi-label model's examples "
         "carry several labels"),
        (multi and plan.monitor == "val_balanced_accuracy",
         "val_balanced_accuracy is a single-label score; watch val_micro_f1, "
         "val_macro_f1, val_accuracy (exact match) or val_loss"),
        (not multi and plan.monitor == "val_micro_f1",
         "val_micro_f1 is a multi-label score (for single labels it is the accuracy)"),
        (multi and multi_worker,
         "a multi-label model does not train on the multi-worker loop (its loss and "
         "metrics are single-label); train it on one machine"),
        (multi_worker and plan.head_init != "random",
         "head_init='class_means' reads the training set's cached features, which the "
         "multi-worker loop does not extract; train it on one machine"),
    ) if refused]
    if multi_worker:
        used = [field for field in FIT_ONLY.values()
                if field and getattr(plan, field) not in (None, False, 0)]
        extra = [callback for callbacks in plan.callbacks.values() for callback in callbacks
                 if not isinstance(callback, keras.callbacks.TensorBoard)]
        if used or extra:
            problems.append(
                f"{', '.join(used + ['callbacks other than TensorBoard'] * bool(extra))} "
                "need model.fit, which the multi-worker strategy.run loop replaces "
                "(keras-team/keras#20585): leave them unset there or train on one machine")
    if problems:
        raise CookbookError(f"TransferPlan does not fit {model.name}: {'; '.join(problems)}.")


def _scores(model, validation, test, monitor: str) -> dict[str, float]:
    """Every compiled metric on the validation and test data (``val_accuracy``,
    ``test_accuracy``, ``test_macro_f1``...); on several machines, the accuracies of
    this worker's copy (``evaluate`` would run collectives every worker must join)."""
    if _is_multi_worker(getattr(model, "distribute_strategy", None)):
        from templates.training.workers import local_accuracy

        return {f"{prefix}_accuracy": local_accuracy(model, data) for prefix, data in
                (("val", validation), ("test", test)) if data is not None}
    scores = {}
    for prefix, data in (("val", validation), ("test", test)):
        if data is not None:
            scores.update({f"{prefix}_{name}": value
                           for name, value in evaluate_scores(model, data, monitor).items()})
    return scores


def _shaped(rate: float, plan: TransferPlan, epochs: int, steps: int | None):
    return rate if plan.schedule == "constant" else scheduled(rate, plan.schedule, epochs,
                                                               steps)


def _finished(state: TrainingState | None, phase: str) -> bool:
    return state is not None and state.finished(phase)


def phase_rate(state, phase, default, find, output_dir, finder, title) -> float:
    """The phase's rate: the plan's, or the finder's (chosen once, kept in ``state``)."""
    if not find:
        return default
    kept = state.result(f"{phase}.learning_rate") if state is not None else None
    if kept is not None:
        return float(kept["learning_rate"])
    if _finished(state, phase):
        return default  # finished before the finder's choice was recorded
    finding = finder()
    if output_dir is not None and chief_process():  # on several machines the chief writes
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
    (use with `templates.training.checkpoints.run_phase`)."""
    if isinstance(checkpoints, TrainingState):
        yield checkpoints
    elif checkpoints is not None:
        yield TrainingState(checkpoints, resume=resume)
    elif plan.early_stopping()["keep_best"]:
        with tempfile.TemporaryDirectory(prefix="transfer-checkpoints-") as folder:
            yield TrainingState(folder)
    else:
        yield None


def _is_multi_worker(strategy) -> bool:
    if strategy is None or keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

