"""Few-shot text, SetFit's way (issue 39): the pairs, their batches, the tuning of a real
sentence encoder on them, and the text-encoder recipe's ``--contrastive`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from templates.data.batches import PairBatches
from templates.data.errors import CookbookError
from templates.training.contrastive import (
    PAIRS_PER_TEXT_AT_MOST,
    ContrastiveSettings,
    contrastive_pairs,
)


def test_the_pairs_are_setfits_oversampled_pairs():
    labels = np.array([0] * 8 + [1] * 8)
    first, second, targets = contrastive_pairs(labels, seed=3)
    # 16 sentences: 136 pairs i <= j, 72 of one label and 64 of two; oversampling
    # repeats negatives until there are 72 of each, alternating.
    assert len(targets) == 144 and targets.sum() == 72
    np.testing.assert_array_equal(targets[:6], [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(labels[first] == labels[second], targets.astype(bool))
    assert len({(a, b) for a, b in zip(first, second)}) == 136  # every pair, once or more
    assert (first <= second).all()
    # Another seed, another order; the paper's 20 of each kind per sentence.
    assert not np.array_equal(contrastive_pairs(labels, seed=4)[0], first)
    assert len(contrastive_pairs(labels, seed=3, pairs_per_text=20)[2]) == 2 * 20 * 16
    # Multi-hot labels: a pair sharing a label is positive.
    multi = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    first, second, targets = contrastive_pairs(multi, seed=0)
    for a, b, target in zip(first, second, targets):
        assert target == float((multi[a] & multi[b]).any())
    with pytest.raises(CookbookError, match="at least two labels"):
        contrastive_pairs([1, 1, 1], seed=0)


def test_many_sentences_get_at_most_twenty_pairs_of_each_kind_each():
    labels = np.random.default_rng(0).integers(0, 2, 3000)  # 4.5 million pairs listed
    first, second, targets = contrastive_pairs(labels, seed=0)
    assert len(targets) == 2 * PAIRS_PER_TEXT_AT_MOST * 3000 and targets.sum() == len(targets) / 2
    np.testing.assert_array_equal(labels[first] == labels[second], targets.astype(bool))


def test_pair_batches_pad_both_sides_to_the_longest_text():
    mask = np.zeros((4, 32), bool)
    for row, length in enumerate((3, 20, 9, 30)):
        mask[row, :length] = True
    inputs = {"token_ids": np.where(mask, 7, 0).astype("int32"), "padding_mask": mask}
    batches = PairBatches(inputs, [0, 2, 1], [2, 3, 0], [1.0, 0.0, 1.0], batch_size=2,
                          seed=5)
    assert len(batches) == 2
    seen = []
    for index in range(len(batches)):
        pairs, targets = batches[index]
        assert set(pairs) == {"first_token_ids", "first_padding_mask",
                              "second_token_ids", "second_padding_mask"}
        longest = max(pairs[f"{side}_padding_mask"].sum(axis=1).max()
                      for side in ("first", "second"))
        for side in ("first", "second"):  # one width, the batch's longest text's
            assert pairs[f"{side}_token_ids"].shape[1] == max(8, -(-longest // 8) * 8)
        seen += list(targets)
    assert sorted(seen) == [0.0, 1.0, 1.0]


def test_the_contrastive_option_replaces_fine_tuning_in_the_plan():
    from templates.training.plan import TransferPlan

    assert ContrastiveSettings().contrastive_pairs == 20  # the SetFit paper's, validated
    plan = TransferPlan(fine_tune_epochs=3)
    assert ContrastiveSettings(contrastive=True).plan_for(plan).fine_tune_epochs == 0
    assert ContrastiveSettings().plan_for(plan) is plan


@pytest.mark.acceptance
def test_contrastive_tuning_pulls_same_label_sentences_together(minilm_dir, sst2_dir, tmp_path):
    """MiniLM tuned on the pairs of 8 + 8 SST-2 sentences (eight steps, at five times
    SetFit's rate so that eight steps move it): the mean cosine similarity of same-label
    pairs minus that of different-label pairs grows on those sentences (the loss's aim),
    the encoder is frozen again after it, and a resumed run restores the tuned weights
    instead of training."""
    import keras

    from templates.data.texts import load_text_splits
    from templates.models.text_encoders import pretrained_text_encoder
    from templates.training.checkpoints import TrainingState
    from templates.training.contrastive import contrastive_tune
    from templates.training.label_curve import stratified_subset

    splits = load_text_splits(sst2_dir / "stsa.binary.train", sst2_dir / "stsa.binary.dev",
                              sst2_dir / "stsa.binary.test")
    rows = stratified_subset(splits.labels["train"], 8, seed=2)
    texts, labels = [splits.train.texts[row] for row in rows], splits.labels["train"][rows]
    same = labels[:, None] == labels[None, :]

    def gap(transfer):
        vectors = transfer.backbone.predict(transfer.encode(texts), verbose=0)
        cosines = vectors @ vectors.T  # unit-length vectors
        off_diagonal = ~np.eye(len(texts), dtype=bool)
        return cosines[same & off_diagonal].mean() - cosines[~same].mean()

    transfer = pretrained_text_encoder(str(minilm_dir), 2, sequence_length=48)
    before = gap(transfer)
    details = contrastive_tune(transfer, texts, labels, ContrastiveSettings(
        contrastive=True, contrastive_pairs=4, contrastive_learning_rate=1e-4), seed=2,
        state=TrainingState(tmp_path / "state"))
    after = gap(transfer)
    assert details["pairs"] == 2 * 4 * 16 and details["steps"] == 8
    assert after > before + 0.05, (before, after)
    assert not transfer.backbone.trainable_weights
    keras.backend.clear_session()
    again = pretrained_text_encoder(str(minilm_dir), 2, sequence_length=48)
    resumed = contrastive_tune(again, texts, labels, ContrastiveSettings(
        contrastive=True, contrastive_pairs=4, contrastive_learning_rate=1e-4), seed=2,
        state=TrainingState(tmp_path / "state", resume=True))
    assert resumed["loss"] == details["loss"]
    assert gap(again) == pytest.approx(after, abs=1e-4)


@pytest.mark.acceptance
def test_the_encoder_recipe_few_shot_option_runs_and_predicts(minilm_dir, sst2_dir,
                                                               subprocess_env, tmp_path):
    """Issue 39's acceptance: ``--contrastive`` on MiniLM with 16 labelled sentences
    (4 pairs of each kind per sentence and 2 head epochs, to keep it short; validation and
    test: 150 dev sentences each); metrics.json says what the pairs were,
    fine-tuning did not run, and recipes.predict classifies with the saved model."""
    held = (sst2_dir / "stsa.binary.dev").read_text(encoding="utf-8").splitlines()
    (tmp_path / "validation.txt").write_text("\n".join(held[:150]) + "\n", encoding="utf-8")
    (tmp_path / "test.txt").write_text("\n".join(held[150:300]) + "\n", encoding="utf-8")
    out = tmp_path / "few_shot"
    result = subprocess.run(
        [sys.executable, "-m", "recipes.text_encoder_classification", "--preset",
         str(minilm_dir), "--train", str(sst2_dir / "stsa.binary.train"),
         "--validation", str(tmp_path / "validation.txt"), "--test", str(tmp_path / "test.txt"),
         "--train-size", "16", "--contrastive", "--contrastive-pairs", "4", "--seed", "1",
         "--head-epochs", "2",  # 32 epochs of one batch (TransferPlan.head_epoch_factor)
         "--output-dir", str(out)],
        env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    tuned = metrics["contrastive"]
    assert tuned["contrastive"] and tuned["texts"] == 16 and tuned["pairs"] == 2 * 4 * 16
    assert tuned["pairs"] == 2 * tuned["positive_pairs"] and len(tuned["loss"]) == 1
    assert metrics["plan"]["fine_tune_epochs"] == 0 and "fine_tune" not in metrics
    assert (out / "checkpoints" / "contrastive.done.json").is_file()
    predicted = subprocess.run(
        [sys.executable, "-m", "recipes.predict", str(out), "--text",
         "a gripping, funny and moving film", "--text", "a dull, boring and lifeless mess"],
        env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = [line.split() for line in predicted.stdout.splitlines() if "%" in line]
    assert len(lines) == 2 and {line[0] for line in lines} <= {"0", "1"}, predicted.stdout
