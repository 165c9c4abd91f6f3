"""The recipes' command line: flags in, library objects out.

The only library module that knows about flags. `add_plan_arguments` adds one flag per
`templates.training.plan.TransferPlan` setting, spelled as the field (the recipe gives
only its defaults, as a plan), `add_settings_arguments` any other settings dataclass's;
`transfer_plan`, `setup_hardware` and `checkpoints` turn flags into library objects, and
`run_main` a recipe's end into an exit status. Numbers are checked at the door (`number`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from typing import Any

import keras

from templates.data.errors import CookbookError, one_sentence, outside_cause
from templates.data.settings import field_kind, flag_fields
from templates.export.formats import TFLITE_MODES
from templates.training.compilation import JIT_COMPILE_SETTINGS, set_jit_compile
from templates.training.hardware import (
    MIXED_PRECISION,
    STRATEGIES,
    StrategyChoice,
    check_tpu_paths,
    choose_strategy,
    set_mixed_precision,
)
from templates.training.plan import PHASES, TransferPlan, balanced_class_weight, tensorboard_logs
from templates.training.run import FIT_ONLY


def number(kind: type = float, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, below: float | None = None):
    """An argparse ``type``: a finite ``kind`` (``int`` or ``float``) within the bounds
    (``minimum``/``maximum`` inclusive, ``above``/``below`` exclusive); anything else,
    ``inf`` and ``nan`` included, stops the parser with one line naming the flag."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}; got {text!r}") from None
        bounds = [(minimum, ">=", value >= (minimum or 0)), (above, ">", value > (above or 0)),
                  (maximum, "<=", value <= (maximum or 0)), (below, "<", value < (below or 0))]
        if not math.isfinite(value) or not all(ok for bound, _, ok in bounds if bound is not None):
            wanted = " and ".join(f"{sign} {bound:g}" for bound, sign, _ in bounds
                                  if bound is not None)
            raise argparse.ArgumentTypeError(
                f"must be a finite number{' ' + wanted if wanted else ''}; got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_settings_arguments(parser: argparse.ArgumentParser, defaults: Any, title: str,
                           **later: str) -> None:
    """One flag per `templates.data.settings.setting` field of the dataclass instance
    ``defaults``, spelled as the field (``--head-epochs``), with its help and range and
    ``defaults``' value. ``later``: fields the recipe sets after parsing, with help words."""
    group = parser.add_argument_group(title)
    for field in flag_fields(type(defaults)):
        meta = dict(field.metadata)
        default = None if field.name in later else getattr(defaults, field.name)
        shown = later.get(field.name, "none" if default is None else default)
        if isinstance(shown, bool):
            shown = "on" if shown else "off"
        options: dict[str, Any] = {"default": default, "dest": field.name,
                                   "help": f"{meta.pop('help')} Default: {shown}.".replace("%", "%%")}
        kind, choices = field_kind(field), meta.pop("choices")
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif choices:
            options["choices"] = choices
        elif kind is str:
            options["metavar"] = meta.pop("metavar", None)
        else:
            options["metavar"] = meta.pop("metavar", None)
            options["type"] = number(kind, **meta)
        group.add_argument("--" + field.name.replace("_", "-"), **options)


def settings_from(args: argparse.Namespace, settings: type, **overrides: Any):
    """The ``settings`` dataclass that `add_settings_arguments`' flags describe."""
    values = {field.name: getattr(args, field.name) for field in flag_fields(settings)
              if getattr(args, field.name, None) not in (None, "none")}
    return settings(**{**values, **overrides})


def add_plan_arguments(parser: argparse.ArgumentParser,
                       defaults: TransferPlan | None = None, **later: str) -> None:
    """The plan's flags, ``defaults`` the recipe's plan (`add_settings_arguments`)."""
    add_settings_arguments(parser, defaults or TransferPlan(),
                           "the plan (templates.training.plan.TransferPlan)", **later)


def settings_flags(settings: Any) -> list[str]:
    """The flags that give a settings dataclass's values (inverse of `settings_from`)."""
    flags = []
    for field in flag_fields(type(settings)):
        value, name = getattr(settings, field.name), "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(name if value else "--no-" + name[2:])
        elif value is not None:
            flags += [name, str(value)]
    return flags


