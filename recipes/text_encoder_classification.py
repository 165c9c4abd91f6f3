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
* **Short sequences.** Attention costs grow with the square of the length, so the
  sequence length fits 99% of the training texts (`--sequence-length` overrides it).
* **LoRA** (`--lora-rank R`) trains rank-R updates of the attention's query and value
  projections and keeps every released weight: a fraction of the trainable weights, and
  a smaller step of memory on a GPU.
"""

from __future__ import annotations

import argparse
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
    add_text_data_arguments,
    add_training_arguments,
    setup_hardware,
    tensorboard_callbacks,
    transfer_plan,
)
from templates.data.downloads import DownloadError  # noqa: E402
from templates.data.files import write_json  # noqa: E402
from templates.data.texts import download_sst2, load_text_splits  # noqa: E402
from templates.export.outputs import write_model_outputs  # noqa: E402
from templates.models.backbones import WeightsUnavailableError  # noqa: E402
from templates.models.text_encoders import pretrained_text_encoder  # noqa: E402
from templates.reports.comparison import report_against_scratch  # noqa: E402
from templates.reports.environment import run_metadata  # noqa: E402
from templates.reports.evaluation import (
    evaluation_report,
    evaluation_summary,
    multi_label_evaluation,
)
from templates.training.checkpoints import TrainingState  # noqa: E402
from templates.training.run import run_transfer  # noqa: E402

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
    add_text_data_arguments(parser)
    parser.add_argument("--lora-rank", type=int, default=None, metavar="R",
                        help="Fine-tune rank-R LoRA adapters instead of every weight "
                        "(keras-hub presets).")
    parser.add_argument("--sequence-length", type=int, default=None,
                        help="Tokens per text (keras-hub); fitted to 99%% of the training "
                        "texts when omitted.")
    parser.add_argument("--dropout", type=float, default=0.1, help="The head's dropout.")
    add_run_arguments(parser, "runs/text_encoder_classification", fine_tune_epochs=3,
                      fine_tune_learning_rate=None)
    add_training_arguments(parser)
    add_hardware_arguments(parser)
    args = parser.parse_args(argv)
    if args.fine_tune_learning_rate is None:
        args.fine_tune_learning_rate = FINE_TUNE_LEARNING_RATE[
            "lora" if args.lora_rank else "full"]
    return args


def main(argv=None) -> int:
    args = parse_arguments(argv)
    # ## Hardware
    # One machine: a TPU, GPUs or the CPU (--strategy). Several machines are refused by
    # name: this recipe trains with model.fit (keras-team/keras#20585).
    choice = setup_hardware(args, args.train, args.validation, args.test)
    args.batch_size = choice.global_batch_size(args.batch_size)
    if args.export_tflite is not None:
        raise ValueError("--export-tflite: TFLite's built-in ops cannot run a keras-hub "
                         "tokenizer or a TF-Hub text module; export saved_model/ instead.")
    with choice.strategy.scope():
        return run(args)


def run(args: argparse.Namespace) -> int:
    """The recipe, inside the strategy's scope."""
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)

    # ## Data
    # The glove recipe's reader: missing validation or test sets are split off the
    # training data with the seed, before any subsetting; bad lines are skipped, counted
    # and named.
    paths = ({"train": args.train, "validation": args.validation, "test": args.test}
             if args.train else download_sst2())
    splits = load_text_splits(paths["train"], paths["validation"], paths["test"],
                              args.validation_fraction, args.seed, args.train_size,
                              args.encoding, multi_label=args.multi_label)
    class_names = splits.class_names

    # ## The encoder, frozen, with a new head
    # A keras-hub preset brings its tokenizer and packer (the preprocessor); they run
    # once over every text here, so training reads token ids. A TF-Hub module reads the
    # strings itself.
    transfer = pretrained_text_encoder(
        args.preset, len(class_names), sequence_length=args.sequence_length,
        fit_texts=splits.train.texts, lora_rank=args.lora_rank, dropout=args.dropout,
        class_names=class_names, multi_label=args.multi_label)
    batches = {name: transfer.batches(getattr(splits, name).texts, splits.labels[name],
                                      args.batch_size, shuffle=name == "train", seed=args.seed)
               for name in ("train", "validation", "test")}
    print(f"Data: train {len(splits.train)}, validation {len(splits.validation)}, test "
          f"{len(splits.test)}; classes {class_names}; skipped {len(splits.skipped)} "
          f"lines. Encoder {transfer.source}, sequence length {transfer.sequence_length}.")

    # ## Training: the two phases, as one plan
    # Phase 1 trains the head on cached encoder outputs; phase 2 unfreezes the encoder
    # (with --lora-rank, only its adapters). Every epoch is checkpointed: --resume
    # continues an interrupted run where it stopped.
    plan = transfer_plan(args, splits.labels["train"],
                         steps_per_epoch=math.ceil(len(splits.train) / args.batch_size))
    state = TrainingState(os.path.join(args.output_dir, "checkpoints"), resume=args.resume)
    run = run_transfer(transfer, batches["train"], batches["validation"], plan,
                       checkpoints=state, test=batches["test"], output_dir=args.output_dir,
                       measure_start=True, verbose=2)
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
    write_model_outputs(args.output_dir, transfer.string_classifier(), class_names,
                        run.history, title=f"Head and fine-tuning on {transfer.source}")
    if args.multi_label:  # each label's threshold chosen on validation (thresholds.json)
        evaluation = multi_label_evaluation(
            transfer.model, batches["validation"], batches["test"], class_names,
            args.output_dir, splits.test.texts, "Text classification")
    else:
        evaluation = evaluation_report(
            transfer.model, batches["test"], class_names,
            os.path.join(args.output_dir, "evaluation"), examples=splits.test.texts,
            kind="text", title="Text classification")
    metrics = {
        **run.metrics(), "encoder": transfer.source, "lora_rank": args.lora_rank,
        "sequence_length": transfer.sequence_length, "trainable_weights": trainable,
        "class_names": class_names, "skipped_lines": splits.skipped,
        "examples": {name: len(getattr(splits, name))
                     for name in ("train", "validation", "test")},
        "evaluation": {"set": "test", **evaluation_summary(evaluation)},
        **run_metadata(data={key: value for key, value in splits.paths.items() if value},
                       seed=args.seed),
    }

    if args.compare_scratch:
        # ## Did pretraining help? The same encoder, randomly initialised.
        # keras-hub's own initialisers (a TF-Hub module's weights redrawn at their own
        # spread), trained end to end for all the epochs at the head's rate: the same
        # data, seed, schedule and early stopping.
        scratch = transfer.scratch_model(seed=args.seed)
        comparison = report_against_scratch(
            run, scratch, batches["train"], batches["validation"], batches["test"],
            args.output_dir, title=f"{transfer.source} vs the same encoder from scratch",
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
    except (DownloadError, WeightsUnavailableError, FileNotFoundError, ValueError) as error:
        # Expected failures (offline, bad files, bad arguments) get one clear message.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
