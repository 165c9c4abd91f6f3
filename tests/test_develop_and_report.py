"""develop-model: the baseline gate, reuse cut points, and the report's arithmetic."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from PIL import Image

from templates.reports.transfer_report import TransferReport, summarize_curve
from templates.training.develop import (
    SOURCE_CHECK_FILE,
    UnskilledSourceModelError,
    articulation_layers,
    develop_source_model,
    majority_baseline_accuracy,
    reuse_model,
)
from templates.training.plan import TransferPlan


def separable_data(count=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count).astype("int32")
    inputs = rng.normal(size=(count, 4)).astype("float32")
    inputs[:, 0] += 3.0 * (2 * labels - 1)  # the label is readable from feature 0
    return inputs, labels


def mlp(num_classes=2):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    x = keras.layers.Dense(8, activation="relu", name="features")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax",
                                                  name="predictions")(x))


def test_majority_baseline():
    assert majority_baseline_accuracy([0, 1, 1, 1], [1, 1, 0, 0, 0]) == 0.4
    with pytest.raises(ValueError):
        majority_baseline_accuracy([], [1])


# The source model trains as a plan says (its head phase's epochs, rate, batch and seed).
SOURCE_PLAN = TransferPlan(head_epochs=20, learning_rate=1e-2, seed=0)


def test_skilful_source_model_is_accepted_saved_and_reused(tmp_path):
    train, held_out = separable_data(seed=0), separable_data(seed=1)
    model, check = develop_source_model(mlp, train, held_out, SOURCE_PLAN,
                                        directory=tmp_path, verbose=0)
    assert check.skilful and check.accuracy > 0.9
    assert 0.3 < check.baseline_accuracy < 0.7
    saved = json.loads((tmp_path / SOURCE_CHECK_FILE).read_text())
    assert saved["accuracy"] == pytest.approx(check.accuracy)

    def must_not_train():
        raise AssertionError("a saved source model must be reused, not retrained")

    reloaded, again = develop_source_model(must_not_train, train, held_out, directory=tmp_path)
    assert again == check
    # The saved accuracy is judged against the margin asked for now.
    with pytest.raises(UnskilledSourceModelError):
        develop_source_model(must_not_train, train, held_out, directory=tmp_path, margin=0.99)
    np.testing.assert_allclose(reloaded.predict(train[0][:5], verbose=0),
                               model.predict(train[0][:5], verbose=0), rtol=1e-6)
    # Other source data in the same folder (another split, which may hold this one's
    # test examples) are trained on, not served the stale model.
    other = separable_data(seed=2)
    with pytest.raises(AssertionError, match="must be reused"):
        develop_source_model(must_not_train, other, held_out, directory=tmp_path)
    retrained, _ = develop_source_model(mlp, other, held_out, SOURCE_PLAN,
                                        directory=tmp_path, verbose=0)
    served, _ = develop_source_model(must_not_train, other, held_out, directory=tmp_path)
    np.testing.assert_allclose(served.predict(train[0][:5], verbose=0),
                               retrained.predict(train[0][:5], verbose=0), rtol=1e-6)


def test_unskilled_source_model_is_refused_unless_overridden(tmp_path):
    rng = np.random.default_rng(0)
    # Labels independent of the inputs: nothing to learn, nothing to transfer.
    noise = (rng.normal(size=(200, 4)).astype("float32"), rng.integers(0, 2, 200).astype("int32"))
    held_out = (rng.normal(size=(200, 4)).astype("float32"),
                rng.integers(0, 2, 200).astype("int32"))
    with pytest.raises(UnskilledSourceModelError, match="naive baseline"):
        develop_source_model(mlp, noise, held_out, TransferPlan(head_epochs=2),
                             directory=tmp_path, verbose=0)
    assert (tmp_path / SOURCE_CHECK_FILE).is_file()  # the refusal can be inspected
    # The saved refusal holds on the next run too, without retraining...
    with pytest.raises(UnskilledSourceModelError):
        develop_source_model(mlp, noise, held_out, directory=tmp_path)
    # ...and an explicit override lets the user reuse it anyway.
    _, check = develop_source_model(mlp, noise, held_out, directory=tmp_path,
                                    allow_unskilled=True)
    assert not check.skilful


def test_reuse_cuts_and_freezes_the_source():
    source = mlp()
    default = reuse_model(source, num_classes=3)
    assert default.backbone.layers[-1].name == "features"
    assert default.model.output_shape == (None, 3)
    assert not default.backbone.trainable
    shallow = reuse_model(source, num_classes=3, cut_at="hidden")
    assert shallow.backbone.layers[-1].name == "hidden"
    by_depth = reuse_model(source, num_classes=3, cut_at=2)
    assert by_depth.backbone.layers[-1].name == "hidden"
    # A copy with the source's weights: tuning it leaves the source model as it was, so
    # a second seed or cut point starts from the same source weights.
    reused, original = shallow.backbone.get_layer("hidden"), source.get_layer("hidden")
    assert reused is not original
    for copied, kept in zip(reused.get_weights(), original.get_weights()):
        np.testing.assert_array_equal(copied, kept)
    before = [weight.copy() for weight in original.get_weights()]
    reused.kernel.assign(reused.kernel + 1.0)
    for kept, saved in zip(original.get_weights(), before):
        np.testing.assert_array_equal(kept, saved)


class RecordRates(keras.callbacks.Callback):
    """Records the optimiser's learning rate after every training step."""

    def __init__(self, phase, log):
        super().__init__()
        self.phase, self.log = phase, log

    def on_train_batch_end(self, batch, logs=None):
        optimizer = self.model.optimizer
        multipliers = bool(getattr(optimizer, "learning_rate_multipliers", None))
        self.log.setdefault(self.phase, []).append(
            (multipliers, float(keras.ops.convert_to_numpy(optimizer.learning_rate))))