def transfer_plan(args: argparse.Namespace, train_labels=None,
                  choice: StrategyChoice | None = None, **overrides: Any) -> TransferPlan:
    """The `TransferPlan` the flags describe, with ``--tensorboard`` logs per phase.

    ``overrides`` set any other field (e.g. ``fine_tune_from=``). ``--class-weight
    balanced`` is resolved on ``train_labels`` when given (else later by
    `TransferPlan.for_training_set`); with ``choice``, ``--batch-size`` counts per
    replica. The plan is the one owner of the seed, and Keras's global generators are
    seeded with it here, before the recipe builds any model: the new head's initial
    weights (and a resumed run's) follow from it.
    """
    logs = getattr(args, "tensorboard", None)
    plan = settings_from(args, TransferPlan, callbacks={
        phase: tensorboard_logs(logs)(phase) for phase in PHASES} if logs else {})
    if plan.class_weight == "balanced" and train_labels is not None:
        overrides.setdefault("class_weight", balanced_class_weight(train_labels))
    if choice is not None:
        overrides.setdefault("batch_size", choice.global_batch_size(plan.batch_size))
    plan = dataclasses.replace(plan, **overrides)
    if getattr(args, "compare_scratch", False):
        plan.scratch_epochs()  # none (a class-means head): refused before any work
    keras.utils.set_random_seed(plan.seed)
    return plan


def add_run_arguments(parser: argparse.ArgumentParser, output_dir: str) -> None:
    """The run's flags that are not the plan's (output folder, resume, options)."""
    group = parser.add_argument_group("the run")
    group.add_argument("--output-dir", default=output_dir,
                       help=f"Where the outputs go. Default {output_dir}.")
    group.add_argument("--resume", action="store_true",
                       help="Continue an interrupted run from OUTPUT_DIR/checkpoints: "
                            "finished phases are restored, the phase in progress continues "
                            "from its last finished epoch.")
    group.add_argument("--compare-scratch", action="store_true",
                       help="Also train the same model from random weights on the same "
                            "plan and write transfer_report.json/.png: did transfer help?")
    group.add_argument("--export-tflite", nargs="*", default=None, metavar="MODE",
                       choices=TFLITE_MODES,
                       help="Also write TFLite models to tflite/: float32 (the flag "
                            "alone), dynamic, float16 or int8, each scored on the test set.")
    group.add_argument("--assert-accuracy-at-least", type=number(float, 0, 1), default=None,
                       metavar="X", help="Exit non-zero if the final accuracy (test, else "
                       "validation) is below X.")
    group.add_argument("--tensorboard", metavar="DIR",
                       help="Write TensorBoard logs under DIR (one folder per phase).")
    add_label_curve_argument(group)


def label_count(text: str) -> int | None:
    """An argparse ``type``: labels per class from 1, or ``all`` (``None``, every label)."""
    return None if text == "all" else number(int, 1)(text)


def add_label_curve_argument(group) -> None:
    """``--label-curve K... [all]`` (`templates.training.label_curve.label_curve`)."""
    group.add_argument("--label-curve", nargs="+", metavar="K", type=label_count,
                       help="Also train on K labels per class for each K (stratified, "
                       "drawn per seed: 5 seeds up to 32, 3 above; all: every label), "
                       "with --compare-scratch from scratch too; writes label_curve.*.")


def tflite_modes(args: argparse.Namespace) -> list[str]:
    """The TFLite exports ``--export-tflite`` asks for: none without the flag, float32
    for the flag alone."""
    if getattr(args, "export_tflite", None) is None:
        return []
    return list(dict.fromkeys(args.export_tflite or ["float32"]))


def add_text_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The text recipes' data flags (``--train``, ``--validation``, ``--test``...)."""
    group = parser.add_argument_group("data")
    group.add_argument("--train", help="Labelled training texts: a label<TAB>text file, a "
                       "CSV with text,label columns, or a directory of class folders. "
                       "Downloads SST-2 when omitted.")
    group.add_argument("--validation", help="Validation texts (same forms); split off the "
                       "training data when omitted.")
    group.add_argument("--test", help="Test texts (same forms); split off the training data "
                       "when omitted.")
    group.add_argument("--train-size", type=number(int, 1), default=None,
                       help="Train on a seeded random subset of N training examples.")
    group.add_argument("--validation-fraction", type=number(float, above=0, below=1),
                       default=0.1, help="Share split off the training data for a missing "
                       "validation or test set. Default 0.1.")
    group.add_argument("--encoding", default="utf-8", help="Encoding of the text files.")
    group.add_argument("--multi-label", action="store_true",
                       help="Any number of labels per text, separated by | (sports|news): "
                       "sigmoid outputs, per-label thresholds chosen on validation data.")


