"""Benchmark: what the in-domain word vectors of the GloVe recipe are made of.

The glove recipe's default on full SST-2 puts word2vec trained on the training sentences
beside GloVe (`templates.training.word2vec.add_in_domain_vectors`). This script runs the recipe's
defaults with the embedding swapped for two controls, and one more lever:

* ``random_beside``: GloVe plus 50 random dimensions for the same words (is it the
  in-domain vectors, or just a wider trainable embedding?);
* ``in_domain_alone``: the in-domain word2vec vectors without GloVe;
* ``map_unseen``: GloVe alone, trained once; then the rows of words never seen in
  training (which fine-tuning cannot move) are mapped by a linear map fitted from the
  GloVe vectors to the fine-tuned vectors of the training words, with plain least
  squares or ridge, fully or half-way, and the same model is scored again (paired).

Prints one JSON object: validation and test accuracy per variant and seed. Run
(about 3 minutes per seed on 2 CPU cores):

    python -m benchmarks.in_domain_vectors --seeds 11 12 13
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from templates.cli import transfer_plan  # noqa: E402
from templates.data.texts import load_text_splits  # noqa: E402
from templates.data.tokenization import tokenize  # noqa: E402
from templates.models.embeddings import PretrainedEmbedding  # noqa: E402
from templates.models.layers import iterate_layers  # noqa: E402
from templates.models.text_classifiers import pretrained_text_classifier  # noqa: E402
from templates.models.tokenized_text import tokenize_for_vectors  # noqa: E402
from templates.models.word_vectors import (
    concatenate_word_vectors,
    keyed_vectors,
    load_word_vectors,
)
from templates.training.checkpoints import TrainingState  # noqa: E402
from templates.training.run import run_transfer  # noqa: E402
from templates.training.word2vec import develop_word_vectors  # noqa: E402

SST2 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "text", "sst2")
VARIANTS = ("random_beside", "in_domain_alone", "map_unseen")


def swapped_vectors(variant: str, glove, texts, seed: int):
    """The embedding's vectors for ``variant`` (GloVe alone for ``map_unseen``)."""
    if variant == "map_unseen":
        return glove
    in_domain, _ = develop_word_vectors([tokenize(text) for text in texts], seed=seed,
                                        evaluation=None)
    both = concatenate_word_vectors(glove, in_domain)
    second = np.asarray(both.vectors)[:, glove.vector_size:]
    if variant == "in_domain_alone":
        return keyed_vectors(both.index_to_key, np.ascontiguousarray(second))
    present = np.abs(second).sum(axis=1, keepdims=True) > 0
    random = np.random.default_rng(seed).normal(size=second.shape).astype(np.float32)
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    return keyed_vectors(both.index_to_key, np.hstack([both.vectors[:, :glove.vector_size],
                                                       random * present]))


def run_variant(variant: str, seed: int, data_dir: str) -> dict:
    from recipes.glove_text_classification import parse_arguments

    args = parse_arguments([
        "--train", os.path.join(data_dir, "stsa.binary.train"),
        "--validation", os.path.join(data_dir, "stsa.binary.dev"),
        "--test", os.path.join(data_dir, "stsa.binary.test"), "--seed", str(seed)])
    keras.utils.set_random_seed(seed)
    splits = load_text_splits(args.train, args.validation, args.test,
                              args.validation_fraction, seed, args.train_size, args.encoding)
    vectors = swapped_vectors(variant, load_word_vectors(args.vectors), splits.train.texts,
                              seed)
    keras.utils.set_random_seed(seed)
    data = tokenize_for_vectors(splits, vectors, args.sequence_length, args.extra_vocabulary,
                                args.normalize_vectors, seed)
    train = data.batches("train", args.batch_size, shuffle=True, seed=seed)
    validation, test = data.batches("validation", args.batch_size), data.batches(
        "test", args.batch_size)
    transfer = pretrained_text_classifier(
        data.matrix, len(splits.class_names), data.sequence_length, args.architecture,
        filters=args.filters, units=args.units, embedding_dropout=args.embedding_dropout,
        trainable_rows=data.trainable_rows, class_names=splits.class_names)
    plan = transfer_plan(args, splits.labels["train"],
                         steps_per_epoch=math.ceil(len(splits.train) / args.batch_size))
    with tempfile.TemporaryDirectory() as folder:
        run_transfer(transfer, train, validation, plan, verbose=0,
                     checkpoints=TrainingState(folder))

    def scores():
        return [round(float(transfer.model.evaluate(split, verbose=0, return_dict=True)
                            ["accuracy"]), 4) for split in (validation, test)]

    result = {"val_test": scores()}
    if variant == "map_unseen":
        result.update(_mapped_scores(transfer.model, data, scores))
    return result


def _mapped_scores(model, data, scores) -> dict:
    layer = next(layer for layer in iterate_layers(model)
                 if isinstance(layer, PretrainedEmbedding))
    split = layer.embeddings.shape[0]
    initial = data.matrix.matrix
    tuned = keras.ops.convert_to_numpy(layer.embeddings)
    fixed = keras.ops.convert_to_numpy(layer.fixed_embeddings).copy()
    seen = np.zeros(len(initial), bool)
    seen[np.unique(data.ids["train"])] = True
    rows = np.flatnonzero(seen[:split] & data.matrix.pretrained_rows[:split])
    rows = rows[rows > 1]  # not padding or the unknown-word token
    inputs = np.hstack([initial[rows], np.ones((len(rows), 1), np.float32)])
    unseen = np.hstack([initial[split:], np.ones((len(initial) - split, 1), np.float32)])
    result = {"moved": round(float(np.mean(np.linalg.norm(tuned[rows] - initial[rows],
                                                          axis=1))), 3)}
    for ridge in (0.0, 1.0, 10.0):
        penalty = ridge * np.eye(inputs.shape[1])
        penalty[-1, -1] = 0.0  # the bias is not shrunk
        weights = np.linalg.solve(inputs.T @ inputs + penalty, inputs.T @ tuned[rows])
        residual = np.sum((inputs @ weights - tuned[rows]) ** 2)
        result[f"r2_ridge{ridge:g}"] = round(float(1 - residual / np.sum(
            (tuned[rows] - tuned[rows].mean(axis=0)) ** 2)), 3)
        for blend in (0.5, 1.0):
            layer.fixed_embeddings.assign(
                (blend * (unseen @ weights) + (1 - blend) * fixed).astype("float32"))
            result[f"val_test_ridge{ridge:g}_blend{blend:g}"] = scores()
    layer.fixed_embeddings.assign(fixed)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--data-dir", default=SST2, help="Folder with SST-2's stsa.binary.*")
    args = parser.parse_args(argv)
    results = {variant: {str(seed): run_variant(variant, seed, args.data_dir)
                         for seed in args.seeds} for variant in args.variants}
    for variant, by_seed in results.items():
        pairs = np.array([run["val_test"] for run in by_seed.values()])
        by_seed["mean"] = [round(float(value), 4) for value in pairs.mean(axis=0)]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
