"""The recipes' shared command line: flags in, library objects out.

The only library module that knows about flags. Recipes add the plan's flags with
`add_plan_arguments` (one per `templates.training.plan.TransferPlan` setting, spelled as
the field: ``--head-epochs``, ``--find-learning-rates``, ``--patience``...; the recipe
gives only its defaults, as a plan), the run's with `add_run_arguments` and the
hardware's with `add_hardware_arguments`, then turn the parsed arguments into what the
library takes: `transfer_plan` (the plan), `setup_hardware` (a strategy, precision and
XLA), `accuracy_gate` (the exit status). Every number is checked at the door (`number`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

import keras

from templates.data.errors import CookbookError, one_sentence, outside_cause
from templates.data.decoded_images import DEFAULT_CACHE_MEMORY_GB

from templates.export.formats import TFLITE_MODES
from templates.models.augmentation import image_augmentation
from templates.training.compilation import JIT_COMPILE_SETTINGS, set_jit_compile
from templates.training.hardware import (
    MIXED_PRECISION,
    STRATEGIES,
    StrategyChoice,
    check_tpu_paths,
    choose_strategy,
    set_mixed_precision,
)
from templates.training.plan import TransferPlan, balanced_class_weight, flag_fields

from templates.training.word2vec import IN_DOMAIN_CHOICES, IN_DOMAIN_MINIMUM_WORDS


# The largest --image-size: a photo of side S costs 3 S^2 bytes decoded (the cache holds
# every photo) and 12 S^2 bytes as a float32 input; at 1024 px that is 3 MB and 12.6 MB,
# so a batch of 32 holds 0.4 GB of inputs before a convolutional backbone's activations,
# which in training take tens of times more: beyond 1024 px a batch no longer fits a
# 16-24 GB machine. Sizes above LARGE_IMAGE_SIZE print the estimate.
MAX_IMAGE_SIZE = 1024
LARGE_IMAGE_SIZE = 512


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
        ranges = [f">= {minimum:g}" if minimum is not None else "",
                  f"> {above:g}" if above is not None else "",
                  f"<= {maximum:g}" if maximum is not None else "",
                  f"< {below:g}" if below is not None else ""]
        if not (math.isfinite(value)
                and (minimum is None or value >= minimum)
                and (above is None or value > above)
                and (maximum is None or value <= maximum)
                and (below is None or value < below)):
            wanted = " and ".join(bound for bound in ranges if bound)
            raise argparse.ArgumentTypeError(
                f"must be a finite number{' ' + wanted if wanted else ''}; got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_plan_arguments(parser: argparse.ArgumentParser,
                       defaults: TransferPlan | None = None, **later: str) -> None:
    """One flag per `TransferPlan` setting (`templates.training.plan.flag_fields`),
    spelled as the field (``head_epochs`` -> ``--head-epochs``), with the field's help,
    choices and range; the default is ``defaults``' value (the recipe's plan, e.g.
    ``TransferPlan(schedule="warmup_cosine")``). ``later``: fields whose default the
    recipe sets after parsing, with the words the help shows for it (e.g.
    ``fine_tune_learning_rate="5e-5, or 5e-4 with --lora-rank"``)."""
    defaults = defaults or TransferPlan()
    group = parser.add_argument_group("the plan (templates.training.plan.TransferPlan)")
    for field in flag_fields():
        meta = dict(field.metadata)
        default = None if field.name in later else getattr(defaults, field.name)
        shown = later.get(field.name, "none" if default is None else default)
        if isinstance(shown, bool):
            shown = "on" if shown else "off"
        options: dict[str, Any] = {"default": default, "dest": field.name,
                                   "help": f"{meta.pop('help')} Default: {shown}."}
        choices = meta.pop("choices")
        if isinstance(getattr(TransferPlan(), field.name), bool):
            options["action"] = argparse.BooleanOptionalAction
        elif choices:
            options["choices"] = choices
        else:
            kind = int if isinstance(getattr(TransferPlan(), field.name), int) else float
            options["metavar"] = meta.pop("metavar", None)
            options["type"] = number(kind, **meta)
        group.add_argument("--" + field.name.replace("_", "-"), **options)


def plan_flags(plan: TransferPlan) -> list[str]:
    """The command-line flags that give ``plan``'s settings (the inverse of
    `transfer_plan` on `add_plan_arguments`' flags)."""
    flags = []
    for field in flag_fields():
        value = getattr(plan, field.name)
        name = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(name if value else "--no-" + name[2:])
        elif value is not None:
            flags += [name, str(value)]
    return flags