def add_selection_arguments(parser: argparse.ArgumentParser, candidates_help: str) -> None:
    """``--select-from``, ``--select-only``, ``--select-by`` (`templates.selection.ranking`)."""
    group = parser.add_argument_group("source selection", "Rank candidate sources on "
                                      "frozen features of the target data before training.")
    group.add_argument("--select-from", nargs="+", metavar="CANDIDATE", default=None,
                       help=candidates_help)
    group.add_argument("--select-only", action="store_true",
                       help="With --select-from: stop after the ranking.")
    group.add_argument("--select-by", default=None, metavar="ESTIMATE",
                       help="The estimate the final rank follows (linear_probe, knn, logme, "
                       "leep, h_score, mean_rank); the library's default when omitted.")


def add_hardware_arguments(parser) -> None:
    """``--strategy``, ``--mixed-precision`` and ``--xla``."""
    group = parser.add_argument_group("hardware")
    group.add_argument("--strategy", choices=STRATEGIES, default="auto",
                       help="auto picks a TPU, several GPUs (mirrored), one GPU, or the CPU: "
                            "tf.distribute on TensorFlow, keras.distribution.DataParallel "
                            "on JAX, one device on PyTorch; multi_worker is TensorFlow's. "
                            "--batch-size is per replica.")
    group.add_argument("--mixed-precision", choices=MIXED_PRECISION, default="auto",
                       help="auto: bfloat16 on TPUs and NVIDIA GPUs of compute capability "
                            "8.0+, float16 (loss-scaled) on 7.x, off on CPU.")
    group.add_argument("--xla", choices=sorted(JIT_COMPILE_SETTINGS), default="auto",
                       help="XLA compilation of the training and evaluation steps: auto "
                            "is Keras's rule (on for one GPU or TPU, off on CPU and under "
                            "multi-device strategies).")


def setup_hardware(args, *paths, multi_worker: bool = False) -> StrategyChoice:
    """Apply ``--strategy`` / ``--mixed-precision`` / ``--xla``, print them, and return
    the `StrategyChoice` (its ``record()`` goes into metrics.json).

    Refused in one sentence, before any work: ``--strategy multi_worker`` for a recipe
    without a ``strategy.run`` path (``multi_worker=False``: ``model.fit`` fails under
    `MultiWorkerMirroredStrategy` in Keras 3, keras-team/keras#20585), the flags of
    `templates.training.run.FIT_ONLY` on several machines, and TensorFlow-only options
    (TFLite, TF-Hub) on another backend; local ``paths`` on a TPU.
    """
    if args.strategy == "multi_worker":
        if not multi_worker:
            raise CookbookError(
                "--strategy multi_worker: this recipe trains with model.fit, which fails "
                "under MultiWorkerMirroredStrategy in Keras 3 (keras-team/keras#20585); "
                "`python -m recipes.multi_worker_digits` shows the loop that works.")
        used = [flag for flag in FIT_ONLY if getattr(
            args, flag[2:].replace("-", "_"), None) not in (None, False, 0, "none")]
        if used:
            raise CookbookError(f"{', '.join(used)}: not available with --strategy "
                                "multi_worker, whose training loop replaces model.fit (run "
                                "them on one machine).")
    backend = keras.backend.backend()
    tensorflow_only = (["--export-tflite"] if getattr(args, "export_tflite", None) is not None
                       else []) + [f"--backbone/--select-from {spelling}" for spelling in (
                           getattr(args, "backbone", None) or "",
                           *(getattr(args, "select_from", None) or []))
                           if str(spelling).startswith("tfhub:")]
    if tensorflow_only and backend != "tensorflow":
        raise CookbookError(f"{', '.join(tensorflow_only)}: TensorFlow only (TFLite, TF-Hub), "
                            f"and the Keras backend is {backend}; run with "
                            "KERAS_BACKEND=tensorflow.")
    choice = choose_strategy(args.strategy)
    check_tpu_paths(choice, *paths)
    policy = set_mixed_precision(args.mixed_precision, choice.device)
    set_jit_compile(args.xla)
    print(f"{choice.describe()}; dtype policy {policy}; XLA {args.xla}", flush=True)
    choice.settings = {"dtype_policy": policy, "xla": args.xla}  # for metrics.json
    return choice