@pytest.mark.parametrize("schedule", ["constant", "one_cycle"])
def test_comparison_applies_the_training_options_to_both_sides(schedule):
    import tensorflow as tf

    from templates.training.comparison import compare_with_scratch, steps_per_epoch
    from templates.training.plan import TransferPlan

    inputs, labels = separable_data(96)
    train = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(16)
    validation = tf.data.Dataset.from_tensor_slices(separable_data(64, seed=1)).batch(64)
    assert steps_per_epoch(train) == 6
    source = mlp()
    plan = TransferPlan(head_epochs=3, fine_tune_epochs=2, learning_rate=1e-2,
                        fine_tune_learning_rate=1e-3, batch_size=16, schedule=schedule,
                        discriminative_factor=3.0, patience=0, restore_best=False)
    log = {}
    report = compare_with_scratch(
        lambda: reuse_model(source, 2, cut_at="features"),
        lambda: reuse_model(mlp(), 2, cut_at="features").model,
        train, validation, plan=plan,
        phase_callbacks=lambda phase: [RecordRates(phase, log)])
    assert set(log) == {"seed0.transfer.head", "seed0.transfer.fine_tune", "seed0.scratch"}
    assert [len(log[phase]) for phase in sorted(log)] == [5 * 6, 2 * 6, 3 * 6]
    head, tuned, scratch = (log["seed0.transfer.head"], log["seed0.transfer.fine_tune"],
                            log["seed0.scratch"])
    # Discriminative rates apply to fine-tuning only (the scratch run has no reused blocks).
    assert {multipliers for multipliers, _ in tuned} == {True}
    assert {multipliers for multipliers, _ in head + scratch} == {False}
    for phase, peak in ((head, 1e-2), (tuned, 1e-3), (scratch, 1e-2)):
        rates = [rate for _, rate in phase]
        if schedule == "constant":
            assert rates == pytest.approx([peak] * len(rates))
        else:  # one-cycle within each phase: up to the peak, then down far below it
            top = int(np.argmax(rates))
            assert 0 < top < len(rates) - 1
            assert max(rates) == pytest.approx(peak, rel=0.05)
            assert rates[0] < peak / 2 and rates[-1] < peak / 100
    assert len(report.transfer[0].validation_curve) == 5


