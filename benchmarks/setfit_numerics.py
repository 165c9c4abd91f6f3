"""Two framework differences between the recipe's ``--contrastive`` and SetFit, measured.

SetFit trains MiniLM in PyTorch, tokenised by Hugging Face's ``tokenizers``; the recipe
trains it in Keras on TensorFlow, tokenised by keras-hub's WordPiece. Two ways these
could differ are measured here rather than tried as levers:

* ``tokens``: keras-hub's token ids (the TensorFlow preprocessor the recipe uses there)
  against the folder's ``tokenizer.json`` read by ``tokenizers``
  (`templates.data.tokenizer_file.TokenizerFile`, what SetFit and our JAX and PyTorch
  runs read), on every SST-2 sentence, at 128 tokens: how many sentences differ.
* ``texts_cut``: the sentences of each split longer than the length the recipe fits
  (`templates.models.text_encoders.EncoderTransfer.texts_cut`), which SetFit reads whole.
* ``gradients``: Keras's Adam adds its epsilon (1e-7) to the uncorrected ``sqrt(v)``,
  PyTorch's (1e-8) to the bias-corrected one, so in PyTorch's terms Keras's epsilon is
  ``1e-7 / sqrt(1 - 0.999 ** step)``: 3.2e-6 at step 1, 2.6e-7 at step 160. It only
  matters for weights whose gradients are of that size. The root mean square of each
  weight's gradient over the first batches of pairs of seed 0's draw (32 per class, the
  paper's pairs) is compared with it.
* ``embeddings`` (with ``--reference-embeddings FILE``, written by ``python -m
  benchmarks.setfit_reference --embeddings FILE`` where sentence-transformers is
  installed): the untuned encoder's pooled, unit-length vectors of the test sentences,
  ours against sentence-transformers', at 128 tokens and at the length the recipe fits.

    python -m benchmarks.setfit_numerics --preset ../shared/presets/all-MiniLM-L6-v2 \\
        --data ../shared/data/text/sst2

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from benchmarks.few_shot_text import Sst2Setup

BATCHES = 8
KERAS_EPSILON, BETA_2 = 1e-7, 0.999


def token_differences(preset: str, data: str, length: int = 128) -> dict:
    """Sentences whose keras-hub token ids differ from ``tokenizers``' (each split)."""
    import tensorflow as tf

    from templates.data.tokenizer_file import TOKENIZER_FILE, TokenizerFile
    from templates.models.text_encoders import load_text_preset

    _, preprocessor = load_text_preset(preset, load_weights=False)
    preprocessor.sequence_length = length
    reference = TokenizerFile(os.path.join(preset, TOKENIZER_FILE), length)
    report = {}
    for split in ("train", "dev", "test"):
        with open(os.path.join(data, f"stsa.binary.{split}"), encoding="utf-8") as handle:
            texts = [line.split(" ", 1)[1].strip() for line in handle if line.strip()]
        ours = {name: np.asarray(values) for name, values in
                preprocessor(tf.constant(texts)).items()}
        theirs = reference(texts)
        differ = [text for index, text in enumerate(texts) if not np.array_equal(
            ours["token_ids"][index][ours["padding_mask"][index].astype(bool)],
            theirs["token_ids"][index][theirs["padding_mask"][index]])]
        report[split] = {"sentences": len(texts), "differ": len(differ), "examples": differ[:3]}
    return report