def add_run_arguments(parser: argparse.ArgumentParser, output_dir: str) -> None:
    """Add the flags of a run that are not the plan's: ``--output-dir``, ``--resume``,
    ``--compare-scratch``, ``--export-tflite``, ``--assert-accuracy-at-least`` and
    ``--tensorboard``."""
    group = parser.add_argument_group("the run")
    group.add_argument("--output-dir", default=output_dir,
                       help=f"Where the outputs go. Default {output_dir}.")
    group.add_argument("--resume", action="store_true",
                       help="Continue an interrupted run from OUTPUT_DIR/checkpoints: "
                            "finished phases are restored, the phase in progress continues "
                            "from its last finished epoch.")
    group.add_argument("--compare-scratch", action="store_true",
                       help="Also train the same model from random weights (same data, "
                            "epochs, seed, schedule and early stopping) and write "
                            "transfer_report.json/.png: did transfer help here?")
    group.add_argument("--export-tflite", nargs="*", default=None, metavar="MODE",
                       choices=TFLITE_MODES,
                       help="Also write TFLite models to tflite/ with labels.txt: float32 "
                            "(the flag alone: tflite/model.tflite), dynamic, float16 or "
                            "int8 (model_MODE.tflite; int8 calibrated on training "
                            "examples); metrics.json records each one's size and its test "
                            "accuracy run by the TFLite interpreter.")
    group.add_argument("--assert-accuracy-at-least", type=number(float, 0, 1), default=None,
                       metavar="X",
                       help="Exit non-zero if the final accuracy (test if there is a test "
                            "set, else validation) is below X.")
    group.add_argument("--tensorboard", metavar="DIR",
                       help="Write TensorBoard logs under DIR (one folder per phase).")


