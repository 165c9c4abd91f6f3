"""The label-count curve (`templates.training.label_curve`, issue 39): stratified subsets
drawn per seed, more seeds for small subsets, transfer and scratch curves written, and a
resumed curve that trains nothing twice."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from templates.data.batches import ShuffledArrays, array_batches
from templates.training.checkpoints import TrainingState
from templates.training.develop import reuse_model
from templates.training.label_curve import label_curve, seeds_for, stratified_subset
from templates.training.plan import TransferPlan


def test_subsets_hold_k_labels_of_every_class_drawn_per_seed():
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    rows = stratified_subset(labels, 4, seed=1)
    assert np.bincount(labels[rows]).tolist() == [4, 4, 4]
    assert rows.tolist() == sorted(set(rows.tolist()))  # sorted, no row twice
    np.testing.assert_array_equal(rows, stratified_subset(labels, 4, seed=1))
    assert not np.array_equal(rows, stratified_subset(labels, 4, seed=2))
    assert len(stratified_subset(labels, None, seed=1)) == 60  # all the labels
    with pytest.raises(ValueError, match="class 0 has only 10"):
        stratified_subset(labels, 11, seed=1)
    assert seeds_for(8, 3) == [3, 4, 5, 6, 7] and seeds_for(32) == [0, 1, 2, 3, 4]
    assert seeds_for(64) == [0, 1, 2] and seeds_for(None) == [0, 1, 2]


def blobs(count, seed, width=64):
    """Three classes in ``width`` dimensions, readable only along three directions hidden
    in noise: a source model learns them from plenty of examples; a few labels barely
    show them to a model from scratch."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % 3).astype("int32")  # balanced
    inputs = rng.normal(size=(count, width))
    inputs[:, :3] += 2.5 * np.eye(3)[labels]
    rotation = np.linalg.qr(np.random.default_rng(99).normal(size=(width, width)))[0]
    return (inputs @ rotation).astype("float32"), labels


def network(num_classes=3, width=64):
    inputs = keras.Input((width,))
    x = keras.layers.Dense(16, activation="relu", name="features")(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax",
                                                  name="predictions")(x))


