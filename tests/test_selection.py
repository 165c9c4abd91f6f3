"""Choosing the source: the estimates on purpose-built features, the ranking and its
verdict on small models, the backbone spelling, and the recipes' --select-from."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest

from templates.data.batches import array_batches
from templates.models.backbone_spelling import parse_backbone
from templates.selection import transferability
from templates.selection.ranking import (
    Candidate,
    SelectionBudget,
    rank_cuts,
    rank_sources,
)


def separable(examples=300, dimensions=16, signal=2.0, seed=0):
    """Features whose first dimension carries the label (plus noise), and pure noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, examples)
    noise = rng.normal(size=(examples, dimensions))
    informative = noise.copy()
    informative[:, 0] += signal * (2 * labels - 1)
    return informative, rng.normal(size=(examples, dimensions)), labels


def reference_logme(features, labels):
    """LogME as the paper writes it: A = alpha I + beta F^T F, its inverse and
    determinant taken directly, the same fixed point."""
    f = features.astype(np.float64)
    n, d = f.shape
    evidences = []
    for label in np.unique(labels):
        y = (labels == label).astype(np.float64)
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            a = alpha * np.eye(d) + beta * f.T @ f
            m = beta * np.linalg.solve(a, f.T @ y)
            gamma = float(np.sum(beta * np.linalg.eigvalsh(f.T @ f)
                                 / (alpha + beta * np.linalg.eigvalsh(f.T @ f))))
            new_alpha = gamma / (m @ m + 1e-5)
            new_beta = (n - gamma) / (np.sum((y - f @ m) ** 2) + 1e-5)
            done = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < 1e-2
            alpha, beta = new_alpha, new_beta
            if done:
                break
        a = alpha * np.eye(d) + beta * f.T @ f
        m = beta * np.linalg.solve(a, f.T @ y)
        evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta)
                    - 0.5 * np.linalg.slogdet(a)[1] - beta / 2 * np.sum((y - f @ m) ** 2)
                    - alpha / 2 * m @ m - n / 2 * math.log(2 * math.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


@pytest.mark.parametrize("examples,dimensions", [(200, 12), (20, 40)])
def test_logme_matches_the_direct_formula(examples, dimensions):
    informative, _, labels = separable(examples, dimensions)
    assert transferability.logme(informative, labels) == pytest.approx(
        reference_logme(informative, labels), rel=1e-6, abs=1e-6)


def test_every_estimate_prefers_features_that_carry_the_label():
    informative, noise, labels = separable()
    train, validation = slice(0, 200), slice(200, None)
    for name, score in [
        ("logme", lambda f: transferability.logme(f[train], labels[train])),
        ("h_score", lambda f: transferability.h_score(f[train], labels[train])),
        ("knn", lambda f: transferability.knn_accuracy(f[train], labels[train],
                                                       f[validation], labels[validation])),
        ("linear_probe", lambda f: transferability.linear_probe_accuracy(
            f[train], labels[train], f[validation], labels[validation])),
    ]:
        assert score(informative) > score(noise), name
    # The probes are accuracies: the label's dimension gives about 0.98, noise about 0.5.
    assert transferability.linear_probe_accuracy(
        informative[train], labels[train], informative[validation], labels[validation]) > 0.9


def test_leep_rewards_source_classes_that_line_up_with_the_target():
    labels = np.array([0, 0, 1, 1, 2, 2])
    aligned = np.eye(3)[labels] * 0.9 + 0.1 / 3
    uniform = np.full((6, 3), 1 / 3)
    assert transferability.leep(aligned, labels) > transferability.leep(uniform, labels)
    assert transferability.leep(uniform, labels) == pytest.approx(math.log(1 / 3))
    assert transferability.leep(np.eye(3)[labels], labels) == pytest.approx(0.0, abs=1e-9)


def test_feature_vectors_pool_as_the_head_does():
    maps = np.arange(2 * 2 * 2 * 3, dtype="float32").reshape(2, 2, 2, 3)
    assert transferability.feature_vectors(maps).shape == (2, 3)
    assert transferability.feature_vectors(maps, "flatten").shape == (2, 12)
    sequence = np.array([[[1.0, 1.0], [3.0, 3.0], [0.0, 0.0]]])  # the padding row is zeros
    np.testing.assert_allclose(transferability.feature_vectors(sequence), [[2.0, 2.0]])
    with pytest.raises(ValueError, match="neither vectors"):
        transferability.feature_vectors(np.zeros(3))


def test_backbone_spellings(tmp_path):
    choice = parse_backbone("MobileNet,alpha=0.25@-30")
    assert (choice.name, choice.alpha, choice.weights, choice.cut_at) == (
        "MobileNet", 0.25, "imagenet", -30)
    named = parse_backbone("MobileNet,alpha=0.25,image_size=128@conv_pw_6_relu",
                           weights="none")
    assert (named.image_size, named.cut_at, named.weights) == (128, "conv_pw_6_relu", None)
    assert parse_backbone("MobileNet,weights=none", alpha=0.5).alpha == 0.5
    assert parse_backbone("MobileNet,weights=none").weights_name == "none"
    folder = tmp_path / "my@preset"
    folder.mkdir()
    hub = parse_backbone(f"keras_hub:{folder}")  # an "@" inside an existing folder stays
    assert hub.name == f"keras_hub:{folder}" and hub.cut_at is None
    assert parse_backbone(f"keras_hub:{tmp_path}@-3").cut_at == -3
    for bad, message in [("MobileNet,depth=3", "unknown option 'depth'"),
                         ("MobileNet,alpha", "not option=value"),
                         ("MobileNet,alpha=wide", "could not convert"),
                         ("MobileNet@", "nothing after '@'")]:
        with pytest.raises(ValueError, match=message):
            parse_backbone(bad)


# Small models: an "informative" backbone passes the inputs through (the label is in
# them), a "scrambled" one multiplies them by a random matrix then keeps one noisy
# dimension of it, so little of the label survives.
def target_data(seed=0):
    informative, _, labels = separable(240, 8, signal=1.5, seed=seed)
    return (informative[:160].astype("float32"), labels[:160].astype("int32")), \
           (informative[160:].astype("float32"), labels[160:].astype("int32"))


def small_transfer(kind: str, seed: int = 0):
    from templates.models.heads import classification_head
    from templates.models.transfer_model import TransferModel

    inputs = keras.Input((8,))
    if kind == "informative":
        outputs = keras.layers.Dense(8, kernel_initializer="identity", name="block")(inputs)
    else:
        projection = np.random.default_rng(seed).normal(size=(8, 8)).astype("float32")
        projection[0] = 0.0  # the label's dimension is dropped
        outputs = keras.layers.Dense(8, name="block", trainable=False)(inputs)
        backbone = keras.Model(inputs, outputs)
        backbone.layers[-1].set_weights([projection, np.zeros(8, "float32")])
    backbone = keras.Model(inputs, outputs, name=f"{kind}_backbone")
    return TransferModel(backbone, classification_head((8,), 2), name=f"{kind}_model")


def test_rank_sources_orders_candidates_writes_the_table_and_keeps_the_pick(tmp_path):
    train, validation = target_data()
    batches = array_batches(*train, batch_size=32, seed=0)
    validation_batches = array_batches(*validation, batch_size=64, shuffle=False)
    lines = []
    selection = rank_sources(
        [Candidate("scrambled", lambda: small_transfer("scrambled")),
         Candidate("informative", lambda: small_transfer("informative"))],
        batches, validation_batches, SelectionBudget(bootstrap=20), progress=lines.append)
    assert [row.candidate for row in selection.candidates] == ["informative", "scrambled"]
    assert [row.rank for row in selection.candidates] == [1, 2]
    assert selection.verdict == "clear" and selection.candidates[0].top_share >= 0.8
    assert any("[2/2] informative" in line for line in lines)
    best = selection.candidates[0]
    assert best.linear_probe > 0.8 and best.logme is not None and best.leep is None
    assert best.feature_seconds >= 0 and best.examples == 160 and best.dimensions == 8

    # The pick's features are those the head phase caches, and run_transfer takes them.
    features, labels = selection.features
    from templates.training.phases import head_training_features
    expected, expected_labels = head_training_features(selection.transfer, batches)
    np.testing.assert_allclose(features, expected, rtol=1e-6)
    np.testing.assert_array_equal(labels, expected_labels)
    from templates.training.plan import TransferPlan
    from templates.training.run import run_transfer
    run = run_transfer(selection.transfer, batches, validation_batches,
                       TransferPlan(head_epochs=2, fine_tune_epochs=0, patience=0,
                                    restore_best=False), features=selection.features,
                       verbose=0)
    assert run.phases["head"].epochs == 2
    with pytest.raises(ValueError, match="augmented_views or cache_features=False"):
        run_transfer(selection.transfer, batches, validation_batches,
                     TransferPlan(cache_features=False), features=selection.features)

    selection.write(tmp_path, "small")
    written = json.loads((tmp_path / "selection.json").read_text())
    assert written["pick"] == "informative" and written["verdict"] == "clear"
    assert [row["candidate"] for row in written["candidates"]] == ["informative", "scrambled"]
    assert {"rank", "linear_probe", "knn", "logme", "leep", "h_score", "feature_seconds",
            "top_share"} <= set(written["candidates"][0])
    assert (tmp_path / "selection.png").stat().st_size > 5_000
    assert "Pick: informative" in selection.summary_text()


def test_identical_candidates_are_too_close_to_call():
    train, validation = target_data(seed=1)
    batches = array_batches(*train, batch_size=32, seed=0)
    validation_batches = array_batches(*validation, batch_size=64, shuffle=False)
    selection = rank_sources(
        [Candidate(name, lambda: small_transfer("informative")) for name in ("a", "b")],
        batches, validation_batches, SelectionBudget(bootstrap=20), progress=None)
    # Same features, same scores: neither stays on top by itself.
    assert selection.candidates[0].linear_probe == selection.candidates[1].linear_probe
    assert selection.verdict == "too close to call"
    assert "Too close to call between" in selection.summary_text()


def test_rank_cuts_and_budget_errors():
    train, validation = target_data(seed=2)
    batches = array_batches(*train, batch_size=32, seed=0)
    validation_batches = array_batches(*validation, batch_size=64, shuffle=False)

    def build_at(cut):
        return small_transfer("informative" if cut == "deep" else "scrambled")

    selection = rank_cuts(build_at, ["shallow", "deep"], batches, validation_batches,
                          SelectionBudget(bootstrap=0, rank_by="logme"), progress=None)
    assert selection.pick == "deep" and selection.verdict == "clear"
    assert selection.candidates[0].details == {"cut_at": "deep"}
    with pytest.raises(ValueError, match="unknown rank_by"):
        SelectionBudget(rank_by="accuracy")
    with pytest.raises(ValueError, match="No candidate has a leep"):
        rank_sources([Candidate("a", lambda: small_transfer("informative"))], batches,
                     validation_batches, SelectionBudget(rank_by="leep"), progress=None)
    with pytest.raises(ValueError, match="names must differ"):
        rank_sources([Candidate("a", lambda: small_transfer("informative"))] * 2, batches,
                     validation_batches, progress=None)


def run_recipe(module, arguments, env, timeout=900):
    return subprocess.run([sys.executable, "-m", module, *arguments], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          cwd=env["PYTHONPATH"].split(":")[0])


def test_text_recipe_ranks_word_vector_sources(sst2_dir, shared_dir, subprocess_env,
                                               tmp_path):
    out = tmp_path / "select"
    result = run_recipe("recipes.glove_text_classification", [
        "--train", str(sst2_dir / "stsa.binary.train"), "--validation",
        str(sst2_dir / "stsa.binary.dev"), "--test", str(sst2_dir / "stsa.binary.test"),
        "--train-size", "1000", "--vectors",
        str(shared_dir / "data" / "glove" / "glove.6B.50d.10k.txt"),
        "--select-from", "glove", "word2vec", "glove+word2vec", "random", "--select-only",
        "--output-dir", str(out)], subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    selection = json.loads((out / "selection.json").read_text())
    assert sorted(row["candidate"] for row in selection["candidates"]) == sorted(
        ["glove", "word2vec", "glove+word2vec", "random"])
    assert selection["candidates"][-1]["candidate"] == "random"
    assert "Selecting [4/4] random" in result.stdout
    assert not (out / "metrics.json").exists() and (out / "selection.png").is_file()


CATS_POOL = ["MobileNet,alpha=0.25", "MobileNet,alpha=0.25@-30", "MobileNet,alpha=0.25@-60",
             "MobileNet,alpha=0.25,weights=none"]


@pytest.mark.acceptance
def test_cats_recipe_ranks_backbones_then_trains_the_pick(cats_vs_dogs_dir, subprocess_env,
                                                         tmp_path):
    """Issue 24's acceptance: the four candidates ranked, the random-weight one last;
    without --select-only the pick trains and metrics.json names it."""
    data = ["--data-dir", str(cats_vs_dogs_dir / "train")]
    only = tmp_path / "only"
    result = run_recipe("recipes.cats_vs_dogs", [*data, "--select-from", *CATS_POOL,
                                                 "--select-only", "--output-dir", str(only)],
                        subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    selection = json.loads((only / "selection.json").read_text())
    ranked = [row["candidate"] for row in selection["candidates"]]
    assert sorted(ranked) == sorted(CATS_POOL) and ranked[-1] == CATS_POOL[-1]
    assert [row["rank"] for row in selection["candidates"]] == [1, 2, 3, 4]
    for row in selection["candidates"]:
        assert row["feature_seconds"] > 0 and row["linear_probe"] is not None
    assert (only / "selection.png").stat().st_size > 10_000
    assert not (only / "metrics.json").exists()

    trained = tmp_path / "trained"
    result = run_recipe("recipes.cats_vs_dogs", [
        *data, "--select-from", CATS_POOL[0], CATS_POOL[-1], "--head-epochs", "3",
        "--fine-tune-epochs", "1", "--output-dir", str(trained)], subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["selection"]["pick"] == metrics["backbone"] == CATS_POOL[0]
    assert metrics["val_accuracy"] > 0.8


@pytest.mark.acceptance
def test_digits_recipe_ranks_its_source_tasks_with_the_unrelated_one_last(
        subprocess_env, tmp_path):
    out = tmp_path / "digits"
    result = run_recipe("recipes.develop_model_digits",
                        ["--select-from", "all", "--select-only", "--output-dir", str(out)],
                        subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    selection = json.loads((out / "selection.json").read_text())
    ranked = [row["candidate"] for row in selection["candidates"]]
    assert sorted(ranked) == ["loops", "low_digits", "parity", "unrelated"]
    assert ranked[-1] == "unrelated"
    for row in selection["candidates"]:  # each source passed its baseline check first
        assert row["details"]["source_check"]["skilful"] is True
        assert row["leep"] is not None  # every source task has its own head
    for task in ranked:
        assert (out / "source" / task / "source_check.json").is_file()


def test_digits_help_lists_the_source_tasks(subprocess_env):
    result = run_recipe("recipes.develop_model_digits", ["--help"], subprocess_env)
    assert result.returncode == 0
    for name in ("--select-from", "--select-only", "--source-task", "parity", "low_digits",
                 "loops", "unrelated"):
        assert name in result.stdout


@pytest.mark.acceptance
def test_cats_reuse_sweep_estimate_ranks_cuts_without_training_them(
        cats_vs_dogs_dir, subprocess_env, tmp_path):
    out = tmp_path / "estimate"
    result = run_recipe("recipes.cats_vs_dogs", [
        "--data-dir", str(cats_vs_dogs_dir / "train"), "--backbone", "MobileNet,alpha=0.25",
        "--head-epochs", "1", "--fine-tune-epochs", "0", "--no-find-learning-rates",
        "--reuse-sweep", "3",
        "--estimate", "--output-dir", str(out)], subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert "reuse_sweep" not in metrics and not (out / "reuse_sweep.json").exists()
    estimates = json.loads((out / "reuse_estimates" / "selection.json").read_text())
    cuts = [row["candidate"] for row in estimates["candidates"]]
    assert sorted(cuts) == sorted(metrics["reuse_estimates"]["candidates"]) and len(cuts) == 3
    # The deepest block end (the whole backbone) fits the photos best; the first worst.
    assert cuts[0] == "conv_pw_13_relu" and cuts[-1] == "conv_pw_1_relu"


def test_the_selection_benchmark_scores_a_ranking_against_the_trained_candidates():
    from benchmarks.selection import kendall_tau, score_pool_seed, summarise

    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert kendall_tau([1, 1, 1], [1, 2, 3]) is None
    truth = {"a": {"test_accuracy": 0.90, "seconds": 60.0},
             "b": {"test_accuracy": 0.895, "seconds": 40.0},
             "c": {"test_accuracy": 0.50, "seconds": 50.0}}
    selection = {"verdict": "too close to call", "pick": "b", "seconds": 15.0, "candidates": [
        {"candidate": "b", "rank": 1, "logme": -0.1, "leep": None, "mean_rank": 1.0},
        {"candidate": "a", "rank": 2, "logme": -0.2, "leep": None, "mean_rank": 2.0},
        {"candidate": "c", "rank": 3, "logme": -0.9, "leep": None, "mean_rank": 3.0}]}
    scored = score_pool_seed(truth, selection)
    final = scored["estimates"]["final"]
    assert final["top"] == "b" and not final["top_is_best"] and final["top_within_1_point"]
    assert final["tau"] == pytest.approx(1 / 3)
    assert "leep" not in scored["estimates"]  # no candidate has it
    summary = summarise({1: scored})
    assert summary["time_ratio"] == pytest.approx(15 / 150)
    assert summary["close_calls"] == 1 and summary["final"]["top_within_1_point"] == 1


def test_the_selection_benchmark_replaces_only_the_rows_of_the_pools_it_measured(tmp_path):
    from benchmarks.selection import MARKER, markdown, write_docs

    def summary(tau, *groups):
        return {group: {"final": {"tau_mean": tau, "tau_std": 0.0, "top_is_best": 1,
                                  "top_within_1_point": 1, "cases": 1},
                        "time_ratio": 0.1, "close_calls": 0} for group in groups}

    docs = tmp_path / "results.md"
    first = markdown({"pools": {"cats_cuts": summary(0.1, "selection", "reported"),
                                "digits": summary(0.2, "reported")}})
    docs.write_text(f"before\n{MARKER}\n{first}\n{MARKER}\nafter\n")
    write_docs(str(docs), {"pools": {"cats_cuts": summary(0.9, "reported"),
                                     "cats_128": summary(0.5, "reported")}})
    text = docs.read_text()
    rows = [line for line in text.split(MARKER)[1].strip().splitlines()[2:]]
    assert [tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows] == [
        ("cats_cuts", "selection"), ("cats_cuts", "reported"), ("cats_128", "reported"),
        ("digits", "reported")]
    assert ["+0.10", "+0.90", "+0.50", "+0.20"] == [row.split("|")[4].split()[0]
                                                    for row in rows]
    assert text.startswith("before\n") and text.endswith(f"{MARKER}\nafter\n")