def add_text_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The text recipes' data flags: ``--train``, ``--validation``, ``--test`` (files
    of ``label<TAB>text`` lines, ``text,label`` CSV files or class folders),
    ``--train-size``, ``--validation-fraction``, ``--encoding`` and ``--multi-label``."""
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
    group.add_argument("--validation-fraction", type=number(float, above=0, below=1), default=0.1,
                       help="Share split off the training data for a missing validation "
                       "or test set. Default 0.1.")
    group.add_argument("--encoding", default="utf-8", help="Encoding of the text files.")
    group.add_argument("--multi-label", action="store_true",
                       help="Any number of labels per text, separated by | (sports|news): "
                       "sigmoid outputs, per-label thresholds chosen on validation data "
                       "(thresholds.json).")


def add_word_vector_arguments(parser: argparse.ArgumentParser) -> None:
    """The word-vector recipe's flags for its vectors: where they come from
    (``--vectors``, or ``--develop-vectors`` with ``--develop-evaluation`` and
    ``--allow-unskilled``), ``--in-domain-vectors``, the vocabulary they add
    (``--extra-vocabulary``), ``--normalize-vectors``, and how files are read
    (``--words-with-spaces``, ``--trust-pickle``)."""
    group = parser.add_argument_group("word vectors")
    group.add_argument("--vectors", default="glove.6B.50d",
                       help="Word vectors: a file (GloVe .txt/.zip, word2vec .bin/.txt, "
                       "fastText .vec), ARCHIVE.zip::MEMBER, glove.6B.{50,100,200,300}d, "
                       "or a gensim-data name such as glove-wiki-gigaword-100.")
    group.add_argument("--develop-vectors", metavar="CORPUS",
                       help="The develop-model path: train word2vec on this unlabelled "
                       "text (one sentence per line) instead of loading --vectors; the "
                       "vectors are used only if they beat random vectors on word "
                       "similarity (--develop-evaluation).")
    group.add_argument("--develop-evaluation", default="similarity",
                       choices=("similarity", "analogy"),
                       help="How developed vectors are judged against random ones: "
                       "gensim's wordsim353 pairs or its analogy questions.")
    group.add_argument("--allow-unskilled", action="store_true",
                       help="Use developed vectors even when they do not beat random ones.")
    group.add_argument("--in-domain-vectors", default="auto", choices=IN_DOMAIN_CHOICES,
                       help="Also train word2vec on the training texts (labels unused) and "
                       "put its vectors beside the pretrained ones. auto: when the "
                       f"training texts hold at least {IN_DOMAIN_MINIMUM_WORDS:,} words "
                       "(and --develop-vectors is not used).")
    group.add_argument("--extra-vocabulary", type=number(int, 0), default=100000,
                       help="Add the N most frequent words of the vectors to the "
                       "vocabulary (0: training words only).")
    group.add_argument("--normalize-vectors", action=argparse.BooleanOptionalAction,
                       default=True, help="Scale pretrained vectors to unit length.")
    group.add_argument("--words-with-spaces", action="store_true",
                       help="Vector file words may contain spaces (GloVe 840B).")
    group.add_argument("--trust-pickle", action="store_true",
                       help="Allow gensim native .kv/.model vector files (pickles: they "
                       "can run code when loaded).")


def add_image_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The image recipe's data flags: class folders (``--data-dir``, ``--test-dir``) or
    CSV files (``--labels-csv``, ``--validation-csv``, ``--test-csv``),
    ``--validation-fraction`` and ``--multi-label``."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", help="Folder with train/ and validation/ or test/ "
                       "class folders, or class folders directly. Downloads "
                       "cats_and_dogs_filtered when omitted.")
    group.add_argument("--test-dir", help="Folder of class folders used as the test set.")
    group.add_argument("--labels-csv", help="Instead of --data-dir: a CSV with path,label "
                       "columns (paths relative to it); validation and test sets are split "
                       "off it unless --validation-csv / --test-csv give them.")
    group.add_argument("--validation-csv", help="Validation images as a path,label CSV.")
    group.add_argument("--test-csv", help="Test images as a path,label CSV.")
    group.add_argument("--validation-fraction", type=number(float, above=0, below=1), default=0.2,
                       help="Share split off the training images for validation (and, "
                       "from a labels CSV without --test-csv, for testing). Default 0.2.")
    group.add_argument("--multi-label", action="store_true",
                       help="Any number of labels per image (with --labels-csv, labels "
                       "separated by |): sigmoid outputs, per-label thresholds chosen on "
                       "validation data (thresholds.json).")
    group.add_argument("--cache-memory-gb", type=number(float, 0), default=DEFAULT_CACHE_MEMORY_GB,
                       help="Memory for each of the two caches: the decoded images (uint8, "
                       "all splits together) and the head's cached backbone features "
                       "(every view). A larger image set is memory-mapped from "
                       "OUTPUT_DIR/cache/, which --resume reuses (and continues if decoding "
                       "was cut short); larger features from a temporary file. Default "
                       f"{DEFAULT_CACHE_MEMORY_GB:g} GB: both caches full and the model "
                       "fit a 16 GB machine.")


def image_batches(args: argparse.Namespace, splits, plan):
    """The image recipe's batches by image size (`templates.data.images.image_batches_by_size`),
    with ``--cache-memory-gb`` and the decoded-image cache in ``OUTPUT_DIR/cache``."""
    from templates.data.images import image_batches_by_size

    size = getattr(args, "image_size", None)
    if size and size > LARGE_IMAGE_SIZE:
        photos = sum(len(part.files) for part in (splits.train, splits.validation,
                                                  splits.test) if part is not None)
        print(f"--image-size {size}: the decoded photos take {3 * size**2 * photos / 1e9:.1f} "
              f"GB ({3 * size**2 / 1e6:.1f} MB each, on disk beyond --cache-memory-gb) "
              f"and one batch of float32 inputs {12 * size**2 * plan.batch_size / 1e9:.2f} "
              f"GB, before the backbone's activations, which in training take tens of times "
              f"more.")
    return image_batches_by_size(splits, plan.batch_size, plan.seed,
                                 cache_dir=os.path.join(args.output_dir, "cache"),
                                 memory_limit_gb=args.cache_memory_gb)


def remove_image_cache(args: argparse.Namespace) -> None:
    """Delete ``OUTPUT_DIR/cache`` (decoded images on disk) once a run has finished: it
    only serves a run that is resumed before it ends."""
    import shutil

    shutil.rmtree(os.path.join(args.output_dir, "cache"), ignore_errors=True)


def tensorboard_callbacks(directory: str | None, phase: str) -> list[keras.callbacks.Callback]:
    """A TensorBoard callback logging to ``DIRECTORY/PHASE`` (none without a folder)."""
    if not directory:
        return []
    return [keras.callbacks.TensorBoard(log_dir=os.path.join(directory, phase))]


# Recipe options built on model.fit: a multi-worker run (a strategy.run loop) refuses them.
FIT_ONLY_OPTIONS = ("--compare-scratch", "--reuse-sweep", "--augment",
                    "--discriminative-factor", "--export-tflite",
                    "--assert-accuracy-at-least", "--test-time-flips", "--multi-label",
                    "--label-smoothing")


def start_multi_worker(args) -> None:
    """Refuse the recipe options a multi-worker run cannot honour; say what changes.

    Raises:
        ValueError: naming every option of ``args`` (from `FIT_ONLY_OPTIONS`) that was
            used.
    """
    used = [flag for flag in FIT_ONLY_OPTIONS
            if getattr(args, flag[2:].replace("-", "_"), None) not in (None, False, 0)]
    if used:
        raise CookbookError(
            f"{', '.join(used)}: not available with --strategy multi_worker, whose "
            "training loop replaces model.fit (run them on one machine).")


def add_hardware_arguments(parser) -> None:
    """Add ``--strategy``, ``--mixed-precision`` and ``--xla`` to a recipe's parser."""
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
                            "multi-device strategies); off when an op is not XLA-compatible "
                            "or compile time dominates a short run.")