def own_output_dir(args: argparse.Namespace, choice: StrategyChoice | None = None):
    """The run's hold on ``--output-dir`` (`templates.training.run_folder.FolderLock`):
    a second run into a folder in use stops here, in one sentence, before any work. On
    several machines only the chief holds it (the workers write beside it)."""
    import contextlib

    from templates.training.checkpoints import chief_process
    from templates.training.run_folder import FolderLock

    if choice is not None and choice.name == "multi_worker" and not chief_process():
        return contextlib.nullcontext()
    return FolderLock(args.output_dir)


# Plan fields that do not shape the weights: a resume may change them freely.
FREE_ON_RESUME = ("callbacks", "feature_memory_gb")


def checkpoints(args: argparse.Namespace, plan: TransferPlan,
                settings: dict[str, Any] | None = None, **options: Any):
    """The run's `templates.training.checkpoints.TrainingState` in
    ``OUTPUT_DIR/checkpoints``, continued with ``--resume`` (``options``: e.g.
    ``backup_overhead=0.1``). ``plan`` and ``settings`` (what else shapes the weights:
    backbone, image size, classes, a fingerprint of the data...) are recorded when the
    run starts, and a ``--resume`` whose settings differ stops naming them
    (`templates.training.run_folder.check_settings`)."""
    from templates.training.checkpoints import TrainingState

    recorded = {**(settings or {}), "plan": {key: value for key, value in
                                             plan.to_dict().items()
                                             if key not in FREE_ON_RESUME}}
    return TrainingState(os.path.join(args.output_dir, "checkpoints"), resume=args.resume,
                         settings=recorded, **options)


def write_metrics(args: argparse.Namespace, metrics: dict[str, Any],
                  choice: StrategyChoice | None = None, gate: bool = True) -> int:
    """Write ``OUTPUT_DIR/metrics.json`` (with what ``choice`` ran on), print the final
    score and return the exit status: 1 when ``--assert-accuracy-at-least X`` is not
    met (the test accuracy, else the validation accuracy), else 0; ``gate=False`` for
    runs without one final accuracy."""
    from templates.data.files import write_json

    if choice is not None:
        metrics = {**metrics, "hardware": choice.record()}
    write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
    if not gate:
        print(f"Outputs in {args.output_dir}")
        return 0
    name = "test_accuracy" if "test_accuracy" in metrics else "val_accuracy"
    head = metrics.get("head", {}).get(name)
    head_only = f" (head only: {head:.4f})" if head is not None else ""
    print(f"Final {name}: {metrics[name]:.4f}{head_only}. Outputs in {args.output_dir}")
    bar = getattr(args, "assert_accuracy_at_least", None)
    if bar is not None and metrics[name] < bar:
        print(f"FAILED: {name} {metrics[name]:.4f} is below the required {bar}",
              file=sys.stderr)
        return 1
    return 0


def run_main(main, argv=None) -> None:
    """Run a recipe's ``main`` and exit with its status. A cause outside the program
    (`templates.data.errors.outside_cause`: bad input, an impossible setting, an offline
    download, a full disk) prints one line and exits with 2; anything else is a bug and
    keeps its traceback, even a ``ValueError`` raised inside Keras or NumPy."""
    from templates.data.decoded_images import return_large_blocks_to_the_system

    return_large_blocks_to_the_system()  # batches made and freed every step: no heap creep
    try:
        sys.exit(main(argv))
    except Exception as error:  # noqa: BLE001  (sorted below: a bug is raised again)
        if not outside_cause(error):
            raise
        print(f"error: {one_sentence(error)}", file=sys.stderr)
        sys.exit(2)