@pytest.mark.acceptance  # 16 small trainings: about 60 s beside other work (5 head epochs:
# on 6 examples TransferPlan.head_epoch_factor makes them 80; 20 had taken 560 s)
def test_a_curve_trains_every_point_writes_its_files_and_resumes(tmp_path):
    keras.utils.set_random_seed(0)
    source = network()
    source.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    source.fit(*blobs(2000, 0), epochs=5, batch_size=64, verbose=0)
    train_x, train_y = blobs(120, 1)
    validation = array_batches(*blobs(150, 2), batch_size=64, shuffle=False)
    test = array_batches(*blobs(300, 3), batch_size=64, shuffle=False)
    plan = TransferPlan(head_epochs=5, fine_tune_epochs=0, learning_rate=3e-2,
                        batch_size=8, patience=0, restore_best=False, seed=10)
    drawn = []

    def train_for(rows, seed):
        drawn.append((len(rows), seed))
        return array_batches(train_x[rows], train_y[rows], batch_size=8, seed=seed)

    tuned = []

    def before_training(transfer, rows, seed):  # e.g. contrastive tuning on the subset
        tuned.append((len(rows), seed, transfer.head.name))
        return {"rows": len(rows)}

    state = TrainingState(tmp_path / "checkpoints")
    curve = label_curve(
        [2, 40], train_y, train_for, lambda: reuse_model(source, 3, cut_at="features",
                                                          pooling="flatten", dropout=0.0),
        validation, test, plan, state=state, build_scratch=network, directory=tmp_path,
        before_training=before_training)
    # The hook saw each transfer point's fresh model and rows once; scratch skips it.
    assert [(count, seed) for count, seed, _ in tuned] == [(6, seed) for seed in range(
        10, 15)] + [(120, seed) for seed in range(10, 13)]
    assert all(point["before_training"] == {"rows": point["examples"]}
               for point in curve.points if point["kind"] == "transfer")
    # Five seeds for 2 labels per class, three for 40; each subset drawn once per seed
    # and trained on by transfer and scratch alike.
    assert sorted(set(drawn)) == [(6, seed) for seed in range(10, 15)] + [
        (120, seed) for seed in range(10, 13)]
    assert len(curve.points) == 2 * (5 + 3)
    written = json.loads((tmp_path / "label_curve.json").read_text())
    summary = written["summary"]
    assert summary["transfer"]["2"]["seeds"] == 5 and summary["scratch"]["40"]["seeds"] == 3
    assert summary["transfer"]["2"]["examples"] == 6
    # The source's features carry the three hidden directions; scratch must find them
    # in 64 noisy dimensions from the few labels.
    # Measured here: transfer 0.72 (sd 0.06) against scratch 0.52 at two labels per
    # class; scratch needs all forty to reach the transfer's two (0.87).
    assert summary["transfer"]["2"]["mean"] > 0.65
    assert summary["transfer"]["2"]["mean"] > summary["scratch"]["2"]["mean"] + 0.1
    assert written["scratch_matches_at"] == "40"
    assert written["sentence"] == curve.sentence and "2 labels per class" in curve.sentence
    assert (tmp_path / "label_curve.png").stat().st_size > 10_000

    # Resumed: every finished point is read back, nothing is built or trained again.
    def must_not_train(*_):
        raise AssertionError("a finished point must not train again")

    again = label_curve([2, 40], train_y, must_not_train, must_not_train, validation, test,
                        plan, state=TrainingState(tmp_path / "checkpoints", resume=True),
                        build_scratch=must_not_train)
    assert again.points == curve.points


class CountedPasses(ShuffledArrays):
    """Fixed-order batches that count the passes made over them (each starts at batch 0)."""

    passes = 0

    def __getitem__(self, index):
        if index == 0:
            self.passes += 1
        return super().__getitem__(index)


@pytest.mark.acceptance  # 6 small head trainings (8 s alone)
def test_a_head_only_curve_reads_the_held_out_sets_once_and_scores_as_the_whole_model():
    keras.utils.set_random_seed(0)
    source = network()
    source.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    source.fit(*blobs(2000, 0), epochs=5, batch_size=64, verbose=0)
    train_x, train_y = blobs(120, 1)
    plan = TransferPlan(head_epochs=2, fine_tune_epochs=0, learning_rate=3e-2,
                        batch_size=8, patience=0, restore_best=False, seed=10)
    curves, held_out = [], []
    # The head alone; then the same points through the whole model (a hook that does
    # nothing, but could change the frozen part, so every point reads the sets itself).
    for hook in (None, lambda transfer, rows, seed: None):
        validation, test = (CountedPasses(*blobs(count, seed), batch_size=64, shuffle=False)
                            for count, seed in ((150, 2), (300, 3)))
        curves.append(label_curve(
            [40], train_y, lambda rows, seed: array_batches(
                train_x[rows], train_y[rows], batch_size=8, seed=seed),
            lambda: reuse_model(source, 3, cut_at="features", pooling="flatten",
                                dropout=0.0), validation, test, plan, before_training=hook))
        held_out.append((validation.passes, test.passes))
    on_features, whole = curves
    # Three points; the frozen part read the validation and test sets once for all of them.
    assert held_out[0] == (1, 1)
    assert held_out[1][0] >= 6 and held_out[1][1] >= 3
    for first, second in zip(on_features.points, whole.points):
        assert first["seed"] == second["seed"] and first["examples"] == second["examples"] == 120
        assert first["val_accuracy"] == pytest.approx(second["val_accuracy"], abs=1 / 150)
        assert first["test_accuracy"] == pytest.approx(second["test_accuracy"], abs=1 / 300)
    assert len(on_features.points) == 3
    assert 0.5 < on_features.summary()["transfer"]["40"]["mean"] < 1.0