def setup_hardware(args, *paths, multi_worker: bool = False) -> StrategyChoice:
    """Apply a recipe's ``--strategy`` / ``--mixed-precision`` / ``--xla``; print them.

    Args:
        args: The parsed arguments (`add_hardware_arguments`).
        paths: The recipe's data paths (refused on a TPU when local).
        multi_worker: Whether the recipe has a ``strategy.run`` path for several
            machines. Without one, ``--strategy multi_worker`` raises: ``model.fit``
            fails under `MultiWorkerMirroredStrategy` in Keras 3
            (keras-team/keras#20585).
    """
    if args.strategy == "multi_worker" and not multi_worker:
        raise CookbookError(
            "--strategy multi_worker: this recipe trains with model.fit, which fails under "
            "MultiWorkerMirroredStrategy in Keras 3 (keras-team/keras#20585). Train across "
            "machines with templates.training.multi_worker.train_multi_worker, as "
            "`python -m recipes.multi_worker_digits` does.")
    refuse_tensorflow_only_options(args)
    choice = choose_strategy(args.strategy)
    check_tpu_paths(choice, *paths)
    policy = set_mixed_precision(args.mixed_precision, choice.device)
    set_jit_compile(args.xla)
    print(f"{choice.describe()}; dtype policy {policy}; XLA {args.xla}", flush=True)
    choice.settings = {"dtype_policy": policy, "xla": args.xla}  # for metrics.json
    return choice


def refuse_tensorflow_only_options(args: argparse.Namespace) -> None:
    """Refuse, before any work, the options only TensorFlow has (TFLite export, TF-Hub
    modules) on another Keras backend, in one sentence naming the flag and the backend.

    Raises:
        ValueError: naming the flag, when the backend is not TensorFlow.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    spellings = [getattr(args, "backbone", None) or "", *(getattr(args, "select_from", None)
                                                         or [])]
    used = (["--export-tflite"] if getattr(args, "export_tflite", None) is not None else []) + \
        [f"--backbone/--select-from {spelling}" for spelling in spellings
         if str(spelling).startswith("tfhub:")]
    if used:
        raise CookbookError(f"{', '.join(used)}: TensorFlow only (TFLite, TF-Hub), and the Keras "
                            f"backend is {backend}; run with KERAS_BACKEND=tensorflow.")


def require_tensorflow(recipe: str, reason: str) -> None:
    """Stop a recipe that only TensorFlow can run, on another Keras backend, with one
    sentence (exit status 2) naming the recipe, why, and the backend."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        print(f"error: {recipe} needs the TensorFlow backend ({reason}), and the Keras "
              f"backend is {backend}; run it with KERAS_BACKEND=tensorflow.", file=sys.stderr)
        sys.exit(2)


def tflite_modes(args: argparse.Namespace) -> list[str]:
    """The TFLite exports ``--export-tflite`` asks for: none without the flag, float32
    for the flag alone."""
    if getattr(args, "export_tflite", None) is None:
        return []
    return list(dict.fromkeys(args.export_tflite or ["float32"]))


def transfer_plan(args: argparse.Namespace, train_labels=None,
                  choice: StrategyChoice | None = None, **overrides: Any) -> TransferPlan:
    """The `TransferPlan` a recipe's flags describe.

    Reads the plan's flags (`add_plan_arguments`), ``--tensorboard`` and, where the
    recipe has them, ``--fine-tune-from``, ``--augment`` and ``--cache-memory-gb`` (the
    features' memory limit, as the images');
    ``overrides`` set any other field (e.g. ``steps_per_epoch=``). ``--class-weight
    balanced`` is resolved on ``train_labels`` when given, else later by
    `TransferPlan.for_training_set`. The plan is the one owner of the seed: data,
    augmentation, checkpoints, comparisons and sweeps read ``plan.seed``, and Keras's
    global generators are seeded with it here, before any model is built.
    """
    fields = {field.name: getattr(args, field.name) for field in flag_fields()
              if getattr(args, field.name, None) not in (None, "none")}
    fields["callbacks"] = ({phase: tensorboard_callbacks(args.tensorboard, phase)
                            for phase in ("head", "fine_tune")}
                           if getattr(args, "tensorboard", None) else {})
    if getattr(args, "fine_tune_from", None) is not None:
        fields["fine_tune_from"] = args.fine_tune_from
    if getattr(args, "cache_memory_gb", None) is not None:
        # One flag bounds both caches: the decoded images (image_batches) and the features.
        fields["feature_memory_gb"] = args.cache_memory_gb
    if getattr(args, "augment", None):
        # The augmentation reads the plan's seed; with --augmented-views K the head trains
        # on the cached features of K augmented views, else through the backbone.
        views = getattr(args, "augmented_views", 0)
        fields.update(augmentation=image_augmentation(args.augment, args.seed),
                      augmented_views=views, cache_features=views > 0)
    if fields.get("class_weight") == "balanced" and train_labels is not None:
        fields["class_weight"] = balanced_class_weight(train_labels)
    if choice is not None:  # --batch-size counts per replica
        fields["batch_size"] = choice.global_batch_size(fields["batch_size"])
    fields.update(overrides)
    plan = TransferPlan(**fields)
    # The plan's seed also seeds Keras's global generators here, before the recipe builds
    # any model: the new head's initial weights (and a resumed run's) follow from it.
    keras.utils.set_random_seed(plan.seed)
    return plan


