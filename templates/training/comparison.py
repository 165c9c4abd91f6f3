"""Runs that answer "did transfer help?" and "how much should be reused?".

`compare_with_scratch` trains the transferred model and the same architecture from
scratch under identical data, epochs, seeds and optimiser, and returns a
`templates.reports.transfer_report.TransferReport`. `reuse_depth_sweep` reuses a source model
up to each of several depths and measures target skill per depth.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import keras

from templates.data.errors import CookbookError
from templates.data.files import atomic_path, write_json
from templates.models.layers import iterate_layers
from templates.models.transfer_model import TransferModel
from templates.reports.transfer_report import (
    CurveSummary,
    TransferReport,
    report_metric,
    summarize_curve,
)
from templates.training.checkpoints import TrainingState, run_phase
from templates.training.compilation import compile_classifier
from templates.training.phases import evaluate_scores, find_head_learning_rate
from templates.training.plan import TransferPlan
from templates.training.run import (
    TransferRun,
    checkpoint_state,
    phase_rate,
    run_transfer,
    steps_per_epoch,
)
from templates.training.schedules import scheduled
from templates.training.seeds import following_epochs

# The comparison reads the transfer plan and nothing else: the transferred model runs
# the plan (`templates.training.run.run_transfer`); the scratch model trains every layer
# for ``head_epochs + fine_tune_epochs`` at ``learning_rate``, with the same optimiser,
# data, seed, schedule shape and early-stopping rule.

PhaseCallbacks = Callable[[str], Sequence[keras.callbacks.Callback]]


def _with_phase_callbacks(plan: TransferPlan, name: str,
                          phase_callbacks: PhaseCallbacks | None) -> TransferPlan:
    if phase_callbacks is None:
        return plan
    return dataclasses.replace(plan, callbacks={
        phase: list(plan.callbacks.get(phase, [])) + list(phase_callbacks(f"{name}.{phase}"))
        for phase in ("head", "fine_tune")})


def train_transferred(
    transfer: TransferModel, train, validation, test, plan: TransferPlan,
    verbose: int | str = 0, state: TrainingState | None = None, name: str = "transfer",
    phase_callbacks: PhaseCallbacks | None = None,
):
    """Run ``plan`` on ``transfer`` (with the plan's seed); return
    ``(start score, validation curve, test score)`` for a curve summary, on the
    report's metric (`report_metric` of the plan's monitor: accuracy by default).

    Args:
        state: Checkpoints the phases (named ``NAME.head``, ``NAME.fine_tune``), so an
            interrupted comparison resumes at the epoch in progress.
        name: Prefix of this run's phases in ``state``.
        phase_callbacks: Returns extra callbacks for a phase, given its name
            (e.g. TensorBoard logs per phase).
    """
    # The report compares curves epoch by epoch with scratch's head_epochs +
    # fine_tune_epochs: the head gets no extra epochs for a small training set here.
    plan = dataclasses.replace(_with_phase_callbacks(plan, name, phase_callbacks),
                               head_epoch_factor=1)
    run = run_transfer(transfer, train, validation, plan, checkpoints=state, test=test,
                       name=name, measure_start=True, score_phases=False, verbose=verbose)
    metric = report_metric(plan.monitor)
    return run.start_scores.get(metric), run.curve(metric), run.test_scores.get(metric)


def train_from_scratch(
    model: keras.Model, train, validation, test, plan: TransferPlan,
    verbose: int | str = 0, state: TrainingState | None = None, name: str = "scratch",
    phase_callbacks: PhaseCallbacks | None = None,
):
    """Train every layer of ``model`` (BatchNorm included) on the plan's epochs.

    All ``head_epochs + fine_tune_epochs`` at ``learning_rate``, the plan's schedule
    shaping the whole run, and its early-stopping rule. Returns ``(start score,
    validation curve, test score)`` on the report's metric, as `train_transferred`.

    Args:
        state: Checkpoints the run as phase ``name``, so it resumes when interrupted;
            each epoch's randomness is then seeded from the plan's seed (`EpochSeeds`).
        phase_callbacks: As in `train_transferred` (called with ``name``).
    """
    model.trainable = True
    for layer in iterate_layers(model):
        layer.trainable = True
    epochs = plan.scratch_epochs()
    rate = plan.scratch_learning_rate or plan.learning_rate
    if plan.schedule != "constant":
        rate = scheduled(rate, plan.schedule, epochs,
                         plan.steps_per_epoch or steps_per_epoch(train))
    compile_classifier(model, rate, monitor=plan.monitor,
                       label_smoothing=plan.label_smoothing)
    metric = report_metric(plan.monitor)
    before = evaluate_scores(model, validation)[metric]
    extra = list(phase_callbacks(name)) if phase_callbacks is not None else []
    # Through the state under the plan's early-stopping rule, as run_transfer runs its
    # phases (a temporary folder when the rule needs one).
    with checkpoint_state(state, False, plan) as checkpoints:
        history = run_phase(checkpoints, name, model, lambda callbacks: model.fit(
            train, validation_data=validation, epochs=epochs,
            callbacks=following_epochs(callbacks + extra, train),
            shuffle=False, verbose=verbose, class_weight=plan.class_weight), plan)
    test_score = evaluate_scores(model, test)[metric] if test is not None else None
    return before, list(history.history[f"val_{metric}"]), test_score


def _summary(state: TrainingState | None, name: str, train_run, slope_epochs: int):
    """A run's `CurveSummary`: kept in ``state`` once finished, reused when resuming."""
    saved = state.result(name) if state is not None else None
    if saved is not None:
        if "test_accuracy" in saved:  # saved before the report had a metric
            saved["test_score"] = saved.pop("test_accuracy")
        return CurveSummary(**saved)
    before, curve, test_score = train_run()
    summary = summarize_curve(curve, before, test_score, slope_epochs)
    if state is not None:
        state.save_result(name, dataclasses.asdict(summary))
    return summary


