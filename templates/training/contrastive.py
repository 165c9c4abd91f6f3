"""Few-shot text, SetFit's way: tune a sentence encoder on pairs, then train the head.

SetFit (Tunstall et al. 2022) fine-tunes a sentence transformer contrastively on pairs
drawn from a handful of labelled sentences: a pair of the same label should have cosine
similarity 1, a pair of different labels 0 (``CosineSimilarityLoss``: the squared
difference); then a classifier learns on the tuned, pooled embeddings, the encoder
frozen. 16 sentences give 136 distinct pairs where they were 16 examples.

    settings = ContrastiveSettings(contrastive=True)
    tuned = contrastive_tune(transfer, texts, labels, settings, seed=0, state=state)
    run = run_transfer(transfer, train, validation, settings.plan_for(plan), state)

`contrastive_pairs` draws the pairs as SetFit's paper did (``contrastive_pairs=20``, the
default here: that many positive and negative pairs per sentence, SetFit's
``num_iterations``; chosen on validation, docs/results.md) or as SetFit 1.0 does by
default (``0`` or ``None``, "oversampling": every pair of sentences once, self-pairs included,
the rarer kind repeated until positives and negatives are as many: 144 pairs from 16
sentences, too few steps to move MiniLM at 2e-5). The rest of SetFit's defaults are this
module's: batches of 16 pairs, one epoch, rate 2e-5 with 10% warm-up (then a cosine
decay, where SetFit's is linear).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from templates.data.batches import PairBatches
from templates.data.errors import CookbookError
from templates.data.settings import setting
from templates.training.checkpoints import TrainingState, run_phase
from templates.training.compilation import jit_compile_setting
from templates.training.plan import TransferPlan

PHASE = "contrastive"
# Oversampling makes every pair of n sentences (n^2 / 2 of them): made for a few dozen
# sentences, it would be 24 million pairs on SST-2's 6,920. Beyond this many of each kind
# per sentence (SetFit's paper drew 20), the pairs are cut to it.
PAIRS_PER_TEXT_AT_MOST = 20
LISTED_PAIRS_AT_MOST = 1_000_000  # beyond it the pairs are drawn at random, not listed


@dataclasses.dataclass
class ContrastiveSettings:
    """Whether and how a text encoder is tuned on pairs before its head (the flags of
    the text-encoder recipe, one per field)."""

    contrastive: bool = setting(
        False, "Few-shot text, SetFit's way: first tune the encoder on pairs of training "
        "sentences (same label close, different labels apart: cosine-similarity loss), "
        "then train the head on its tuned, pooled outputs; no fine-tuning phase after it.")
    # 20, the SetFit paper's, chosen on SST-2's validation sentences with MiniLM at 8
    # labels per class: 3 points above SetFit 1.0's oversampling (docs/results.md).
    contrastive_pairs: int = setting(
        20, "Positive and negative pairs per sentence (SetFit's num_iterations, its "
        "paper's 20); 0: SetFit 1.0's oversampling, every pair of sentences once and "
        f"the rarer kind repeated to match (at most {PAIRS_PER_TEXT_AT_MOST}).",
        minimum=0, metavar="N")
    contrastive_epochs: int = setting(1, "Epochs over the pairs.", minimum=1)
    contrastive_batch_size: int = setting(16, "Pairs per batch.", minimum=1)
    contrastive_learning_rate: float = setting(
        2e-5, "The encoder's peak rate on the pairs (after a 10% warm-up).", above=0)

    def plan_for(self, plan: TransferPlan) -> TransferPlan:
        """The plan of the run after tuning: the head only when ``contrastive`` (the
        encoder was tuned on the pairs), else ``plan`` as it is."""
        return dataclasses.replace(plan, fine_tune_epochs=0) if self.contrastive else plan


def contrastive_pairs(labels, seed: int, pairs_per_text: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs SetFit trains on: ``(first rows, second rows, targets)``, positives
    (target 1: the same label, or a shared label for multi-hot rows) and negatives
    (target 0) alternating.

    Every pair of rows ``i <= j`` (a row with itself too), in an order drawn with
    ``seed``, is sorted into positives and negatives; then ``pairs_per_text`` times the
    number of rows of each (``None`` or 0: as many of each as the more common kind,
    SetFit 1.0's "oversampling", but at most `PAIRS_PER_TEXT_AT_MOST` times the rows),
    taken in that order and cycled where there are fewer.

    Raises:
        CookbookError: when there are no negative pairs (one class only).
    """
    labels = np.asarray(labels)
    count = len(labels)
    rng = np.random.default_rng(seed)
    if count * (count + 1) // 2 <= LISTED_PAIRS_AT_MOST:
        first, second = np.triu_indices(count)
        order = rng.permutation(len(first))
        first, second = first[order], second[order]
    else:  # too many to list (and at most PAIRS_PER_TEXT_AT_MOST per row are kept): drawn
        first, second = (rng.integers(0, count, 4 * PAIRS_PER_TEXT_AT_MOST * count)
                         for _ in range(2))
    if labels.ndim > 1:
        same = np.any(np.logical_and(labels[first], labels[second]), axis=-1)
    else:
        same = labels[first] == labels[second]
    positive, negative = np.flatnonzero(same), np.flatnonzero(~same)
    if not len(negative):
        raise CookbookError(f"Contrastive tuning needs texts of at least two labels; all "
                            f"{count} share one.")
    each = (min(max(len(positive), len(negative)), PAIRS_PER_TEXT_AT_MOST * count)
            if not pairs_per_text else int(pairs_per_text) * count)
    chosen = np.stack([np.resize(positive, each), np.resize(negative, each)], axis=1).ravel()
    targets = np.tile(np.asarray([1.0, 0.0], "float32"), each)
    return first[chosen], second[chosen], targets


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class CosineSimilarity(keras.layers.Layer):
    """The cosine similarity of two batches of vectors, one number per row."""

    def call(self, first, second):
        def unit(vectors):
            return vectors / keras.ops.maximum(
                keras.ops.sqrt(keras.ops.sum(vectors * vectors, axis=-1, keepdims=True)), 1e-12)

        return keras.ops.sum(unit(first) * unit(second), axis=-1)

    def compute_output_shape(self, first_shape, second_shape=None):
        return (first_shape[0],)