def accuracy_gate(args: argparse.Namespace, metrics: dict[str, Any]) -> int:
    """Print the final score; with ``--assert-accuracy-at-least X``, return 1 (and say
    so on stderr) when it is below X. The score is the test accuracy, or the validation
    accuracy when there is no test set."""
    name = "test_accuracy" if "test_accuracy" in metrics else "val_accuracy"
    score = metrics[name]
    head = metrics.get("head", {}).get(name)
    print(f"Final {name}: {score:.4f}" + (f" (head only: {head:.4f})" if head is not None
                                          else "") + f". Outputs in {args.output_dir}")
    bar = getattr(args, "assert_accuracy_at_least", None)
    if bar is not None and score < bar:
        print(f"FAILED: {name} {score:.4f} is below the required {bar}", file=sys.stderr)
        return 1
    return 0


def add_selection_arguments(parser: argparse.ArgumentParser, candidates_help: str) -> None:
    """``--select-from A B C...`` (rank candidate sources from frozen features, then
    train the pick) and ``--select-only`` (stop after the table); see
    `templates.reports.selection`."""
    group = parser.add_argument_group(
        "source selection", "Rank candidate sources on frozen features of the target data "
        "before training (LogME, k-NN and linear probes, LEEP where the source has a "
        "classifier head); writes selection.json and selection.png.")
    group.add_argument("--select-from", nargs="+", metavar="CANDIDATE", default=None,
                       help=candidates_help)
    group.add_argument("--select-only", action="store_true",
                       help="With --select-from: stop after the ranking.")
    group.add_argument("--select-by", default=None, metavar="ESTIMATE",
                       help="The estimate the final rank follows (linear_probe, knn, "
                       "logme, leep, h_score, mean_rank); the library's default when "
                       "omitted.")


def select_source(args: argparse.Namespace, candidates, train=None, validation=None,
                  title: str = "Source selection", directory: str | None = None):
    """Rank ``candidates`` (`templates.reports.selection.rank_sources`) with the run's seed,
    print the table, write ``selection.json`` / ``.png`` to ``directory`` (default
    ``--output-dir``) and return the `templates.reports.selection.Selection`."""
    from templates.reports.selection import SelectionBudget, rank_sources

    if getattr(args, "multi_label", False):
        raise CookbookError("--select-from ranks single-label targets; the estimates do not "
                            "apply to --multi-label.")
    budget = SelectionBudget(seed=args.seed, **({"rank_by": args.select_by}
                                                if args.select_by else {}))
    selection = rank_sources(candidates, train, validation, budget)
    print(selection.summary_text())
    selection.write(directory or args.output_dir, title)
    return selection


# ## The image recipe's steps: each option of `python -m recipes.cats_vs_dogs` as one call.

