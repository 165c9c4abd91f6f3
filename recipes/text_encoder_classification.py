"""
Title: Text classification by fine-tuning a pretrained sentence encoder
Description: Reuse a released text encoder (a keras-hub transformer preset such as
BERT, or a TF-Hub sentence-embedding module such as NNLM), train a new head on its
frozen outputs, then fine-tune the encoder (whole, or through LoRA adapters).

How to run:

    # With internet: a keras-hub preset by name, SST-2 downloaded.
    python -m recipes.text_encoder_classification --preset bert_tiny_en_uncased

    # Offline, with a local preset folder (Backbone.save_to_preset and
    # preprocessor.save_to_preset write one) and local files:
    python -m recipes.text_encoder_classification --preset /path/to/preset_dir \
        --train ../shared/data/text/sst2/stsa.binary.train \
        --validation ../shared/data/text/sst2/stsa.binary.dev \
        --test ../shared/data/text/sst2/stsa.binary.test --compare-scratch

    # Few labels (8 per class): tune the encoder on sentence pairs first, SetFit's way:
    python -m recipes.text_encoder_classification --preset ../shared/presets/all-MiniLM-L6-v2 \
        --train-size 16 --contrastive

    # Fine-tune rank-4 LoRA adapters only; or a TF-Hub module (handle or folder):
    python -m recipes.text_encoder_classification --preset bert_base_en_uncased --lora-rank 4
    python -m recipes.text_encoder_classification \
        --preset tfhub:https://tfhub.dev/google/nnlm-en-dim50/2

    python -m recipes.text_encoder_classification --help

Data: the forms `recipes.glove_text_classification` reads (`label<TAB>text` lines, SST-2's
`label text` lines, or one folder of `.txt` files per class).

Outputs in `--output-dir`: `metrics.json` (`test_accuracy`, the sequence length, the
trainable weights of each phase...), `history.json`, `learning_curves.png`,
`model.keras` (takes raw strings; the tokenizer travels inside), `labels.txt`,
`saved_model/`, `evaluation/`; with `--compare-scratch` `transfer_report.json` / `.png`.
Classify new texts with `python -m recipes.predict OUTPUT_DIR --text "..."`.

## Why this recipe looks the way it does

* **Two phases, as for images and word vectors.** A new head on a frozen encoder first
  (the encoder's pooled outputs are computed once and cached, so head epochs cost
  nothing), then the whole encoder at a small rate: a randomly initialised head
  fine-tuned together with a pretrained encoder sends large gradients into weights that
  were already good.
* **Rates from the BERT paper.** Devlin et al. (2019) fine-tune for 2-4 epochs at 2e-5
  to 5e-5; the default is 3 epochs at 5e-5, and 5e-4 for LoRA adapters (Hu et al. 2021
  train adapters at about ten times the full rate). These were not chosen here: no
  pretrained preset can be downloaded on the machine that built this recipe
  (docs/results.md says so).
* **Pooling that follows the model.** A sentence-transformers folder (all-MiniLM-L6-v2)
  says how its token outputs become one vector (mean over the real tokens, then unit
  length) and is read that way; other encoders get mean, [CLS] or BERT's pooler,
  whichever a logistic regression on the frozen outputs scores best on validation
  (`--pooling` overrides). The pooling is a layer of the saved model.
* **Short sequences, padded per batch.** Attention costs grow with the square of the
  length: the longest length fits 99% of the training texts (`--sequence-length`
  overrides it), and each batch is padded only to its own longest text, sentences of
  similar length batched together.
* **Every backend.** On JAX and PyTorch the texts are tokenised by Hugging Face's
  `tokenizers` from the folder's `tokenizer.json`, and the saved model reads token ids
  with `tokenizer.json` beside it (`recipes.predict` uses it).
* **Few labels: pairs first** (`--contrastive`). With 8 labelled sentences per class,
  fine-tuning a whole classifier has 16 examples to learn from; SetFit (Tunstall et al.
  2022) draws 640 pairs of them (20 of each kind per sentence), tunes the encoder so that
  sentences of one label end up close (cosine similarity), then trains the head on the
  tuned, pooled vectors.
* **LoRA** (`--lora-rank R`) trains rank-R updates of the attention's query and value
  projections and keeps every released weight: a fraction of the trainable weights, and
  a smaller step of memory on a GPU.
"""

from __future__ import annotations

import argparse
import functools
import math
import os

# Keep TensorFlow's C++ start-up chatter out of the recipe's output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from templates import cli  # noqa: E402
from templates import (  # noqa: E402
    POOLINGS,
    ContrastiveSettings,
    CookbookError,
    TransferPlan,
    contrastive_tune,
    describe_cut_texts,
    download_sst2,
    evaluate_run,
    label_curve,
    load_text_splits,
    pretrained_text_encoder,
    report_against_scratch,
    run_metadata,
    run_transfer,
    tensorboard_logs,
    write_model_outputs,
)