def compare_with_scratch(
    build_transfer: Callable[[], TransferModel],
    build_scratch: Callable[[], keras.Model],
    train: Iterable,
    validation: Iterable,
    test: Iterable | None = None,
    plan: TransferPlan | None = None,
    repeats: int = 1,
    slope_epochs: int = 3,
    verbose: int | str = 0,
    state: TrainingState | None = None,
    phase_callbacks: PhaseCallbacks | None = None,
    output_dir: str | os.PathLike | None = None,
) -> TransferReport:
    """Train transfer and scratch models ``repeats`` times and report the three measures.

    Run ``i`` seeds everything with ``plan.seed + i``. With ``plan.find_learning_rates``
    the finder measures the head's rate once, on the first run's transferred model (kept
    in ``state``, plotted in ``output_dir``), and transfer and scratch both train at it,
    so the comparison stays fair.

    Args:
        build_transfer: Returns a fresh `TransferModel` (reused part frozen).
        build_scratch: Returns the same architecture with random weights.
        train, validation, test: Batches of ``(inputs, labels)``; re-iterable.
        plan: Epochs, rates, seed and early stopping, shared by both sides.
        repeats: Transfer and scratch runs, one each per seed from the plan's on; the
            report shows the spread.
        slope_epochs: ``k`` for the slope measure.
        verbose: Passed to ``fit``.
        state: A `TrainingState`: every run is checkpointed per epoch and kept when it
            finished, so an interrupted comparison resumes where it stopped.
        phase_callbacks: Extra callbacks per phase, given the phase's name
            (``seed0.transfer.head``, ``seed0.scratch``...), e.g. TensorBoard logs.
    """
    plan = plan or TransferPlan()
    seeds = [plan.seed + repeat for repeat in range(repeats)]
    if plan.find_learning_rates:
        keras.utils.set_random_seed(plan.seed)
        transfer = build_transfer()
        rate = phase_rate(
            state, "comparison.head", plan.learning_rate, True, output_dir,
            lambda: find_head_learning_rate(transfer, train, batch_size=plan.batch_size,
                                            seed=plan.seed, rule=plan.finder_rule),
            title="Learning-rate finder: the transferred model's head")
        keras.backend.clear_session()
        plan = dataclasses.replace(plan, learning_rate=rate, find_learning_rates=False)
    transferred, scratch = [], []
    for seed in seeds:
        seeded = dataclasses.replace(plan, seed=seed)

        def transfer_run(seeded=seeded):
            keras.utils.set_random_seed(seeded.seed)
            return train_transferred(build_transfer(), train, validation, test, seeded,
                                     verbose, state, name=f"seed{seeded.seed}.transfer",
                                     phase_callbacks=phase_callbacks)

        def scratch_run(seeded=seeded):
            keras.utils.set_random_seed(seeded.seed)
            return train_from_scratch(build_scratch(), train, validation, test, seeded,
                                      verbose, state, name=f"seed{seeded.seed}.scratch",
                                      phase_callbacks=phase_callbacks)

        transferred.append(_summary(state, f"seed{seed}.transfer", transfer_run, slope_epochs))
        keras.backend.clear_session()
        scratch.append(_summary(state, f"seed{seed}.scratch", scratch_run, slope_epochs))
        keras.backend.clear_session()
    report = TransferReport(transferred, scratch, seeds,
                            phase_boundary=plan.head_epochs if plan.fine_tune_epochs
                            else None, metric=report_metric(plan.monitor))
    report.plan = plan  # with the finder's rate, when it ran
    return report