def add_image_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The image recipe's backbone options (``--alpha``, ``--weights``, ``--image-size``,
    ``--fine-tune-from``) and its optional extras (``--augment``, ``--augmented-views``,
    ``--test-time-flips``, ``--reuse-sweep N [--estimate]``)."""
    group = parser.add_argument_group("backbone")
    group.add_argument("--alpha", type=number(float, above=0, maximum=2), default=None,
                       help="Width multiplier for MobileNet families.")
    group.add_argument("--weights", default="imagenet",
                       help="'imagenet' (a keras-hub preset's own), 'none' (random "
                       "initialisation) or a weights file.")
    group.add_argument("--image-size", type=number(int, 32, MAX_IMAGE_SIZE), default=None,
                       help="Square image side; the backbone's default when omitted.")
    group.add_argument("--fine-tune-from", default="default", type=_layer_name_or_index,
                       help="First backbone layer to unfreeze (a name, or an index such as "
                       "-20); the registry's choice by default.")
    # Augmented views and test-time flips did not help on validation photos
    # (docs/results.md): options, off by default.
    group = parser.add_argument_group("options")
    group.add_argument("--augment", nargs="?", const="flip_rotate", default=None,
                       choices=("flip_rotate", "randaugment"),
                       help="Random flips and rotations (or flips and RandAugment) while "
                       "fine-tuning, and for the head on --augmented-views cached views.")
    group.add_argument("--augmented-views", type=number(int, 0, 64), default=4, metavar="K",
                       help="With --augment: train the head on the cached features of K "
                       "augmented views of every photo (default 4; 0: through the backbone).")
    group.add_argument("--test-time-flips", action="store_true",
                       help="Average each photo's prediction with its mirror image's; the "
                       "saved model does it too.")
    group.add_argument("--reuse-sweep", type=number(int, 0, 1000), default=0, metavar="N",
                       help="Cut the backbone at N block ends, train a head on each and "
                       "write reuse_sweep.json/.png.")
    group.add_argument("--estimate", action="store_true",
                       help="With --reuse-sweep N: rank the N cuts from their frozen "
                       "features in seconds (reuse_estimates/selection.json) instead.")


def _layer_name_or_index(value: str) -> str | int:
    return int(value) if value.lstrip("-").isdigit() else value


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


def checkpoints(args: argparse.Namespace, plan: TransferPlan | None = None,
                settings: dict[str, Any] | None = None, **options: Any):
    """The run's `templates.training.checkpoints.TrainingState`:
    ``OUTPUT_DIR/checkpoints``, continued with ``--resume`` (``options``: e.g.
    ``backup_overhead=0.1``).

    ``plan`` and ``settings`` (what else shapes the weights: backbone, image size,
    classes, a fingerprint of the data...) are recorded when the run starts, and a
    ``--resume`` whose settings differ stops naming them
    (`templates.training.run_folder.check_settings`)."""
    from templates.training.checkpoints import TrainingState

    recorded = dict(settings or {})
    if plan is not None:
        recorded["plan"] = {key: value for key, value in plan.to_dict().items()
                            if key not in FREE_ON_RESUME}
    return TrainingState(os.path.join(args.output_dir, "checkpoints"), resume=args.resume,
                         settings=recorded or None, **options)


def phase_logs(args: argparse.Namespace):
    """``phase name -> callbacks``: the ``--tensorboard`` logs of each phase of a
    comparison or sweep (none without the flag)."""
    return lambda phase: tensorboard_callbacks(args.tensorboard, phase)


def _evaluation_report(args, transfer, model, splits, validation, test, title, seed,
                       predict=None) -> dict[str, Any]:
    """The evaluation folder of a run, on the test set (or validation, for images without
    one): per-class scores, confusion matrix, most confidently wrong examples (and
    Grad-CAM for images); with ``--multi-label``, per-label thresholds chosen on
    validation. Images and texts share it; returns the report's numbers."""
    from templates.reports.evaluation import (
        evaluation_report,
        image_evaluation_report,
        multi_label_evaluation,
    )
    from templates.training.phases import batch_predictor

    evaluated, data = (splits.test, test) if splits.test else (splits.validation, validation)
    texts = getattr(evaluated, "texts", None)
    examples = texts if texts is not None else evaluated.files
    if args.multi_label:
        return multi_label_evaluation(model, validation, data, splits.class_names,
                                      args.output_dir, examples, title, predict=predict)
    folder = os.path.join(args.output_dir, "evaluation")
    predict = predict or batch_predictor(model)
    if texts is not None:
        return evaluation_report(transfer.model, data, splits.class_names, folder,
                                 examples=texts, kind="text", title=title, predict=predict)
    return image_evaluation_report(transfer.model, evaluated, data, folder, title, seed=seed,
                                   predict=predict)


def evaluation(args: argparse.Namespace, transfer, model: keras.Model, splits, validation,
               test, title: str, seed: int) -> dict[str, Any]:
    """Write the run's evaluation folder (`_evaluation_report`) and return the summary
    metrics.json records (``set``, accuracy, macro F1...)."""
    from templates.reports.evaluation import evaluation_summary

    report = _evaluation_report(args, transfer, model, splits, validation, test, title, seed)
    return {"set": "test" if splits.test else "validation", **evaluation_summary(report)}


def scratch_image_model(args: argparse.Namespace, source, splits):
    """A builder of ``source``'s architecture from random weights (`compare_against_scratch`)."""
    import dataclasses

    from templates.models.pretrained import pretrained_model

    def build() -> keras.Model:
        return pretrained_model(**dataclasses.replace(source, weights=None).model_options(),
                                num_classes=len(splits.class_names),
                                multi_label=args.multi_label).model

    return build


def compare_against_scratch(args: argparse.Namespace, run, build_scratch, train, validation,
                            test, state, title: str, verbose="auto") -> dict[str, Any]:
    """``--compare-scratch``: ``build_scratch()`` (the same architecture from random
    weights, built after seeding with the plan's seed) trains for all the epochs at the
    head's rate, on the same data, schedule and early stopping; writes
    ``transfer_report.json/.png``, prints the three measures, returns their metrics."""
    from templates.reports.comparison import report_against_scratch

    keras.utils.set_random_seed(run.plan.seed)
    comparison = report_against_scratch(
        run, build_scratch(), train, validation, test, args.output_dir, state=state,
        title=title, verbose=verbose,
        phase_callbacks=lambda phase: tensorboard_callbacks(args.tensorboard, phase))
    print(comparison.summary_text())
    return comparison.metrics()