FINE_TUNE_LEARNING_RATE = {"full": 5e-5, "lora": 5e-4}


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.text_encoder_classification",
        description="Text classification on a pretrained sentence encoder (keras-hub "
                    "preset or TF-Hub module).")
    parser.add_argument("--preset", required=True,
                        help="A keras-hub text preset name (bert_tiny_en_uncased, "
                        "distil_bert_base_en_uncased, roberta_base_en...) or folder, or "
                        "tfhub:HANDLE_OR_DIR for a TF-Hub sentence-embedding module.")
    cli.add_text_data_arguments(parser)
    parser.add_argument("--lora-rank", type=cli.number(int, 1, 1024), default=None, metavar="R",
                        help="Fine-tune rank-R LoRA adapters instead of every weight "
                        "(keras-hub presets).")
    parser.add_argument("--sequence-length", type=cli.number(int, 1, 100_000), default=None,
                        help="Tokens per text (keras-hub); fitted to 99%% of the training "
                        "texts when omitted.")
    parser.add_argument("--pooling", choices=POOLINGS, default="auto",
                        help="How the token outputs become one vector: auto (default: "
                        "what a sentence-transformers folder says, e.g. mean for "
                        "all-MiniLM-L6-v2; else mean, cls or pooler, whichever a logistic "
                        "regression on the frozen outputs scores best on validation), "
                        "mean (over real tokens), cls (the first token) or pooler (BERT's).")
    parser.add_argument("--dropout", type=cli.number(float, 0, below=1), default=0.1,
                        help="The head's dropout.")
    cli.add_settings_arguments(parser, ContrastiveSettings(), "few labels: contrastive "
                               "tuning on pairs (SetFit)")
    # The head's rate: 1e-2 chosen on SST-2's validation sentences (docs/results.md): a
    # mean-pooled, unit-length MiniLM vector has coordinates near 0.05, and 1e-3 left
    # the head 3 points short in ten epochs; 1e-2 is within a point of the best rate for
    # [CLS] vectors too. A transformer from random weights (--compare-scratch) trains at
    # 1e-4: at the head's 1e-2, and at 1e-3, it never left the constant guess.
    cli.add_run_arguments(parser, "runs/text_encoder_classification")
    cli.add_plan_arguments(
        parser, TransferPlan(learning_rate=1e-2, scratch_learning_rate=1e-4),
        fine_tune_learning_rate=(f"{FINE_TUNE_LEARNING_RATE['full']:g}, or "
                                 f"{FINE_TUNE_LEARNING_RATE['lora']:g} with --lora-rank"))
    cli.add_hardware_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    # ## Hardware
    # One machine: a TPU, GPUs or the CPU (--strategy). Several machines are refused by
    # name: this recipe trains with model.fit (keras-team/keras#20585).
    choice = cli.setup_hardware(args, args.train, args.validation, args.test)
    if args.export_tflite is not None:
        raise CookbookError("--export-tflite: TFLite's built-in ops cannot run a keras-hub "
                            "tokenizer or a TF-Hub text module; export saved_model/ instead.")
    with cli.own_output_dir(args, choice), choice.strategy.scope():
        return run_recipe(args, choice)


