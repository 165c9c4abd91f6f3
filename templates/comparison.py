"""Runs that answer "did transfer help?" and "how much should be reused?".

`compare_with_scratch` trains the transferred model and the same architecture from
scratch under identical data, epochs, seeds and optimiser, and returns a
`templates.transfer_report.TransferReport`. `reuse_depth_sweep` reuses a source model
up to each of several depths and measures target skill per depth.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import keras

from templates.checkpoints import TrainingState, run_phase
from templates.files import atomic_path, write_json
from templates.learning_rates import discriminative_multipliers
from templates.phases import (
    compile_classifier,
    evaluate_accuracy,
    fine_tune,
    iterate_layers,
    train_head,
)
from templates.pretrained import TransferModel
from templates.transfer_report import CurveSummary, TransferReport, summarize_curve


@dataclasses.dataclass
class TrainingBudget:
    """Identical budget for the transferred and the scratch model.

    The transferred model trains its head for ``head_epochs`` at ``learning_rate``,
    then fine-tunes for ``fine_tune_epochs`` at ``fine_tune_learning_rate``. The
    scratch model trains every layer for ``head_epochs + fine_tune_epochs`` at
    ``learning_rate``, with the same Adam optimiser, data and seed.

    ``schedule`` (``"constant"``, ``"warmup_cosine"``, ``"one_cycle"``, see
    `templates.training_options.scheduled`) shapes the rate within each phase: the
    transferred model's head and fine-tuning phases, and the scratch model's single
    run. ``discriminative_factor`` spreads the fine-tuning rate over the reused blocks
    (`templates.learning_rates.discriminative_multipliers`); the scratch model has no
    reused blocks and trains at one rate. ``steps_per_epoch`` is needed by a schedule;
    ``None`` reads it from the training batches (``len`` or a known `tf.data`
    cardinality).
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

    @property
    def epochs(self) -> int:
        return self.head_epochs + self.fine_tune_epochs

    def rate(self, learning_rate: float, epochs: int, train) -> Any:
        """``learning_rate`` shaped by ``schedule`` over ``epochs`` of ``train``."""
        from templates.training_options import scheduled

        if self.schedule == "constant":
            return learning_rate
        steps = self.steps_per_epoch or steps_per_epoch(train)
        return scheduled(learning_rate, self.schedule, epochs, steps)


def steps_per_epoch(batches) -> int:
    """Batches per pass over ``batches``: its ``len`` or its known `tf.data` cardinality.

    Raises:
        ValueError: when neither is known (pass ``TrainingBudget(steps_per_epoch=...)``).
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
        "batches do not tell it (no len(), unknown tf.data cardinality): pass "
        "TrainingBudget(steps_per_epoch=...).")


PhaseCallbacks = Callable[[str], Sequence[keras.callbacks.Callback]]


def _phase(state: TrainingState | None, phase: str, model: keras.Model, train,
           seed: int | None = None):
    """Run one phase through ``state`` (checkpointed, resumable), or directly."""
    if state is None:
        return train([])
    return run_phase(state, phase, model, train, seed=seed)


def _extra(phase_callbacks: PhaseCallbacks | None, phase: str) -> list:
    return list(phase_callbacks(phase)) if phase_callbacks is not None else []


def train_transferred(
    transfer: TransferModel, train, validation, test, budget: TrainingBudget, seed: int,
    verbose: int | str = 0, state: TrainingState | None = None, name: str = "transfer",
    phase_callbacks: PhaseCallbacks | None = None,
):
    """Train a transferred model on the budget; return its curve summary inputs.

    Args:
        state: Checkpoints the phases (named ``NAME.head``, ``NAME.fine_tune``), so an
            interrupted comparison resumes at the epoch in progress.
        name: Prefix of this run's phases in ``state``.
        phase_callbacks: Returns extra callbacks for a phase, given its name
            (e.g. TensorBoard logs per phase).
    """
    compile_classifier(transfer.model, budget.learning_rate)
    before = evaluate_accuracy(transfer.model, validation)
    head = f"{name}.head"
    history = _phase(state, head, transfer.model, lambda callbacks: train_head(
        transfer, train, validation, epochs=budget.head_epochs,
        learning_rate=budget.rate(budget.learning_rate, budget.head_epochs, train),
        cache_features=budget.cache_features, batch_size=budget.batch_size,
        callbacks=callbacks + _extra(phase_callbacks, head), seed=seed, verbose=verbose),
        seed=seed)
    curve = list(history.history["val_accuracy"])
    if budget.fine_tune_epochs:
        tuned = f"{name}.fine_tune"
        multipliers = None
        if budget.discriminative_factor:
            multipliers = discriminative_multipliers(
                transfer.backbone, transfer.fine_tune_from, budget.discriminative_factor)
        history = _phase(state, tuned, transfer.model, lambda callbacks: fine_tune(
            transfer, train, validation, epochs=budget.fine_tune_epochs,
            learning_rate=budget.rate(budget.fine_tune_learning_rate,
                                      budget.fine_tune_epochs, train),
            initial_epoch=len(curve), learning_rate_multipliers=multipliers,
            callbacks=callbacks + _extra(phase_callbacks, tuned), verbose=verbose),
            seed=seed)
        curve += list(history.history["val_accuracy"])
    test_accuracy = evaluate_accuracy(transfer.model, test) if test is not None else None
    return before, curve, test_accuracy


def train_from_scratch(
    model: keras.Model, train, validation, test, budget: TrainingBudget,
    verbose: int | str = 0, state: TrainingState | None = None, name: str = "scratch",
    seed: int | None = None, phase_callbacks: PhaseCallbacks | None = None,
):
    """Train every layer of ``model`` (BatchNorm included) on the same budget.

    Args:
        state: Checkpoints the run as phase ``name``, so it resumes when interrupted.
        seed: Seeds each epoch's randomness when ``state`` is given (`EpochSeeds`).
        phase_callbacks: As in `train_transferred` (called with ``name``).
    """
    model.trainable = True
    for layer in iterate_layers(model):
        layer.trainable = True
    compile_classifier(model, budget.rate(budget.learning_rate, budget.epochs, train))
    before = evaluate_accuracy(model, validation)
    history = _phase(state, name, model, lambda callbacks: model.fit(
        train, validation_data=validation, epochs=budget.epochs,
        callbacks=callbacks + _extra(phase_callbacks, name), shuffle=False,
        verbose=verbose), seed=seed)
    test_accuracy = evaluate_accuracy(model, test) if test is not None else None
    return before, list(history.history["val_accuracy"]), test_accuracy


def _summary(state: TrainingState | None, name: str, train_run, slope_epochs: int):
    """A run's `CurveSummary`: kept in ``state`` once finished, reused when resuming."""
    saved = state.result(name) if state is not None else None
    if saved is not None:
        return CurveSummary(**saved)
    before, curve, test_accuracy = train_run()
    summary = summarize_curve(curve, before, test_accuracy, slope_epochs)
    if state is not None:
        state.save_result(name, dataclasses.asdict(summary))
    return summary