def report_against_scratch(
    run: TransferRun,
    scratch_model: keras.Model | Callable[[], keras.Model],
    train: Iterable,
    validation: Iterable,
    test: Iterable | None,
    directory: str | os.PathLike,
    title: str,
    state: TrainingState | None = None,
    phase_callbacks: PhaseCallbacks | None = None,
    verbose: int | str = "auto",
) -> TransferReport:
    """Report a finished `run_transfer` run against the same model from scratch.

    ``scratch_model`` trains on the run's plan with the rates the run used (see
    `train_from_scratch`: every layer, as many epochs as the run planned, the head's
    extra ones on a small training set included, at ``scratch_learning_rate`` (the
    head's rate when unset), the same schedule
    shape, early-stopping rule and seed); then the
    `TransferReport` is built and ``transfer_report.json`` / ``.png`` written to
    ``directory``, and the three measures printed.

    Args:
        run: The transferred model's run (``measure_start=True`` gives the start
            measure; ``test`` data gives the test accuracy).
        scratch_model: The same architecture, randomly initialised, or a function that
            builds it (called after seeding Keras with the plan's seed, so the random
            weights follow from it).
        train, validation, test: As the run used them.
        directory: Output folder.
        title: Plot title.
        state: The recipe's `TrainingState`; the scratch run is checkpointed in it as
            phase ``scratch`` and resumes when interrupted.
        phase_callbacks: Extra callbacks for the scratch run (called with
            ``"scratch"``).
        verbose: Passed to ``fit``.
    """
    plan = run.plan.with_rates(run.learning_rates)
    # Scratch trains as many epochs as the transferred run did: its head's epochs
    # include the extra ones a small training set gets (`TransferPlan.head_epoch_factor`),
    # so both curves are as long and their slopes span the same window.
    head_epochs = plan.epochs_of("head")
    plan = dataclasses.replace(plan, head_epochs=head_epochs, head_epoch_factor=1)
    if not isinstance(scratch_model, keras.Model):
        keras.utils.set_random_seed(plan.seed)
        scratch_model = scratch_model()
    scratch_before, scratch_curve, scratch_test = train_from_scratch(
        scratch_model, train, validation, test, plan, verbose=verbose, state=state,
        phase_callbacks=phase_callbacks)
    metric = report_metric(plan.monitor)
    report = TransferReport(
        transfer=[summarize_curve(run.curve(metric), run.start_scores.get(metric),
                                  run.test_scores.get(metric))],
        scratch=[summarize_curve(scratch_curve, scratch_before, scratch_test)],
        seeds=[plan.seed], phase_boundary=plan.head_epochs if plan.fine_tune_epochs else None,
        metric=metric,
    )
    report.write_json(os.path.join(directory, "transfer_report.json"))
    report.plot(os.path.join(directory, "transfer_report.png"), title=title)
    print(report.summary_text())
    return report


def reuse_depth_sweep(
    build_transfer_at: Callable[[str | int], TransferModel],
    cut_points: Sequence[str | int],
    train: Iterable,
    validation: Iterable,
    test: Iterable | None = None,
    plan: TransferPlan | None = None,
    verbose: int | str = 0,
    state: TrainingState | None = None,
    trained_runs: Mapping[str | int, str] | None = None,
    phase_callbacks: PhaseCallbacks | None = None,
    directory: str | os.PathLike | None = None,
    title: str = "Reuse depth",
) -> list[dict]:
    """Reuse the source model up to each cut point; measure target skill per depth.

    Args:
        build_transfer_at: Returns a fresh `TransferModel` reusing layers up to the given
            cut point (e.g. ``lambda cut: reuse_model(source, 5, cut_at=cut)``).
        cut_points: Layer names or depths, shallow to deep
            (`templates.training.develop.articulation_layers` lists the valid ones).
        train, validation, test, plan, verbose, state, phase_callbacks: As in
            `compare_with_scratch` (one run, with the plan's seed).
        trained_runs: ``{cut point: run name}`` for cut points already trained in
            ``state`` on the same plan, for example
            ``{"pool": "seed0.transfer"}`` when `compare_with_scratch`'s first
            transferred run reused the source model up to ``"pool"``: that run's
            finished phases are restored instead of trained again.
        directory: Where to write ``reuse_sweep.json`` and ``.png`` (`write_sweep`,
            with ``title``) and print a line per depth; ``None`` writes nothing.

    Returns:
        One dict per cut point: ``cut_at``, ``reused_layers``, ``best_val_accuracy``,
        ``final_val_accuracy`` and ``test_accuracy``.
    """
    plan = plan or TransferPlan()
    trained_runs = dict(trained_runs or {})
    if trained_runs and state is None:
        raise CookbookError("trained_runs needs the TrainingState the runs were trained in.")
    results = []
    for cut in cut_points:
        name = f"reuse_{cut}"
        saved = state.result(name) if state is not None else None
        if saved is None:
            keras.utils.set_random_seed(plan.seed)
            transfer = build_transfer_at(cut)
            _, curve, test_accuracy = train_transferred(
                transfer, train, validation, test, plan, verbose, state,
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
    if directory is not None and results:
        write_sweep(results, directory, title)
        for row in results:
            score = (row["test_accuracy"] if row["test_accuracy"] is not None
                     else row["best_val_accuracy"])
            print(f"  reuse up to {row['cut_at']:>20} ({row['reused_layers']:>3} layers): "
                  f"{score:.3f}")
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