def run_recipe(args: argparse.Namespace, choice) -> int:
    """The recipe, inside the strategy's scope."""
    # The seed, epochs, rates and schedule of the run; fine-tuning's rate by default
    # depends on --lora-rank (docs/results.md). With --contrastive the tuning on pairs
    # takes fine-tuning's place: the head then trains alone, as in SetFit.
    plan = cli.transfer_plan(args, choice=choice, fine_tune_learning_rate=args.fine_tune_learning_rate
                             or FINE_TUNE_LEARNING_RATE["lora" if args.lora_rank else "full"])
    contrastive = cli.settings_from(args, ContrastiveSettings)
    plan = contrastive.plan_for(plan)
    os.makedirs(args.output_dir, exist_ok=True)

    # ## Data
    # The glove recipe's reader: missing validation or test sets are split off the
    # training data with the seed, before any subsetting; bad lines are skipped, counted
    # and named.
    paths = ({"train": args.train, "validation": args.validation, "test": args.test}
             if args.train else download_sst2())
    splits = load_text_splits(paths["train"], paths["validation"], paths["test"],
                              args.validation_fraction, plan.seed, args.train_size,
                              args.encoding, multi_label=args.multi_label)
    class_names = splits.class_names

    # ## The encoder, frozen, with a new head
    # A keras-hub preset brings its tokenizer and packer (the preprocessor); they run
    # once over every text here, so training reads token ids. A TF-Hub module reads the
    # strings itself.
    def build_encoder(pooling=args.pooling):
        return pretrained_text_encoder(
            args.preset, len(class_names), sequence_length=args.sequence_length,
            fit_texts=splits.train.texts, lora_rank=args.lora_rank, dropout=args.dropout,
            class_names=class_names, multi_label=args.multi_label, pooling=pooling,
            pooling_data=(splits.train.texts, splits.labels["train"],
                          splits.validation.texts, splits.labels["validation"]))

    transfer = build_encoder()
    batches = {name: transfer.batches(getattr(splits, name).texts, splits.labels[name],
                                      plan.batch_size, shuffle=name == "train", seed=plan.seed)
               for name in ("train", "validation", "test")}
    # Texts longer than the sequence length are read to it: counted, never silently.
    texts_cut = transfer.texts_cut(splits)
    print(f"{splits.describe()}\nEncoder {transfer.source}, sequence length "
          f"{transfer.sequence_length}, {transfer.pooling} pooling "
          f"({transfer.pooling_choice['chosen_by']}).")
    if texts_cut:
        print(describe_cut_texts(texts_cut, splits))

    # ## Training: the two phases, as one plan
    # Phase 1 trains the head on cached encoder outputs; phase 2 unfreezes the encoder
    # (with --lora-rank, only its adapters). Every epoch is checkpointed: --resume
    # continues an interrupted run where it stopped.
    plan = plan.for_training_set(splits.labels["train"])
    state = cli.checkpoints(args, plan, settings=dict(
        preset=args.preset, pooling=transfer.pooling, lora_rank=args.lora_rank,
        dropout=args.dropout, sequence_length=transfer.sequence_length,
        contrastive=vars(contrastive), classes=class_names,
        data=splits.fingerprint()))
    # With --contrastive, the encoder first learns on pairs of training sentences: one
    # label close, different labels apart (checkpointed as a phase of its own).
    def tune_on_pairs(encoder, rows, seed, state=None):
        return contrastive_tune(encoder, [splits.train.texts[row] for row in rows],
                                splits.labels["train"][rows], contrastive, seed, state,
                                verbose=0 if state is None else 2) if contrastive.contrastive else None

    tuned = tune_on_pairs(transfer, range(len(splits.train)), plan.seed, state)
    run = run_transfer(transfer, batches["train"], batches["validation"], plan, state,
                       test=batches["test"], output_dir=args.output_dir, measure_start=True,
                       verbose=2)
    # What each phase trained, counted (LoRA's point: a fraction of the weights).
    trainable = {"head": int(sum(math.prod(weight.shape)
                                 for weight in transfer.head.trainable_weights))}
    transfer.unfreeze(None)
    trainable["fine_tune"] = int(sum(math.prod(weight.shape)
                                     for weight in transfer.model.trainable_weights))
    transfer.backbone.trainable = False

    # ## Outputs
    # The saved model takes raw strings: the preprocessor (vocabulary included) sits in
    # front of the trained model, so users never rebuild the tokenisation.
    # On JAX and PyTorch the model reads token ids, and tokenizer.json travels beside it.
    write_model_outputs(args.output_dir, transfer.string_classifier(), class_names,
                        run.history, title=f"Head and fine-tuning on {transfer.source}",
                        tokenizer=transfer.tokenizer_file)
    metrics = {
        **run.metrics(), "encoder": transfer.source, "lora_rank": args.lora_rank,
        "pooling": transfer.pooling_choice, "contrastive": tuned,
        "sequence_length": transfer.sequence_length, "texts_cut": texts_cut,
        "trainable_weights": trainable,
        "class_names": class_names, "skipped_lines": splits.skipped,
        "data_notes": splits.notes,
        "examples": {name: len(getattr(splits, name))
                     for name in ("train", "validation", "test")},
        **run_metadata(data={key: value for key, value in splits.paths.items() if value},
                       seed=plan.seed),
    }
    # Per-class scores, confusion matrix, the most confidently wrong test sentences.
    metrics["evaluation"] = evaluate_run(transfer.model, splits, batches["validation"],
                                         batches["test"], args.output_dir,
                                         "Text classification", plan.seed, args.multi_label)

    if args.compare_scratch:
        # ## Did pretraining help? The same encoder, randomly initialised.
        # keras-hub's own initialisers (a TF-Hub module's weights redrawn at their own
        # spread), trained end to end for all the epochs at --scratch-learning-rate: the
        # same data, seed, schedule and early stopping.
        metrics.update(report_against_scratch(
            run, functools.partial(transfer.scratch_model, seed=plan.seed), batches["train"],
            batches["validation"], batches["test"], args.output_dir, state=state, verbose=2,
            phase_callbacks=tensorboard_logs(args.tensorboard),
            title=f"{transfer.source} vs the same encoder from scratch").metrics())
    # ## How many labels do you need? (--label-curve 8 16 32 all)
    # The same encoder (its pooling as chosen above) and plan on K labelled sentences per
    # class, a new draw per seed; with --compare-scratch, the random encoder's curve too.
    if args.label_curve:
        texts, labels = splits.train.texts, splits.labels["train"]
        metrics["label_curve"] = label_curve(
            args.label_curve, labels, lambda rows, seed: transfer.batches(
                [texts[row] for row in rows], labels[rows], plan.batch_size, shuffle=True,
                seed=seed), lambda: build_encoder(transfer.pooling_choice), batches["validation"],
            batches["test"], plan, state=state, directory=args.output_dir,
            before_training=tune_on_pairs if contrastive.contrastive else None,
            build_scratch=(functools.partial(transfer.scratch_model, seed=plan.seed)
                           if args.compare_scratch else None),
            title=f"{transfer.source}: labels per class").summary()
    print(f"Before any training: validation accuracy {run.start_accuracy:.4f}.")
    return cli.write_metrics(args, metrics, choice)


if __name__ == "__main__":
    cli.run_main(main)