def compare_with_scratch(
    build_transfer: Callable[[], TransferModel],
    build_scratch: Callable[[], keras.Model],
    train: Iterable,
    validation: Iterable,
    test: Iterable | None = None,
    budget: TrainingBudget | None = None,
    seeds: Sequence[int] = (0,),
    slope_epochs: int = 3,
    verbose: int | str = 0,
    state: TrainingState | None = None,
    phase_callbacks: PhaseCallbacks | None = None,
) -> TransferReport:
    """Train transfer and scratch models for each seed and report the three measures.

    Args:
        build_transfer: Returns a fresh `TransferModel` (reused part frozen).
        build_scratch: Returns the same architecture with random weights.
        train, validation, test: Batches of ``(inputs, labels)``; re-iterable.
        budget: Epochs and learning rates shared by both (see `TrainingBudget`).
        seeds: One transfer and one scratch run per seed; the report shows the spread.
        slope_epochs: ``k`` for the slope measure.
        verbose: Passed to ``fit``.
        state: A `TrainingState`: every run is checkpointed per epoch and kept when it
            finished, so an interrupted comparison resumes where it stopped.
        phase_callbacks: Extra callbacks per phase, given the phase's name
            (``seed0.transfer.head``, ``seed0.scratch``...), e.g. TensorBoard logs.
    """
    budget = budget or TrainingBudget()
    transferred, scratch = [], []
    for seed in seeds:
        def transfer_run(seed=seed):
            keras.utils.set_random_seed(seed)
            return train_transferred(build_transfer(), train, validation, test, budget, seed,
                                     verbose, state, name=f"seed{seed}.transfer",
                                     phase_callbacks=phase_callbacks)

        def scratch_run(seed=seed):
            keras.utils.set_random_seed(seed)
            return train_from_scratch(build_scratch(), train, validation, test, budget,
                                      verbose, state, name=f"seed{seed}.scratch", seed=seed,
                                      phase_callbacks=phase_callbacks)

        transferred.append(_summary(state, f"seed{seed}.transfer", transfer_run, slope_epochs))
        keras.backend.clear_session()
        scratch.append(_summary(state, f"seed{seed}.scratch", scratch_run, slope_epochs))
        keras.backend.clear_session()
    return TransferReport(transferred, scratch, list(seeds),
                          phase_boundary=budget.head_epochs if budget.fine_tune_epochs else None)


