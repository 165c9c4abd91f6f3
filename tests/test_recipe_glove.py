"""The GloVe text-classification recipe: contract on purpose-built data, acceptance on SST-2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from templates.models.layers import iterate_layers
from templates.training.saving import load_model

RECIPE = "recipes.glove_text_classification"
COLOURS = {"warm": ["red", "orange", "amber", "scarlet", "crimson", "gold"],
           "cool": ["blue", "teal", "azure", "navy", "cyan", "indigo"],
           "neutral": ["grey", "beige", "taupe", "ivory", "ash", "stone"]}


def run_recipe(arguments, env, timeout=900):
    return subprocess.run([sys.executable, "-m", RECIPE, *arguments], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    """Three classes with string labels; test sentences use words training never shows.

    The vectors file places each class's colour words together, so only the pretrained
    vectors can classify the held-out words.
    """
    folder = tmp_path_factory.mktemp("colours")
    generator = np.random.default_rng(0)
    seen = {label: words[:3] for label, words in COLOURS.items()}
    unseen = {label: words[3:] for label, words in COLOURS.items()}

    def write(name, words_by_label, count):
        lines = []
        for index in range(count):
            label = list(COLOURS)[index % 3]
            word = generator.choice(words_by_label[label])
            lines.append(f"{label}\tthe wall is painted {word} today")
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(folder / name)

    paths = {"train": write("train.tsv", seen, 90), "validation": write("dev.tsv", seen, 30),
             "test": write("test.tsv", unseen, 30)}
    rows = []
    filler = ["the", "wall", "is", "painted", "today"]
    for position, (label, words) in enumerate(COLOURS.items()):
        for word in words:
            vector = generator.normal(scale=0.2, size=12)
            vector[position] += 2.0
            rows.append(word + " " + " ".join(f"{value:.4f}" for value in vector))
    for word in filler:
        rows.append(word + " " + " ".join(f"{value:.4f}" for value in
                                          generator.normal(scale=0.2, size=12)))
    (folder / "vectors.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    paths["vectors"] = str(folder / "vectors.txt")
    return paths


def test_help_lists_the_contract(subprocess_env):
    result = run_recipe(["--help"], subprocess_env)
    assert result.returncode == 0
    for flag in ("--train", "--validation", "--test", "--vectors", "--architecture",
                 "--head-epochs", "--seed", "--output-dir", "--compare-scratch",
                 "--assert-accuracy-at-least"):
        assert flag in result.stdout


def test_recipe_outputs_and_compare_scratch_on_multiclass_data(colour_data, subprocess_env,
                                                               tmp_path):
    out = tmp_path / "run"
    result = run_recipe([
        "--train", colour_data["train"], "--validation", colour_data["validation"],
        "--test", colour_data["test"], "--vectors", colour_data["vectors"],
        "--architecture", "pooled", "--head-epochs", "25", "--fine-tune-epochs", "1",
        "--learning-rate", "0.01", "--batch-size", "16", "--seed", "3",
        "--output-dir", str(out), "--compare-scratch", "--assert-accuracy-at-least", "0.9",
    ], subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_names"] == ["cool", "neutral", "warm"]
    assert metrics["test_accuracy"] >= 0.9   # unseen colour words, through the vectors
    assert metrics["vocabulary_size"] == 2 + 18 + 5  # padding, OOV, the vectors' words
    assert metrics["oov_rate"] == 0.0
    # The length fits 95% of the training texts; the texts read only to it are counted.
    assert metrics["texts_cut"]["sequence_length"] == metrics["sequence_length"]
    assert "tokens, read to that length" in result.stdout or "No text is longer" in result.stdout
    for name in ("history.json", "learning_curves.png", "model.keras", "labels.txt",
                 "transfer_report.json", "transfer_report.png", "saved_model"):
        assert (out / name).exists(), name
    # The scratch model never saw the test words, so it cannot do better than chance
    # on them; the report says so on the same keys as every other recipe.
    report = json.loads((out / "transfer_report.json").read_text())
    for side in ("transfer", "scratch"):
        assert {"start", "slope", "asymptote", "test_accuracy"} <= set(report[side])
    assert metrics["pretrained"]["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert metrics["scratch"]["test_accuracy"] < 0.6
    assert metrics["transfer_report"]["test_accuracy"] > 0.3

    # The saved model takes raw strings and needs nothing rebuilt.
    model = load_model(out / "model.keras")
    texts = tf.constant([["The wall is painted SCARLET today."], ["the wall is painted navy"]])
    labels = (out / "labels.txt").read_text().split()
    predicted = [labels[index] for index in model.predict(texts, verbose=0).argmax(axis=1)]
    assert predicted == ["warm", "cool"]
    exported = tf.saved_model.load(str(out / "saved_model"))
    served = exported.serve(texts).numpy()
    np.testing.assert_allclose(served, model.predict(texts, verbose=0), atol=1e-5)


def test_in_domain_vectors_sit_beside_the_pretrained_ones(colour_data, subprocess_env,
                                                       tmp_path):
    out = tmp_path / "run"
    arguments = [
        "--train", colour_data["train"], "--validation", colour_data["validation"],
        "--test", colour_data["test"], "--vectors", colour_data["vectors"],
        "--architecture", "pooled", "--head-epochs", "25", "--fine-tune-epochs", "1",
        "--learning-rate", "0.01", "--batch-size", "16", "--seed", "3",
        "--output-dir", str(out)]
    result = run_recipe(arguments + ["--in-domain-vectors", "on"], subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["vectors"] == colour_data["vectors"] + " + in-domain word2vec"
    assert (out / "in_domain" / "word2vec.txt").is_file()
    # 12 GloVe-style dimensions + 50 of word2vec on the training sentences; the test's
    # colour words never occur in training, so only their pretrained half places them.
    model = load_model(out / "model.keras")
    embedding = next(layer for layer in iterate_layers(model)
                     if layer.__class__.__name__ == "PretrainedEmbedding")
    assert embedding.output_dim == 62
    assert metrics["test_accuracy"] >= 0.9
    # auto: 90 short training sentences are far below the word count that pays.
    auto = run_recipe(arguments[:-1] + [str(tmp_path / "auto")], subprocess_env)
    assert auto.returncode == 0, auto.stdout[-3000:] + auto.stderr[-3000:]
    assert json.loads((tmp_path / "auto" / "metrics.json").read_text())["vectors"] == (
        colour_data["vectors"])
    assert not (tmp_path / "auto" / "in_domain").exists()


@pytest.mark.acceptance  # whole recipe runs, the predictor and TFLite
def test_training_options_evaluation_predictor_and_tflite(colour_data, subprocess_env,
                                                          tmp_path):
    """Issue 7 end to end on the text recipe: finder, schedule, discriminative rates,
    TensorBoard, evaluation report, TFLite parity and the predictor."""
    out = tmp_path / "run"
    result = run_recipe([
        "--train", colour_data["train"], "--validation", colour_data["validation"],
        "--test", colour_data["test"], "--vectors", colour_data["vectors"],
        "--architecture", "pooled", "--head-epochs", "8", "--fine-tune-epochs", "2",
        "--batch-size", "16", "--seed", "4", "--output-dir", str(out),
        "--find-learning-rates", "--schedule", "one_cycle", "--discriminative-factor", "2.6",
        "--tensorboard", str(tmp_path / "logs"), "--export-tflite",
    ], subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for phase, (low, high) in (("head", (1e-4, 0.3)), ("fine_tune", (1e-6, 3e-3))):
        finding = json.loads((out / f"lr_finder_{phase}.json").read_text())
        # The rule (the loss minimum / 10) may point below the sweep when the loss is
        # lowest at its start; a suggestion outside the phase's bounds is not used, and
        # the file says why.
        assert low <= finding["used"] <= high, finding
        assert finding["used"] == finding["suggestion"] or finding["fallback"], finding
        assert metrics["learning_rates"][phase] == finding["used"]
        assert (out / f"lr_finder_{phase}.png").stat().st_size > 10_000
    assert metrics["plan"]["schedule"] == "one_cycle"
    assert metrics["plan"]["discriminative_factor"] == 2.6
    assert {path.name for path in (tmp_path / "logs").iterdir()} == {"head", "fine_tune"}

    # The evaluation report agrees with the recipe's own test accuracy.
    evaluation = json.loads((out / "evaluation" / "evaluation.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert evaluation["class_names"] == ["cool", "neutral", "warm"]
    assert sum(map(sum, evaluation["confusion_matrix"])) == evaluation["examples"]
    assert (out / "evaluation" / "confusion_matrix.png").is_file()
    assert "| warm |" in (out / "evaluation" / "report.md").read_text()

    # Predictor round trip: same answers as the saved model, with the labels file.
    from templates.export.formats import tflite_predict
    from templates.export.predictor import Predictor

    texts = ["The wall is painted SCARLET today.", "the wall is painted navy",
             "the wall is painted grey"]
    predictor = Predictor(out)
    assert predictor.kind == "text" and predictor.class_names == ["cool", "neutral", "warm"]
    probabilities = predictor.predict_probabilities(texts)
    model = load_model(out / "model.keras")
    np.testing.assert_allclose(probabilities, model.predict(tf.constant([[t] for t in texts]),
                                                            verbose=0), atol=1e-6)
    names = predictor.class_names
    assert [p.label for p in predictor.predict(texts)] == [
        names[index] for index in probabilities.argmax(axis=1)]
    assert predictor.predict(texts)[1].label == "cool"  # "navy": a training word

    # TFLite takes token ids (no string ops); fed the saved vectoriser's ids it matches.
    assert (out / "tflite" / "labels.txt").read_text().split() == ["cool", "neutral", "warm"]
    vectorizer = model.layers[1]
    vocabulary = (out / "tflite" / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert vocabulary == vectorizer.get_vocabulary()
    token_ids = vectorizer(tf.constant([[t] for t in texts])).numpy()
    lite = tflite_predict(out / "tflite" / "model.tflite", token_ids)
    np.testing.assert_allclose(lite, probabilities, atol=1e-5)

    command = [sys.executable, "-m", "recipes.predict", str(out), "--text", texts[1],
               "--output", str(tmp_path / "predictions.json")]
    printed = subprocess.run(command, env=subprocess_env, capture_output=True, text=True,
                             timeout=300, cwd=subprocess_env["PYTHONPATH"].split(":")[0])
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "cool" in printed.stdout
    saved = json.loads((tmp_path / "predictions.json").read_text())
    assert saved[0]["label"] == "cool" and saved[0]["input"] == texts[1]


def test_bad_inputs_give_one_line_errors(colour_data, subprocess_env, tmp_path):
    bad = tmp_path / "ragged.txt"
    bad.write_text("the 0.1 0.2\ncat 0.3\n", encoding="utf-8")
    result = run_recipe(["--train", colour_data["train"], "--vectors", str(bad),
                         "--output-dir", str(tmp_path / "out")], subprocess_env)
    assert result.returncode == 2
    assert "ragged.txt line 2: 1 values after the word 'cat' where 2 were expected" in result.stderr
    assert "Traceback" not in result.stderr

    only_test_label = tmp_path / "test.tsv"
    only_test_label.write_text("purple\tthe wall is painted red\n", encoding="utf-8")
    result = run_recipe(["--train", colour_data["train"], "--test", str(only_test_label),
                         "--vectors", colour_data["vectors"],
                         "--output-dir", str(tmp_path / "out")], subprocess_env)
    assert result.returncode == 2
    assert "labels ['purple'] never appear in the training data" in result.stderr


def test_offline_without_data_names_the_flags(subprocess_env, tmp_path):
    env = dict(subprocess_env, HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               KERAS_HOME=str(tmp_path / "keras"))
    result = run_recipe(["--output-dir", str(tmp_path / "out")], env)
    assert result.returncode == 2
    assert "stsa.binary.train" in result.stderr and "--train" in result.stderr
    assert not os.path.exists(tmp_path / "keras" / "datasets" / "sst2" / "stsa.binary.train")


# The acceptance seeds. The defaults were chosen on seeds 11-13 (docs/results.md), never
# on these, and every figure asserted is a mean over all of them.
SEEDS = (1, 2, 3)
# Full SST-2, the defaults (glove.6B.50d + word2vec trained on the training sentences):
# over the 6 seeds measured (11-13 to choose, 1-3 here) the test accuracy is 0.822 on
# average (0.812-0.829, sd 0.007) and the gain over random embeddings +2.1 points (+0.1
# to +4.5, sd 1.4). A 3-seed mean then has a spread of about 0.4 points (accuracy) and
# 0.8 points (gain); the bars sit about 2 of those below the population means, so a
# landing does not hang on rounding. Measured on seeds 1-3: 0.8215 and +1.3 points, the
# issue's target (0.82 and +1 point), with tf.data's shuffle; 0.818 and +1.9 since
# TensorFlow reads the other backends' epoch orders (commit 7166957, 2026-12-04); the
# population figures above are the older orders'. docs/results.md has the measurements.
FULL_SST2_MEAN_BAR = 0.815
FULL_SST2_GAIN_BAR = 0.005


def sst2_run(sst2_dir, out, env, *extra, compare=True):
    arguments = ["--train", str(sst2_dir / "stsa.binary.train"),
                 "--validation", str(sst2_dir / "stsa.binary.dev"),
                 "--test", str(sst2_dir / "stsa.binary.test"),
                 "--output-dir", str(out), *(["--compare-scratch"] if compare else []), *extra]
    result = run_recipe(arguments, env, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def over_seeds(recipe_runs, *extra):
    """GloVe and random-embedding test accuracies, one pair per acceptance seed (the runs
    are shared with tests/test_backends.py, which compares JAX with them)."""
    runs = [recipe_runs.sst2(seed, *extra)[1] for seed in SEEDS]
    glove = np.array([run["pretrained"]["test_accuracy"] for run in runs])
    scratch = np.array([run["scratch"]["test_accuracy"] for run in runs])
    assert np.allclose(glove, [run["test_accuracy"] for run in runs])
    return runs, glove, scratch


@pytest.mark.acceptance
@pytest.mark.xdist_group("sst2_1000")  # shares the TensorFlow runs with tests/test_backends.py
def test_glove_beats_random_embeddings_on_1000_sst2_sentences(recipe_runs, sst2_dir,
                                                              subprocess_env, tmp_path):
    # Low data is where the vectors pay: mean gain of at least 3 points over 3 seeds.
    runs, glove, scratch = over_seeds(recipe_runs, "--train-size", "1000")
    assert all(run["examples"]["train"] == 1000 for run in runs)
    assert all(run["vectors"] == "glove.6B.50d" for run in runs)  # too few words for word2vec
    assert (glove - scratch).mean() >= 0.03, (glove, scratch)
    # --find-learning-rates finishes every time and does about as well as the defaults (the rule,
    # minimum / 10, was chosen on seeds 11-13). Measured on seeds 1-3: 0.757 against
    # 0.753 with tf.data's shuffle, 0.752 against 0.763 since TensorFlow reads the same
    # epoch orders as the other backends. One seed's accuracy varies by about 1.1 points
    # here, so a difference of two 3-seed means has a spread of about 0.9: the bar, 2
    # points (about 2 spreads), catches a finder that picks a bad rate, not the noise.
    found = np.array([sst2_run(sst2_dir, tmp_path / f"find_lr{seed}", subprocess_env,
                               "--train-size", "1000", "--seed", str(seed),
                               "--find-learning-rates", compare=False)["test_accuracy"]
                      for seed in SEEDS])
    assert found.mean() >= glove.mean() - 0.02, (glove, found)


@pytest.mark.acceptance
def test_full_sst2_mean_accuracy_and_gain_over_random_embeddings(recipe_runs):
    runs, glove, scratch = over_seeds(recipe_runs)
    assert all(run["examples"]["train"] == 6920 for run in runs)
    # 135,000 training words: --in-domain-vectors auto puts word2vec beside GloVe.
    assert all(run["vectors"] == "glove.6B.50d + in-domain word2vec" for run in runs)
    # Bars and the measurements behind them: docs/results.md, "SST-2, all sentences".
    assert glove.mean() >= FULL_SST2_MEAN_BAR, (glove, scratch)
    assert (glove - scratch).mean() >= FULL_SST2_GAIN_BAR, (glove, scratch)


@pytest.mark.acceptance  # issue 17 section 5: the develop-model path for text
def test_develop_vectors_are_checked_then_used_or_refused(sst2_dir, subprocess_env, tmp_path):
    # The user's unlabelled in-domain text: SST-2's training and validation sentences,
    # labels dropped (the test sentences stay unseen).
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("".join(line.split(" ", 1)[1] + "\n" for split in ("train", "dev")
                              for line in (sst2_dir / f"stsa.binary.{split}")
                              .read_text(encoding="utf-8").splitlines()), encoding="utf-8")
    # On these 7,800 sentences word2vec's word similarity (gensim's wordsim353) is
    # borderline: Spearman 0.08-0.12 against 0.03 to -0.03 for random vectors (the mean
    # of five draws), so clear of the 0.1 margin for seeds 1, 3 and 1337, not 0 and 2
    # (measured 2026-12-06; until then the test passed on its default seed's luck). The
    # run therefore allows an unskilled source and checks that the check is recorded.
    metrics = sst2_run(sst2_dir, tmp_path / "developed", subprocess_env, "--train-size",
                       "1000", "--develop-vectors", str(corpus), "--allow-unskilled",
                       compare=False)
    check = metrics["source_check"]
    assert check["skilful"] == (check["accuracy"] >= check["baseline_accuracy"]
                                + check["margin"])
    assert 0.05 <= check["accuracy"] <= 0.2 and abs(check["baseline_accuracy"]) < 0.1
    assert check["baseline"] == "random vectors" and metrics["vectors"] == f"word2vec:{corpus}"
    assert metrics["test_accuracy"] >= 0.6
    assert (tmp_path / "developed" / "word2vec" / "word2vec.txt").is_file()
    # Judged on analogies, the same small corpus is refused in one sentence, and nothing
    # is trained on it.
    refused = run_recipe(["--train", str(sst2_dir / "stsa.binary.train"), "--train-size",
                          "1000", "--develop-vectors", str(corpus), "--develop-evaluation",
                          "analogy", "--output-dir", str(tmp_path / "refused")],
                         subprocess_env)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "not clearly better" in refused.stderr and "analogy accuracy" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "refused" / "model.keras").exists()


def test_labels_and_texts_from_csv_files(colour_data, subprocess_env, tmp_path):
    # The same data as spreadsheets (text,label columns), one row without a label.
    def to_csv(source, name, extra=()):
        rows = ["text,label"] + [f'"{text}",{label}' for label, text in
                                 (line.split("\t") for line in
                                  open(source, encoding="utf-8").read().splitlines())]
        (tmp_path / name).write_text("\n".join(rows + list(extra)) + "\n", encoding="utf-8")
        return str(tmp_path / name)

    out = tmp_path / "run"
    result = run_recipe([
        "--train", to_csv(colour_data["train"], "train.csv", ['"a wall with no label",']),
        "--validation", to_csv(colour_data["validation"], "dev.csv"),
        "--test", to_csv(colour_data["test"], "test.csv"), "--vectors", colour_data["vectors"],
        "--architecture", "pooled", "--head-epochs", "25", "--fine-tune-epochs", "1",
        "--learning-rate", "0.01", "--batch-size", "16", "--seed", "3",
        "--output-dir", str(out)], subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["examples"] == {"train": 90, "validation": 30, "test": 30}
    assert metrics["skipped_lines"] == [{"source": str(tmp_path / "train.csv"),
                                         "where": "line 92", "reason": "no label"}]
    assert metrics["test_accuracy"] >= 0.9


@pytest.mark.acceptance  # the whole recipe, its scratch run and recipes.predict
def test_multi_label_texts(colour_data, subprocess_env, tmp_path):
    # Walls painted in one or two colour families: every family present is a label.
    # Test sentences use colour words training never shows: only the vectors know them.
    generator = np.random.default_rng(1)
    names = sorted(COLOURS)

    def write(name, start, stop, count):
        lines = []
        for index in range(count):
            chosen = sorted(generator.choice(names, size=1 + index % 2, replace=False))
            words = [generator.choice(COLOURS[label][start:stop]) for label in chosen]
            lines.append(f"{'|'.join(chosen)}\tthe wall is painted {' and '.join(words)}")
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(tmp_path / name)

    out = tmp_path / "run"
    result = run_recipe([
        "--train", write("train.tsv", 0, 3, 180), "--validation", write("dev.tsv", 0, 3, 60),
        "--test", write("test.tsv", 3, 6, 60), "--vectors", colour_data["vectors"],
        "--multi-label", "--architecture", "pooled", "--head-epochs", "40",
        "--fine-tune-epochs", "1", "--learning-rate", "0.01", "--batch-size", "16",
        "--seed", "3", "--monitor", "val_micro_f1", "--compare-scratch",
        "--output-dir", str(out)], subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_names"] == names and metrics["plan"]["monitor"] == "val_micro_f1"
    assert metrics["evaluation"]["micro_f1"] >= 0.9, metrics["evaluation"]
    assert set(json.loads((out / "thresholds.json").read_text())) == set(names)
    # The transfer report compares the monitored micro F1: the random embeddings never
    # saw the test words.
    report = json.loads((out / "transfer_report.json").read_text())
    assert report["metric"] == "micro_f1"
    assert metrics["transfer_report"]["test_micro_f1"] > 0.25, metrics["transfer_report"]
    predicted = subprocess.run(
        [sys.executable, "-m", "recipes.predict", str(out), "--text",
         "the wall is painted crimson and navy"], env=subprocess_env, capture_output=True,
        text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    labels = predicted.stdout.strip().split("  ")[1:]
    assert sorted(label.split()[0] for label in labels) == ["cool", "warm"], predicted.stdout