def reuse_depth(args: argparse.Namespace, run, source, transfer, splits, train, validation,
                test, state) -> dict[str, Any]:
    """``--reuse-sweep N``: the backbone cut at N block ends. With ``--estimate`` the cuts
    are ranked from their frozen features (``reuse_estimates/``), else a head is trained
    on each at the run's rates (``reuse_sweep.json/.png``). Returns the metrics entry."""
    import dataclasses

    from templates.models.backbones import block_cut_points
    from templates.models.pretrained import pretrained_model
    from templates.reports.comparison import reuse_depth_sweep
    from templates.reports.selection import cut_candidates

    def build(cut):
        return pretrained_model(**dataclasses.replace(source, cut_at=cut).model_options(),
                                num_classes=len(splits.class_names),
                                class_names=splits.class_names, multi_label=args.multi_label)

    cuts = block_cut_points(transfer.backbone, args.reuse_sweep)
    if args.estimate:
        selection = select_source(args, cut_candidates(build, cuts), train, validation,
                                  title=f"Reuse depth, estimated: {source.spelling}",
                                  directory=os.path.join(args.output_dir, "reuse_estimates"))
        return {"reuse_estimates": selection.brief()}
    plan = dataclasses.replace(run.plan.with_rates(run.learning_rates), fine_tune_epochs=0,
                               callbacks={})
    return {"reuse_sweep": reuse_depth_sweep(
        build, cuts, train, validation, test, plan=plan, state=state, directory=args.output_dir,
        title=f"Reuse depth: {source.spelling} blocks (head only)",
        phase_callbacks=lambda phase: tensorboard_callbacks(args.tensorboard, phase))}


def finish_multi_worker_run(args: argparse.Namespace, choice, run, transfer, splits,
                            validation, test, title: str, metadata: dict[str, Any],
                            saved_model: keras.Model | None = None) -> int:
    """The end of a ``--strategy multi_worker`` run: every worker scores its (identical)
    copy and joins the save of ``saved_model`` (default: the model); the chief writes the
    outputs and the evaluation folder."""
    from templates.training.multi_worker import finish_multi_worker

    finish_multi_worker(
        choice, run, transfer.model, saved_model or transfer.model, args.output_dir,
        splits.class_names,
        {"val_accuracy": validation, **({"test_accuracy": test} if test else {})},
        report=lambda predict: _evaluation_report(args, transfer, transfer.model, splits,
                                                  validation, test, title, run.plan.seed,
                                                  predict=predict), **metadata)
    return 0


def quiet_retracing_warnings() -> None:
    """Hide TensorFlow's "triggered tf.function retracing" warning: recipes that build
    many small models (comparisons over seeds, sweeps) trace each model's functions on
    purpose, and the warning would only alarm the reader."""
    import logging

    logging.getLogger("tensorflow").addFilter(
        lambda record: "triggered tf.function retracing" not in record.getMessage())


def write_metrics(args: argparse.Namespace, metrics: dict[str, Any],
                  choice: StrategyChoice | None = None, gate: bool = True) -> int:
    """Write ``OUTPUT_DIR/metrics.json`` (with what ``choice`` ran on) and return the exit
    status: `accuracy_gate`'s, or 0 with ``gate=False`` (for runs without one final
    accuracy)."""
    from templates.data.files import write_json

    if choice is not None:
        metrics = {**metrics, "hardware": choice.record()}
    write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
    if not gate:
        print(f"Outputs in {args.output_dir}")
        return 0
    return accuracy_gate(args, metrics)


def run_main(main, argv=None) -> None:
    """Run a recipe's ``main`` and exit with its status.

    A cause outside the program (`templates.data.errors.outside_cause`: bad input, an
    impossible setting, an offline download, a full disk, a read-only folder) prints one
    line and exits with status 2. Anything else is a bug and keeps its traceback, even a
    ``ValueError`` raised inside Keras or NumPy.
    """
    from templates.data.decoded_images import return_large_blocks_to_the_system

    return_large_blocks_to_the_system()  # batches made and freed every step: no heap creep
    try:
        sys.exit(main(argv))
    except Exception as error:  # noqa: BLE001  (sorted below: a bug is raised again)
        if not outside_cause(error):
            raise
        print(f"error: {one_sentence(error)}", file=sys.stderr)
        sys.exit(2)


# ## The text recipe's steps

