"""Training options every recipe offers, defined once.

`add_training_arguments` adds the flags; the helpers turn them into what the phases
take: a learning rate or schedule, discriminative multipliers, TensorBoard callbacks,
and learning-rate finder runs whose plots land in the output folder.

    --find-lr                    run the finder before each phase and use its suggestion
    --schedule                   constant | warmup_cosine | one_cycle (per phase)
    --discriminative-factor F    fine-tune earlier backbone blocks F times slower per block
    --patience N                 early stopping (0: never stop early)
    --restore-best / --no-restore-best
                                 end each phase with its best epoch's weights, or its last
    --monitor val_accuracy|val_loss  what early stopping and best-epoch restore watch
    --tensorboard DIR            TensorBoard logs, one folder per phase

A recipe chooses the defaults of ``--patience``, ``--restore-best`` and ``--schedule``:
early stopping with best-epoch restore (patience 3) for the image and text recipes,
none for the digits comparison (its point is a fixed budget for transfer and scratch
alike); warm-up + cosine for the image recipe, constant rates for the text and digits
recipes, as measured (README, "Training options and evaluation").
"""

from __future__ import annotations

import argparse
import os

import keras

from templates.files import write_json
from templates.learning_rates import (
    FINE_TUNE_BOUNDS,
    HEAD_BOUNDS,
    LearningRateFinding,
    OneCycle,
    WarmupCosine,
    choose_learning_rate,
)

SCHEDULES = ("constant", "warmup_cosine", "one_cycle")
MONITORS = ("val_accuracy", "val_loss")


def add_training_arguments(parser: argparse.ArgumentParser, patience: int = 3,
                           restore_best: bool = True, schedule: str = "constant",
                           monitor: str = "val_accuracy") -> None:
    """Add the shared training flags (see the module docstring) to ``parser``.

    Args:
        parser: The recipe's parser.
        patience: Default of ``--patience`` (0: never stop early).
        restore_best: Default of ``--restore-best / --no-restore-best``.
        schedule: Default of ``--schedule`` (one of `SCHEDULES`).
        monitor: Default of ``--monitor`` (one of `MONITORS`).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}.")
    group = parser.add_argument_group("training options")
    group.add_argument("--find-lr", action="store_true",
                       help="Run the learning-rate finder before each phase, use its "
                            "suggestion (steepest descent of the smoothed loss; the default "
                            "rate when the sweep is unusable or out of bounds) instead of "
                            "--learning-rate / --fine-tune-learning-rate, and write "
                            "lr_finder_PHASE.png/.json.")
    group.add_argument("--schedule", choices=SCHEDULES, default=schedule,
                       help="Learning-rate schedule within each phase: constant, warm-up "
                            "(10%% of steps) then cosine decay, or one-cycle (the rate "
                            f"given is the peak). Default {schedule}.")
    group.add_argument("--discriminative-factor", type=float, default=None, metavar="F",
                       help="Fine-tune each earlier backbone block F times slower than the "
                            "next (e.g. 2.6); default: one rate for every unfrozen layer.")
    group.add_argument("--patience", type=int, default=patience,
                       help="Stop a phase after this many epochs without a better "
                            "validation accuracy (0: never stop early). Default "
                            f"{patience}.")
    group.add_argument("--monitor", choices=MONITORS, default=monitor,
                       help="What early stopping and best-epoch restore watch: validation "
                            f"accuracy or validation loss. Default {monitor}.")
    group.add_argument("--restore-best", action=argparse.BooleanOptionalAction,
                       default=restore_best,
                       help="End each phase with its best epoch's weights (by validation "
                            "accuracy) instead of its last epoch's. Default: "
                            f"{'on' if restore_best else 'off'}.")
    group.add_argument("--tensorboard", metavar="DIR",
                       help="Write TensorBoard logs under DIR (one folder per phase).")


def training_state(args: argparse.Namespace, directory: str, **options):
    """The `TrainingState` these flags ask for: ``--resume``, ``--seed``, best-epoch
    restore and early stopping; ``options`` are passed on (e.g. ``backup_overhead``)."""
    from templates.checkpoints import TrainingState

    if args.patience < 0:
        raise ValueError(f"--patience must be 0 or more; got {args.patience}.")
    return TrainingState(directory, resume=args.resume, seed=args.seed,
                         keep_best=args.restore_best or bool(args.patience),
                         patience=args.patience or None, restore_best=args.restore_best,
                         monitor=getattr(args, "monitor", "val_accuracy"), **options)


def scheduled(learning_rate: float, schedule: str, epochs: int, steps_per_epoch: int):
    """``learning_rate`` as the phase's schedule (a float for ``"constant"``)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}.")
    total = max(1, int(epochs) * int(steps_per_epoch))
    if schedule == "warmup_cosine":
        return WarmupCosine(learning_rate, total, warmup_steps=max(1, total // 10),
                            final_learning_rate=learning_rate / 100)
    if schedule == "one_cycle":
        return OneCycle(learning_rate, total)
    return learning_rate


def tensorboard_callbacks(directory: str | None, phase: str) -> list[keras.callbacks.Callback]:
    """A TensorBoard callback logging to ``DIRECTORY/PHASE`` (none without a folder)."""
    if not directory:
        return []
    return [keras.callbacks.TensorBoard(log_dir=os.path.join(directory, phase))]


def finder_bounds(phase: str) -> tuple[float, float]:
    """The rates a finder suggestion must lie within for ``phase`` (fine-tuning phases:
    `FINE_TUNE_BOUNDS`; head or whole-model training: `HEAD_BOUNDS`)."""
    return FINE_TUNE_BOUNDS if "fine_tune" in phase else HEAD_BOUNDS


def record_finding(finding: LearningRateFinding, output_dir: str, phase: str,
                   title: str, default: float) -> float:
    """Write ``lr_finder_PHASE.json/.png``, print and return the rate to train with.

    The rate is the finder's suggestion, or ``default`` when the sweep is unusable or
    its suggestion lies outside `finder_bounds` (the message and the JSON's
    ``fallback`` say why): the finder never stops a run.
    """
    rate, reason = choose_learning_rate(finding, default, finder_bounds(phase))
    write_json(os.path.join(output_dir, f"lr_finder_{phase}.json"),
               {**finding.to_dict(), "used": rate, "fallback": reason})
    finding.plot(os.path.join(output_dir, f"lr_finder_{phase}.png"), title=title)
    if reason is None:
        print(f"Learning-rate finder ({phase}): suggests {rate:.2e}")
    else:
        print(f"Learning-rate finder ({phase}): {reason}")
    return rate