def test_articulation_layers_are_the_valid_cut_points():
    chain = mlp()
    assert articulation_layers(chain) == ["hidden", "features", "predictions"]
    inputs = keras.Input((4,))
    a = keras.layers.Dense(4, name="a")(inputs)
    b = keras.layers.Dense(4, name="b")(a)
    joined = keras.layers.Add(name="join")([a, b])  # a skip connection over b
    residual = keras.Model(inputs, keras.layers.Dense(2, name="out")(joined))
    assert articulation_layers(residual) == ["a", "join", "out"]


def test_curve_summary_arithmetic():
    summary = summarize_curve([0.5, 0.7, 0.8, 0.75], before_training=0.2, test_score=0.78,
                              slope_epochs=3)
    assert summary.start == 0.5
    assert summary.slope == pytest.approx((0.5 + 0.7 + 0.8) / 3)
    assert summary.gain_per_epoch == pytest.approx((0.8 - 0.2) / 3)
    assert summary.asymptote == 0.8
    assert summary.test_score == 0.78
    assert summarize_curve([0.6], 0.1, slope_epochs=5).slope == 0.6
    with pytest.raises(ValueError):
        summarize_curve([], 0.1)


def test_report_names_negative_transfer_and_averages_seeds(tmp_path):
    transfer = [summarize_curve([0.6, 0.8, 0.85], 0.2, 0.84, slope_epochs=2),
                summarize_curve([0.7, 0.8, 0.83], 0.2, 0.80, slope_epochs=2)]
    scratch = [summarize_curve([0.4, 0.6, 0.90], 0.2, 0.86, slope_epochs=2),
               summarize_curve([0.3, 0.7, 0.88], 0.2, 0.86, slope_epochs=2)]
    report = TransferReport(transfer, scratch, seeds=[0, 1])
    assert report.slope_epochs == 2
    differences = report.differences()
    assert differences["start"] == pytest.approx(0.65 - 0.35)
    assert differences["slope"] == pytest.approx((0.7 + 0.75) / 2 - (0.5 + 0.5) / 2)
    assert differences["asymptote"] == pytest.approx(0.84 - 0.89)
    assert differences["test_accuracy"] == pytest.approx(0.82 - 0.86)
    assert report.verdicts() == {"start": "higher", "slope": "higher", "asymptote": "lower",
                                 "test_accuracy": "lower"}
    assert report.negative_transfer == ["asymptote", "test_accuracy"]
    assert "NEGATIVE TRANSFER on asymptote, test_accuracy" in report.summary_text()

    written = json.loads(open(report.write_json(tmp_path / "report.json")).read())
    assert written["transfer"]["start"] == pytest.approx(0.65)
    assert written["scratch"]["std"]["start"] == pytest.approx(0.05)
    assert set(written["transfer"]) >= {"start", "slope", "asymptote", "test_accuracy"}
    with Image.open(report.plot(tmp_path / "report.png")) as image:
        assert image.format == "PNG"