def add_text_classifier_arguments(parser: argparse.ArgumentParser) -> None:
    """The text classifier's flags: ``--architecture`` and its sizes, the embedding's
    dropout, training mode and anchor, ``--sequence-length``, ``--vector-source``."""
    from templates.models.embeddings import TRAINABLE_MODES
    from templates.models.text_classifiers import ARCHITECTURES
    from templates.training.word2vec import VECTOR_SOURCES

    group = parser.add_argument_group("classifier")
    group.add_argument("--architecture", default="cnn", choices=sorted(ARCHITECTURES),
                       help="Classifier on top of the embedding (default: Kim's CNN).")
    group.add_argument("--filters", type=number(int, 1), default=200,
                       help="Convolution filters per kernel width (cnn).")
    group.add_argument("--multichannel", action=argparse.BooleanOptionalAction,
                       default=False, help="Kim's multichannel model: a static copy of the "
                       "vectors beside the fine-tuned one.")
    group.add_argument("--units", type=number(int, 1), default=64,
                       help="Recurrent units per direction (bilstm, bigru) and hidden units "
                       "(pooled).")
    group.add_argument("--embedding-dropout", type=number(float, 0, below=1), default=0.25,
                       help="SpatialDropout1D rate on the word vectors.")
    group.add_argument("--embedding-training", default="trainable", choices=TRAINABLE_MODES,
                       help="What fine-tuning may change: every row, only rows without a "
                       "pretrained vector (missing_only), or nothing (frozen).")
    group.add_argument("--anchor-strength", type=number(float, 0), default=0.0,
                       help="While fine-tuning, pull each used word vector towards its "
                       "pretrained value (L2-SP; this times the mean squared distance is "
                       "added to the loss). Default 0.")
    group.add_argument("--sequence-length", type=number(int, 1, 100_000), default=None,
                       help="Tokens per text; the 95th percentile of training lengths when "
                       "omitted.")
    group.add_argument("--vector-source", default="auto", choices=("auto", *VECTOR_SOURCES),
                       help="Train on one word-vector source: glove (--vectors), word2vec "
                       "(on the training texts), glove+word2vec, random; auto: --vectors "
                       "plus --in-domain-vectors.")


def choose_word_vectors(args: argparse.Namespace, splits, plan: TransferPlan,
                        build_classifier):
    """The word vectors a text run trains on, tokenised: a `templates.TokenizedText`.

    ``--vector-source NAME`` takes one source; ``--develop-vectors CORPUS`` trains
    word2vec on the user's corpus, kept only if it beats random vectors (refused in one
    sentence otherwise); else ``--vectors`` (loaded once, cached as a memory-mapped
    array) with ``--in-domain-vectors`` (word2vec on the training texts beside them, from
    50,000 training words on). ``--select-from`` first ranks sources on their frozen
    features (``build_classifier(tokenized)`` builds each candidate's model). The
    result's ``details`` record the source, the word2vec check and the selection.
    """
    seed = plan.seed
    import dataclasses
    import functools

    from templates.models.tokenized_text import tokenize_for_vectors
    from templates.models.word_vectors import load_word_vectors
    from templates.reports.selection import ENCODER_PREFIX, text_source_candidates
    from templates.training.word2vec import (
        add_in_domain_vectors,
        develop_word_vectors,
        word_vector_source,
    )

    pretrained = functools.cache(lambda: load_word_vectors(
        args.vectors, words_with_spaces=args.words_with_spaces, trust_pickle=args.trust_pickle))
    in_domain_folder = os.path.join(args.output_dir, "in_domain")

    def tokenized(source):
        vectors = word_vector_source(source, pretrained, splits.train.texts, seed,
                                     in_domain_folder)
        return tokenize_for_vectors(splits, vectors, args.sequence_length,
                                    args.extra_vocabulary, args.normalize_vectors, seed)

    details: dict[str, Any] = {}
    source = args.vector_source
    if args.select_from:
        selection = select_source(args, text_source_candidates(
            args.select_from, tokenized, build_classifier, splits, plan.batch_size, plan.seed),
            title="Text classification: candidate sources")
        details["selection"] = selection.brief()
        if args.select_only or selection.pick.startswith(ENCODER_PREFIX):
            return None, details  # an encoder is trained by its own recipe (said above)
        source = selection.pick
    if source != "auto":  # one named source (or the selection's pick)
        data = tokenized(source)
        details["vectors"] = f"{source} ({args.vectors})"
        in_domain = "word2vec" in source
    else:
        if args.develop_vectors:
            vectors, check = develop_word_vectors(
                args.develop_vectors, evaluation=args.develop_evaluation, seed=seed,
                allow_unskilled=args.allow_unskilled,
                directory=os.path.join(args.output_dir, "word2vec"))
            print(f"word2vec on {args.develop_vectors}: {check.metric} {check.accuracy:.3f}, "
                  f"random vectors {check.baseline_accuracy:.3f}.")
            details["source_check"] = dataclasses.asdict(check)
        # --develop-vectors already is in-domain, so auto leaves it alone.
        when = ("off" if args.develop_vectors and args.in_domain_vectors == "auto"
                else args.in_domain_vectors)
        vectors, in_domain = add_in_domain_vectors(
            vectors if args.develop_vectors else pretrained(), splits.train.texts, when,
            seed=seed, directory=in_domain_folder)
        data = tokenize_for_vectors(splits, vectors, args.sequence_length,
                                    args.extra_vocabulary, args.normalize_vectors, seed)
        details["vectors"] = ((f"word2vec:{args.develop_vectors}" if args.develop_vectors
                               else str(args.vectors))
                              + (" + in-domain word2vec" if in_domain else ""))
    if in_domain:
        print(f"word2vec on the training texts beside the pretrained vectors: "
              f"{data.matrix.matrix.shape[1]} dimensions per word.")
    details["vector_source"] = source
    print(data.summary())
    return data, details