def pair_model(encoder: keras.Model) -> keras.Model:
    """Two copies of ``encoder`` (shared weights: one encoder read twice) and the cosine
    similarity of their outputs; inputs ``first_NAME`` and ``second_NAME`` for each of
    the encoder's inputs (`templates.data.batches.PairBatches`)."""
    if not isinstance(encoder.input, dict):
        raise CookbookError("Contrastive tuning reads a transformer's token ids; a TF-Hub "
                            "module that reads strings is not supported.")
    sides = {side: {name: keras.Input(shape=(None,), dtype=spec.dtype, name=f"{side}_{name}")
                    for name, spec in encoder.input.items()} for side in ("first", "second")}
    similarity = CosineSimilarity(name="cosine_similarity")(encoder(sides["first"]),
                                                            encoder(sides["second"]))
    inputs = {f"{side}_{name}": tensor for side, named in sides.items()
              for name, tensor in named.items()}
    return keras.Model(inputs, similarity, name="pairs")


def contrastive_tune(transfer, texts: Sequence[str], labels,
                     settings: ContrastiveSettings | None = None, seed: int = 0,
                     state: TrainingState | None = None, verbose: int | str = 0
                     ) -> dict[str, Any]:
    """Tune ``transfer``'s encoder on pairs of ``texts`` (`contrastive_pairs`), in place.

    The encoder (with LoRA, its adapters) trains as `EncoderTransfer.unfreeze` makes it
    trainable, through its own pooling (the pooled vectors are what the head reads),
    and is frozen again afterwards, ready for the head phase.

    Args:
        transfer: A `templates.models.text_encoders.EncoderTransfer` on a keras-hub
            transformer.
        texts, labels: The labelled training texts.
        settings: The pairs and their training (`ContrastiveSettings`).
        seed: Seeds the pairs' draw, their order and the dropout.
        state: The run's `TrainingState`: the tuned weights are kept as the phase
            ``"contrastive"`` and restored on a resume; ``None``: not kept.

    Returns:
        What was done, for metrics.json: the pairs (positive and negative), the steps,
        the settings and the loss of each epoch.
    """
    settings = settings or ContrastiveSettings(contrastive=True)
    first, second, targets = contrastive_pairs(labels, seed, settings.contrastive_pairs)
    keras.utils.set_random_seed(seed)
    batches = PairBatches(transfer.encode(texts), first, second, targets,
                          settings.contrastive_batch_size, seed=seed)
    data = batches.as_tf_dataset() if keras.backend.backend() == "tensorflow" else batches
    model = pair_model(transfer.backbone)
    steps = len(batches) * settings.contrastive_epochs
    warmup = int(0.1 * steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(steps - warmup, 1), warmup_target=settings.contrastive_learning_rate,
        warmup_steps=warmup)
    transfer.unfreeze(None)
    try:
        # XLA ("auto" turns it on for TensorFlow on CPU) compiles the step anew for every
        # batch width (one timing of 34 MiniLM steps: 106 s against 59 s; not a benchmark).
        jit_compile = jit_compile_setting()
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.0),
                      loss="mean_squared_error",
                      jit_compile=False if jit_compile == "auto" else jit_compile)
        history = run_phase(state, PHASE, model, lambda callbacks: model.fit(
            data, epochs=settings.contrastive_epochs, callbacks=callbacks, shuffle=False,
            verbose=verbose))
    finally:
        transfer.backbone.trainable = False
    return {**dataclasses.asdict(settings), "pairs": int(len(targets)),
            "positive_pairs": int(targets.sum()), "texts": int(len(texts)), "steps": steps,
            "loss": [round(float(loss), 5) for loss in history.history.get("loss", [])]}