@pytest.mark.acceptance  # a published result (docs/results.md), two seeds of real digits
def test_a_deliberately_unrelated_source_is_reported_as_negative_transfer():
    """A source network that learned random labels on noise, reused up to its dense
    layer: its features know nothing of strokes, and the report must say so plainly."""
    from recipes.develop_model_digits import build_digit_model, load_digits_by_task
    from templates.data.batches import array_batches
    from templates.training.comparison import compare_with_scratch
    from templates.training.develop import reuse_model

    data = load_digits_by_task(5, seed=0)
    generator = np.random.default_rng(0)
    noise = generator.uniform(0, 16, size=(600, 8, 8, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    source = build_digit_model()
    source.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    source.fit(noise, generator.integers(0, 5, 600).astype("int32"), epochs=60,
               batch_size=32, verbose=0)
    plan = TransferPlan(head_epochs=10, fine_tune_epochs=5, learning_rate=1e-2,
                        fine_tune_learning_rate=1e-3, batch_size=8, patience=0,
                        restore_best=False)
    report = compare_with_scratch(
        lambda: reuse_model(source, 5, cut_at="features", pooling="flatten"),
        lambda: reuse_model(build_digit_model(), 5, cut_at="pool", pooling="flatten").model,
        array_batches(*data["train"], batch_size=8, seed=0),
        array_batches(*data["validation"], batch_size=256, shuffle=False),
        array_batches(*data["test"], batch_size=256, shuffle=False),
        plan=plan, repeats=2, slope_epochs=5)
    # Measured: slope -22.1 / -21.0, asymptote -2.1 / -2.3 points (two measurements). The
    # start (one epoch from a random head on both sides, two seeds) is noise: -2.8 once,
    # +1.9 once, with per-seed starts 0.2-0.5 on both sides; it is not asserted.
    assert {"slope", "asymptote"} <= set(report.negative_transfer)
    assert "NEGATIVE TRANSFER on" in report.summary_text()
    assert "slope, asymptote" in report.summary_text()


def test_report_refuses_slopes_over_different_windows():
    with pytest.raises(ValueError, match="different windows"):
        TransferReport([summarize_curve([0.5, 0.6, 0.7], 0.1, slope_epochs=3)],
                       [summarize_curve([0.5, 0.6], 0.1, slope_epochs=3)], seeds=[0])


DIGITS_ARGUMENTS = ["--labels-per-class", "5"]  # the defaults: 5 seeds, 10 + 5 epochs


def per_seed_gains(report, measure):
    transfer = np.array([run[measure] for run in report["transfer"]["runs"]])
    scratch = np.array([run[measure] for run in report["scratch"]["runs"]])
    spread = max(transfer.std(ddof=1), scratch.std(ddof=1))
    return transfer - scratch, spread


@pytest.mark.acceptance
def test_digits_recipe_transfer_wins_and_resumes_to_the_same_result(
        tmp_path, subprocess_env):
    """The recipe with its defaults over 5 seeds (issue 15, section 5), then one seed
    killed mid-way and resumed: the same report.

    Transfer must be ahead of scratch on start, slope and asymptote on each of the 5
    seeds, and by more than the seed-to-seed spread on average. The design (an
    odd-vs-even source task on the scans the target does not use, 80 validation scans
    per class) was chosen on the splits of seeds 10-50, never this one (seed 0): there
    22 of 25 seeds were ahead on all three measures (one asymptote level, two starts
    behind by under 2.5 points), against 16 of 25 with the design before
    (docs/results.md has every split).

    This is also the reproducibility check: two runs with the same seed (one of them
    interrupted) must write identical reports.
    """
    import subprocess
    import sys

    from conftest import kill_when

    repository = subprocess_env["PYTHONPATH"].split(":")[0]
    first = tmp_path / "first"
    result = subprocess.run(
        [sys.executable, "-m", "recipes.develop_model_digits", "--output-dir", str(first),
         *DIGITS_ARGUMENTS],
        env=subprocess_env, capture_output=True, text=True, timeout=600, cwd=repository,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((first / "transfer_report.json").read_text())
    for side in ("transfer", "scratch"):
        assert set(report[side]) >= {"start", "slope", "asymptote", "test_accuracy"}
        assert len(report[side]["runs"]) == 5
        assert len(report[side]["runs"][0]["validation_curve"]) == 15
    assert report["seeds"] == [0, 1, 2, 3, 4]
    for measure in ("start", "slope", "asymptote"):
        gains, spread = per_seed_gains(report, measure)
        assert gains.min() > 0 and gains.mean() > spread, (measure, gains, spread)
    assert "Transfer vs scratch" in result.stdout
    sweep = json.loads((first / "reuse_sweep.json").read_text())
    assert [row["cut_at"] for row in sweep["depths"]] == ["conv_1", "pool", "features"]
    # Reusing up to "pool" with seed 0 is the report's first transferred run, restored.
    pool = sweep["depths"][1]
    assert pool["test_accuracy"] == pytest.approx(
        report["transfer"]["runs"][0]["test_score"], abs=1e-6)
    assert pool["best_val_accuracy"] == pytest.approx(
        report["transfer"]["runs"][0]["asymptote"], abs=1e-6)
    for name in ("transfer_report.png", "reuse_sweep.png", "source/parity/source_model.keras",
                 "source/parity/source_check.json", "metrics.json"):
        assert (first / name).is_file(), name
    # The evaluation folder describes the first seed's transferred model.
    evaluation = json.loads((first / "evaluation" / "evaluation.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(
        report["transfer"]["runs"][0]["test_score"], abs=1e-6)
    assert evaluation["class_names"] == ["5", "6", "7", "8", "9"]
    for name in ("confusion_matrix.png", "grad_cam.png", "report.md"):
        assert (first / "evaluation" / name).is_file(), name
    check = json.loads((first / "source" / "parity" / "source_check.json").read_text())
    # Odd vs even: two classes, the majority about half the scans.
    assert check["skilful"] and check["accuracy"] > check["baseline_accuracy"] + 0.3

    # Seed 0 again (without the sweep and the other seeds, to save time), killed in the
    # middle of its scratch run, resumed: the finished transfer run is reused, the
    # scratch run continues from its last finished epoch, and both must equal the first
    # report's seed-0 runs exactly.
    second = tmp_path / "second"
    arguments = [sys.executable, "-m", "recipes.develop_model_digits",
                 "--output-dir", str(second), *DIGITS_ARGUMENTS, "--seeds", "1",
                 "--skip-sweep"]
    backup = second / "checkpoints" / "seed0.scratch.backup" / "training_metadata.json"

    def scratch_epochs_backed_up():
        try:
            return json.loads(backup.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            return 0

    # The recipe paces its backups (an epoch is as short as a backup): the first epoch
    # is always backed up, later ones about every second.
    kill_when(arguments, subprocess_env, lambda: scratch_epochs_backed_up() >= 1,
              cwd=repository)
    assert 1 <= scratch_epochs_backed_up() < 15
    finished = {path.name: path.stat().st_mtime_ns
                for path in (second / "checkpoints").glob("*.result.json")}
    assert set(finished) == {"seed0.transfer.result.json"}
    assert not (second / "transfer_report.json").exists()

    result = subprocess.run(arguments + ["--resume"], env=subprocess_env, capture_output=True,
                            text=True, timeout=600, cwd=repository)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for name, modified in finished.items():  # finished runs were reused, not retrained
        assert (second / "checkpoints" / name).stat().st_mtime_ns == modified, name
    resumed = json.loads((second / "transfer_report.json").read_text())
    for side in ("transfer", "scratch"):
        assert resumed[side]["runs"] == report[side]["runs"][:1]


def test_digits_split_keeps_the_target_scans_out_of_the_source_task():
    from recipes.develop_model_digits import load_digits_by_task

    data = load_digits_by_task(5, seed=0)
    sizes = {name: len(data[name][1]) for name in ("train", "validation", "test")}
    assert sizes == {"train": 25, "validation": 400, "test": 234}
    # The target's scans never reach the source task, and its labels are parities.
    target_pixels = {scan.tobytes() for name in ("train", "validation", "test")
                     for scan in data[name][0]}
    unshifted = data["source_train"][0][:len(data["source_train"][0]) // 5]  # view 1 of 5
    source_pixels = {scan.tobytes() for scan in [*unshifted, *data["source_held_out"][0]]}
    assert len(source_pixels) == 911 + 227 and not source_pixels & target_pixels
    assert set(np.unique(data["source_train"][1])) == {0, 1}
    with pytest.raises(ValueError, match="leaves no test scans of digit"):
        load_digits_by_task(150, seed=0)