def report_against_scratch(
    transfer_curve: Sequence[float],
    transfer_before: float,
    transfer_test: float | None,
    scratch_model: keras.Model,
    train: Iterable,
    validation: Iterable,
    test: Iterable | None,
    budget: TrainingBudget,
    seed: int,
    directory: str | os.PathLike,
    title: str,
    verbose: int | str = "auto",
    state: TrainingState | None = None,
    phase_callbacks: PhaseCallbacks | None = None,
) -> TransferReport:
    """Report a recipe's finished transfer run against the same model from scratch.

    A recipe has already trained its transferred model; this trains ``scratch_model``
    on the identical budget (see `train_from_scratch`), builds the `TransferReport`
    and writes ``transfer_report.json`` and ``transfer_report.png`` to ``directory``.

    Args:
        transfer_curve: The transferred model's validation accuracy per epoch.
        transfer_before: Its validation accuracy before any target training.
        transfer_test: Its final test accuracy, or ``None``.
        scratch_model: The same architecture, randomly initialised.
        train, validation, test, budget: As the transferred run used them.
        seed: The run's seed, recorded in the report (seed Keras before building
            ``scratch_model``, as the transferred run was seeded).
        directory: Output folder.
        title: Plot title.
        verbose: Passed to ``fit``.
        state: The recipe's `TrainingState`; the scratch run is checkpointed in it as
            phase ``scratch`` and resumes when interrupted.
        phase_callbacks: Extra callbacks for the scratch run (called with
            ``"scratch"``).
    """
    scratch_before, scratch_curve, scratch_test = train_from_scratch(
        scratch_model, train, validation, test, budget, verbose=verbose, state=state,
        seed=seed, phase_callbacks=phase_callbacks)
    report = TransferReport(
        transfer=[summarize_curve(transfer_curve, transfer_before, transfer_test)],
        scratch=[summarize_curve(scratch_curve, scratch_before, scratch_test)],
        seeds=[seed], phase_boundary=budget.head_epochs if budget.fine_tune_epochs else None,
    )
    report.write_json(os.path.join(directory, "transfer_report.json"))
    report.plot(os.path.join(directory, "transfer_report.png"), title=title)
    return report


def reuse_depth_sweep(
    build_transfer_at: Callable[[str | int], TransferModel],
    cut_points: Sequence[str | int],
    train: Iterable,
    validation: Iterable,
    test: Iterable | None = None,
    budget: TrainingBudget | None = None,
    seed: int = 0,
    verbose: int | str = 0,
    state: TrainingState | None = None,
    trained_runs: Mapping[str | int, str] | None = None,
    phase_callbacks: PhaseCallbacks | None = None,
) -> list[dict]:
    """Reuse the source model up to each cut point; measure target skill per depth.

    Args:
        build_transfer_at: Returns a fresh `TransferModel` reusing layers up to the given
            cut point (e.g. ``lambda cut: reuse_model(source, 5, cut_at=cut)``).
        cut_points: Layer names or depths, shallow to deep
            (`templates.develop.articulation_layers` lists the valid ones).
        train, validation, test, budget, seed, verbose, state, phase_callbacks: As in
            `compare_with_scratch`.
        trained_runs: ``{cut point: run name}`` for cut points already trained in
            ``state`` on the same budget and seed, for example
            ``{"pool": "seed0.transfer"}`` when `compare_with_scratch`'s first
            transferred run reused the source model up to ``"pool"``: that run's
            finished phases are restored instead of trained again.

    Returns:
        One dict per cut point: ``cut_at``, ``reused_layers``, ``best_val_accuracy``,
        ``final_val_accuracy`` and ``test_accuracy``.
    """
    budget = budget or TrainingBudget()
    trained_runs = dict(trained_runs or {})
    if trained_runs and state is None:
        raise ValueError("trained_runs needs the TrainingState the runs were trained in.")
    results = []
    for cut in cut_points:
        name = f"reuse_{cut}"
        saved = state.result(name) if state is not None else None
        if saved is None:
            keras.utils.set_random_seed(seed)
            transfer = build_transfer_at(cut)
            _, curve, test_accuracy = train_transferred(
                transfer, train, validation, test, budget, seed, verbose, state,
                name=trained_runs.get(cut, name), phase_callbacks=phase_callbacks)
            saved = {
                "cut_at": cut,
                "reused_layers": len(transfer.backbone.layers) - 1,
                "best_val_accuracy": max(curve),
                "final_val_accuracy": curve[-1],
                "test_accuracy": test_accuracy,
            }
            if state is not None:
                state.save_result(name, saved)
            keras.backend.clear_session()
        results.append(saved)
    return results


def write_sweep(results: list[dict], directory: str | os.PathLike, title: str) -> None:
    """Write ``reuse_sweep.json`` and ``reuse_sweep.png`` (skill against reuse depth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_json(os.path.join(directory, "reuse_sweep.json"), {"title": title, "depths": results})
    figure, axis = plt.subplots(figsize=(8, 4.5))
    labels = [f"{r['cut_at']}\n({r['reused_layers']} layers)" for r in results]
    positions = range(len(results))
    axis.plot(positions, [r["best_val_accuracy"] for r in results], "-o", label="best validation")
    if all(r["test_accuracy"] is not None for r in results):
        axis.plot(positions, [r["test_accuracy"] for r in results], "-s", label="test")
    axis.set_xticks(list(positions), labels, fontsize=8)
    axis.set_xlabel("reused up to (shallow to deep)")
    axis.set_ylabel("target accuracy")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with atomic_path(os.path.join(directory, "reuse_sweep.png"), suffix=".png") as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