def gradient_scale(setup: Sst2Setup, per_class: int = 32, seed: int = 0) -> dict:
    """The gradients' root mean square per weight over `BATCHES` batches of pairs,
    against Keras's epsilon in PyTorch's terms."""
    import tensorflow as tf

    from templates.data.batches import PairBatches
    from templates.training.contrastive import contrastive_pairs, pair_model
    from templates.training.label_curve import stratified_subset

    rows = stratified_subset(setup.labels, per_class, seed)
    transfer = setup.encoder  # untuned, and not used by anything else here
    first, second, targets = contrastive_pairs(setup.labels[rows], seed, 20)
    batches = PairBatches(transfer.encode([setup.texts[row] for row in rows]), first, second,
                          targets, 16, seed=seed)
    model = pair_model(transfer.backbone)
    transfer.unfreeze(None)
    weights = model.trainable_weights
    squares = [np.zeros(weight.shape) for weight in weights]
    for index in range(BATCHES):
        inputs, target = batches[index]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(inputs, training=True) - target) ** 2)
        for total, gradient in zip(squares, tape.gradient(loss, weights)):
            if gradient is not None:
                total += tf.convert_to_tensor(gradient).numpy() ** 2 / BATCHES
    # The token table's rows of tokens the batches never hold have no gradient at all
    # (Adam leaves them as they are in both frameworks): counted apart.
    table = [weight.path.endswith("token_embedding/embeddings") for weight in weights]
    others = np.sqrt(np.concatenate([total.ravel() for total, is_table in zip(squares, table)
                                     if not is_table]))
    zero = {weight.path: int(np.sum(total == 0)) for weight, total, is_table
            in zip(weights, squares, table) if not is_table and np.sum(total == 0) >= 100}
    epsilon = {step: KERAS_EPSILON / np.sqrt(1 - BETA_2 ** step) for step in (1, 16, 160)}
    return {
        "weights_but_token_table": int(others.size),
        "median_gradient_rms": float(np.median(others)),
        "share_zero": float(np.mean(others == 0)),
        "zero_by_weight": zero,
        "share_nonzero_below_keras_epsilon": {
            f"step {step}: {value:.1e}": float(np.mean((others > 0) & (others < value)))
            for step, value in epsilon.items()},
        "share_below_1e-5": float(np.mean(others < 1e-5)),
    }


def embedding_agreement(setup: Sst2Setup, preset: str, reference_file: str) -> dict:
    """Cosines between our untuned vectors of the test sentences and those in
    ``reference_file`` (sentence-transformers', same order), at 128 tokens and at the
    recipe's fitted length."""
    from templates import extract_features, pretrained_text_encoder

    reference = np.load(reference_file)
    texts = setup.splits.test.texts
    long = pretrained_text_encoder(preset, 2, sequence_length=128, fit_texts=setup.texts,
                                   class_names=["0", "1"])
    report = {}
    for name, encoder in (("128 tokens", long),
                          (f"{setup.encoder.sequence_length} tokens (fitted)", setup.encoder)):
        # Batches come in length order: the labels given are the row numbers.
        vectors, rows = extract_features(encoder.feature_extractor,
                                         encoder.batches(texts, np.arange(len(texts)), 256))
        ours = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        cosines = np.sum(ours * reference[rows.astype(int)], axis=1)
        report[name] = {"sentences": len(texts), "min_cosine": float(cosines.min()),
                        "under_0.9999": int(np.sum(cosines < 0.9999))}
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.setfit_numerics",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, help="A Hugging Face MiniLM folder.")
    parser.add_argument("--data", required=True, help="SST-2's stsa.binary.{train,dev,test}.")
    parser.add_argument("--reference-embeddings", metavar="FILE",
                        help="sentence-transformers' vectors of the test sentences "
                        "(benchmarks.setfit_reference --embeddings FILE).")
    args = parser.parse_args(argv)
    setup = Sst2Setup(args.preset, args.data)
    report = {"tokens": token_differences(args.preset, args.data),
              # The sentences the fitted length cuts, which sentence-transformers (256
              # tokens) reads whole.
              "texts_cut": setup.encoder.texts_cut(setup.splits)}
    if args.reference_embeddings:  # before gradient_scale unfreezes setup.encoder
        report["embeddings"] = embedding_agreement(setup, args.preset,
                                                   args.reference_embeddings)
    report["gradients"] = gradient_scale(setup)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