@pytest.mark.acceptance  # the cats recipe's curve: 5 small runs of MobileNet 0.25
def test_the_image_recipe_draws_a_curve_and_resumes_it(subprocess_env, tmp_path):
    import subprocess
    import sys

    from conftest import SHARED_KERAS_MODELS, require_shared
    from test_multi_worker import colour_photos

    weights = SHARED_KERAS_MODELS / "mobilenet_2_5_224_tf_no_top.h5"
    require_shared(weights)
    colour_photos(tmp_path / "photos", per_class=24)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "recipes.cats_vs_dogs", "--data-dir",
               str(tmp_path / "photos"), "--backbone", "MobileNet", "--alpha", "0.25",
               "--weights", str(weights), "--image-size", "64", "--head-epochs", "1",
               "--fine-tune-epochs", "0", "--batch-size", "8", "--no-find-learning-rates",
               "--seed", "3", "--output-dir", str(out), "--label-curve", "2"]

    def run(*extra):
        result = subprocess.run([*command, *extra], env=subprocess_env, capture_output=True,
                                text=True, timeout=900,
                                cwd=subprocess_env["PYTHONPATH"].split(":")[0])
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    first = run()
    curve = json.loads((out / "label_curve.json").read_text())
    # Five seeds from the plan's, each a stratified draw of two photos per class (the
    # scratch curve of --compare-scratch is the library test's above).
    assert sorted(point["seed"] for point in curve["points"]) == [3, 4, 5, 6, 7]
    assert {(point["kind"], point["examples"]) for point in curve["points"]} == {
        ("transfer", 4)}
    assert first.count("Label curve:") == 5 and curve["sentence"] in first
    assert (out / "label_curve.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_curve"] == curve["summary"]
    # Resumed: the run and every point of the curve are restored, none trained again.
    resumed = run("--resume")
    assert "Label curve:" not in resumed
    assert json.loads((out / "label_curve.json").read_text())["points"] == curve["points"]


def test_a_head_on_a_few_cached_features_gets_enough_steps():
    """On 16 labels (one batch) ten head epochs were ten steps and MiniLM's head ended
    near chance: the plan fitted to a small training set multiplies the head's epochs
    and patience, once, and leaves fine-tuning and larger sets alone."""
    plan = TransferPlan(head_epochs=10, patience=3).for_training_set([0] * 8 + [1] * 8)
    assert plan.head_epoch_factor == 16 and plan.epochs_of("head") == 160
    assert plan.early_stopping("head")["patience"] == 48
    assert plan.early_stopping("fine_tune")["patience"] == 3
    assert plan.epochs_of("fine_tune") == 3
    again = plan.for_training_set([0] * 8 + [1] * 8)  # not compounded
    assert again.epochs_of("head") == 160
    assert TransferPlan().for_training_set([0, 1] * 300).head_epoch_factor == 1
    assert TransferPlan(batch_size=8).for_training_set([0, 1] * 32).head_epoch_factor == 2
    assert TransferPlan(cache_features=False).for_training_set([0, 1]).head_epoch_factor == 1


def test_scratch_trains_as_many_epochs_as_a_transfer_run_with_extra_head_epochs(tmp_path):
    """A run on two batches trains its head twice the planned epochs; the report's
    scratch run then trains as many epochs as the whole transferred run (it had
    trained the planned ones, and the report refused the two slope windows)."""
    from templates.training.comparison import report_against_scratch
    from templates.training.run import run_transfer

    keras.utils.set_random_seed(0)
    source = network()
    train_x, train_y = blobs(12, 1)
    train = array_batches(train_x, train_y, batch_size=8, seed=0)
    validation = array_batches(*blobs(30, 2), batch_size=32, shuffle=False)
    plan = TransferPlan(head_epochs=1, fine_tune_epochs=1, learning_rate=1e-2,
                        fine_tune_learning_rate=1e-3, batch_size=8, patience=0,
                        restore_best=False, seed=0).for_training_set(train_y)
    assert plan.head_epoch_factor == 8
    transfer = reuse_model(source, 3, cut_at="features", pooling="flatten", dropout=0.0)
    run = run_transfer(transfer, train, validation, plan, measure_start=True)
    assert len(run.history["val_accuracy"]) == 9
    report = report_against_scratch(run, network, train, validation, None, tmp_path,
                                    title="blobs")
    assert len(report.scratch[0].validation_curve) == 9
    assert report.phase_boundary == 8 and report.slope_epochs == 3


@pytest.mark.parametrize("scratch_rate", [None, 1e-4])
def test_scratch_trains_at_the_plans_scratch_rate_else_the_heads(scratch_rate):
    """`TransferPlan.scratch_learning_rate` is the scratch model's rate (the text-encoder
    recipe's transformer trains at 1e-4 from random weights); unset, the head's."""
    from templates.training.label_curve import scratch_point

    keras.utils.set_random_seed(0)
    model = network()
    train = array_batches(*blobs(24, 1), batch_size=8, seed=0)
    validation = array_batches(*blobs(30, 2), batch_size=32, shuffle=False)
    plan = TransferPlan(head_epochs=1, fine_tune_epochs=0, learning_rate=1e-2,
                        scratch_learning_rate=scratch_rate, batch_size=8, seed=0)
    scratch_point(model, train, validation, plan=plan)
    used = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert used == pytest.approx(scratch_rate or 1e-2)


def test_the_nearest_class_mean_head_needs_no_training():
    """Purpose-built feature maps: each class points along its own direction, with
    noise; the head's class is the one whose mean is nearest in angle (computed apart
    here), and a class without an example is named."""
    from templates.data.errors import CookbookError
    from templates.models.nearest_class_mean import nearest_class_mean_head

    rng = np.random.default_rng(0)
    directions = rng.normal(size=(3, 16))
    labels = np.arange(60) % 3
    maps = (directions[labels][:, None, None, :] * rng.uniform(0.5, 2, (60, 1, 1, 1))
            + rng.normal(scale=0.8, size=(60, 2, 2, 16))).astype("float32")
    head = nearest_class_mean_head(maps[:9], labels[:9])
    predicted = head.predict(maps, verbose=0)
    np.testing.assert_allclose(predicted.sum(axis=1), 1.0, rtol=1e-5)
    vectors = maps.mean(axis=(1, 2))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    means = np.stack([vectors[:9][labels[:9] == label].mean(axis=0) for label in range(3)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    np.testing.assert_array_equal(predicted.argmax(axis=1), (vectors @ means.T).argmax(axis=1))
    assert (predicted.argmax(axis=1) == labels).mean() > 0.9
    assert not head.trainable_weights
    with pytest.raises(CookbookError, match=r"classes \[2\] have none"):
        nearest_class_mean_head(maps[:6], np.array([0, 1, 0, 1, 0, 1]), num_classes=3)


def test_a_head_started_from_the_class_means_is_the_nearest_class_mean_inside_a_run(tmp_path):
    """``TransferPlan(head_init="class_means")``: with no head epochs the run's model
    ranks classes as the nearest-class-mean head computed apart does, and saves and
    reloads as any run; with epochs the head trains from the class means (at a rate
    too small to move it, the same predictions); a head it cannot imprint is named."""
    from templates.data.errors import CookbookError
    from templates.models.nearest_class_mean import nearest_class_mean_head
    from templates.training.run import run_transfer

    keras.utils.set_random_seed(0)
    source = network()
    source.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    source.fit(*blobs(600, 0), epochs=3, batch_size=64, verbose=0)
    train_x, train_y = blobs(9, 1)
    test_x, test_y = blobs(150, 2)
    train = array_batches(train_x, train_y, batch_size=8, seed=0)
    validation = array_batches(test_x, test_y, batch_size=64, shuffle=False)
    features = keras.Model(source.input, source.get_layer("features").output)
    expected = nearest_class_mean_head(features.predict(train_x, verbose=0), train_y).predict(
        features.predict(test_x, verbose=0), verbose=0).argmax(axis=1)
    assert (expected == test_y).mean() > 0.6  # better than chance: a test that can fail

    plan = TransferPlan(head_epochs=0, fine_tune_epochs=0, head_init="class_means", seed=0)
    transfer = reuse_model(source, 3, cut_at="features")
    run = run_transfer(transfer, train, validation, plan)
    assert not run.history.get("val_accuracy")
    np.testing.assert_array_equal(transfer.model.predict(test_x, verbose=0).argmax(axis=1),
                                  expected)
    transfer.model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(reloaded.predict(test_x, verbose=0).argmax(axis=1), expected)

    trained = reuse_model(source, 3, cut_at="features")
    run_transfer(trained, train, validation, TransferPlan(
        head_epochs=1, fine_tune_epochs=0, head_init="class_means", learning_rate=1e-12,
        seed=0))
    np.testing.assert_array_equal(trained.model.predict(test_x, verbose=0).argmax(axis=1),
                                  expected)

    with pytest.raises(CookbookError, match="nothing would be trained"):
        TransferPlan(head_epochs=0, fine_tune_epochs=0)
    hidden = reuse_model(source, 3, cut_at="features", hidden_units=(8,))
    with pytest.raises(CookbookError, match="one dense layer"):
        run_transfer(hidden, train, validation, plan)


@pytest.mark.acceptance  # one MobileNet 0.25 run on 64 photos and the predictor (~1 min)
def test_the_image_recipe_classifies_by_the_class_means_with_no_head_epochs(
        cats_vs_dogs_dir, subprocess_env, tmp_path):
    """The cats recipe with ``--head-init class_means --head-epochs 0 --fine-tune-epochs 0``
    on 16 real photos per class: nothing trains, metrics.json says how the head was
    made, the saved model classifies unseen photos well above chance (0.75 measured on
    these 32), recipes.predict serves it, and --compare-scratch (no epochs to match) is
    refused in one sentence."""
    import os
    import subprocess
    import sys

    from conftest import linked_photos

    photos = linked_photos(cats_vs_dogs_dir, tmp_path / "photos", train=16, test=16)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "recipes.cats_vs_dogs", "--data-dir",
               str(photos / "train"), "--test-dir", str(photos / "test"), "--backbone",
               "MobileNet", "--alpha", "0.25", "--head-init", "class_means", "--head-epochs",
               "0", "--fine-tune-epochs", "0", "--output-dir", str(out)]

    def run(*arguments):
        return subprocess.run(arguments, env=subprocess_env, capture_output=True, text=True,
                              timeout=900, cwd=subprocess_env["PYTHONPATH"].split(":")[0])

    refused = run(*command, "--compare-scratch")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert "--compare-scratch" in refused.stderr and "both are 0" in refused.stderr
    result = run(*command)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["plan"]["head_init"] == "class_means"
    assert not json.loads((out / "history.json").read_text()).get("val_accuracy")
    assert metrics["test_accuracy"] >= 0.65, metrics["test_accuracy"]
    predicted = run(sys.executable, "-m", "recipes.predict", str(out),
                    str(photos / "test" / "cats"), str(photos / "test" / "dogs"), "--output",
                    str(tmp_path / "predictions.json"))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    right = [prediction["label"] == os.path.basename(os.path.dirname(prediction["input"]))
             for prediction in predictions]
    assert len(right) == 32 and np.mean(right) == pytest.approx(metrics["test_accuracy"])
