"""Learning-rate finder and schedules (issue 7, parts 1 and 2)."""

from __future__ import annotations

import dataclasses
import json
import math

import keras
import numpy as np
import pytest

from templates.data.batches import ShuffledArrays
from templates.training.finder import (  # noqa: E402
    FINE_TUNE_BOUNDS,
    HEAD_BOUNDS,
    LossSweep,
    _SweepLearningRate,
    choose_learning_rate,
    find_learning_rate,
    record_finding,
    suggest_learning_rate,
)
from templates.training.schedules import OneCycle, WarmupCosine


def classification_problem(seed=0, size=512):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, 10)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32")
    return x, y


def small_classifier():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))


def test_the_finder_restores_weights_and_suggests_a_rate_inside_the_sweep(tmp_path):
    x, y = classification_problem()
    model = small_classifier()
    before = [weight.copy() for weight in model.get_weights()]
    finding = find_learning_rate(model, ShuffledArrays(x, y, batch_size=16, seed=0),
                                 start_learning_rate=1e-6, end_learning_rate=10.0, steps=80)
    for restored, original in zip(model.get_weights(), before):
        np.testing.assert_array_equal(restored, original)
    rates = finding.learning_rates
    assert rates[0] == pytest.approx(1e-6) and all(b > a for a, b in zip(rates, rates[1:]))
    assert rates[0] <= finding.suggestion <= rates[-1]
    # Adam on this problem learns well between 1e-3 and 1e-1; the steepest descent of
    # the loss lies there, well below where the loss blows up.
    assert 3e-4 <= finding.suggestion <= 0.3
    assert finding.stopped_early and len(rates) < 80  # 10 diverges: the sweep stops
    finding.plot(tmp_path / "finder.png")
    finding.write_json(tmp_path / "finder.json")
    assert (tmp_path / "finder.png").stat().st_size > 10_000

    # The suggestion trains: one epoch at it beats one epoch at the sweep's start.
    def one_epoch(rate):
        trained = small_classifier()
        trained.compile(keras.optimizers.Adam(rate), "sparse_categorical_crossentropy")
        return trained.fit(ShuffledArrays(x, y, 16, seed=0), shuffle=False, epochs=1,
                           verbose=0).history["loss"][-1]

    assert one_epoch(finding.suggestion) < one_epoch(1e-6) - 0.1


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    rates = list(np.geomspace(1e-5, 1.0, 11))
    losses = [1.0, 1.0, 0.99, 0.98, 0.9, 0.6, 0.5, 0.45, 0.4, 2.0, 9.0]
    assert suggest_learning_rate(rates, losses, rule="steepest") == pytest.approx(rates[5])
    with pytest.raises(ValueError, match="at least three"):
        suggest_learning_rate(rates[:2], losses[:2])


def test_the_other_rules_valley_and_minimum_over_10():
    rates = list(np.geomspace(1e-5, 1.0, 11))
    losses = [1.0, 1.0, 0.99, 0.98, 0.9, 0.6, 0.5, 0.45, 0.4, 2.0, 9.0]
    assert suggest_learning_rate(rates, losses, rule="minimum_over_10") == pytest.approx(
        rates[8] / 10)
    # fastai's valley: the longest falling run is steps 0..8 (8 steps down); two thirds
    # of the way along it, rounded as fastai rounds, is step 3.
    assert suggest_learning_rate(rates, losses, rule="valley") == pytest.approx(rates[3])
    with pytest.raises(ValueError, match="Unknown suggestion rule"):
        suggest_learning_rate(rates, losses, rule="median")


def test_the_sweep_records_each_batch_loss_not_the_running_mean():
    """Keras's batch logs hold the epoch's running mean (checked: batch losses 0, 1, 4,
    9 are logged as 0, 0.5, 1.67, 3.5); the sweep must record the batches' own losses,
    over an epoch boundary too."""
    x = np.zeros((4, 1), "float32")
    y = np.array([0.0, 1.0, 2.0, 3.0], "float32")  # squared errors 0, 1, 4, 9
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, kernel_initializer="zeros", bias_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    logged = []

    class Logged(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            logged.append(float(logs["loss"]))

    sweep = LossSweep(np.full(8, 1e-30))  # a rate too small to move the weights
    model.fit(x, y, batch_size=1, epochs=2, shuffle=False, verbose=0,
              callbacks=[_SweepLearningRate(sweep), Logged()])
    np.testing.assert_allclose(logged[:4], [0.0, 0.5, 5 / 3, 3.5], rtol=1e-5)
    np.testing.assert_allclose(sweep.losses, [0.0, 1.0, 4.0, 9.0] * 2, atol=1e-4)


def test_a_sweep_from_a_trained_head_is_not_stopped_by_batch_noise():
    # A head that already fits its data (EfficientNet-Lite0's cats, validation 0.98) has
    # batch losses between 0.01 and 0.2 at the sweep's first, harmless rates: fastai's
    # "4 times the best" test alone stopped this sweep after two steps.
    rng = np.random.default_rng(0)
    rates = np.geomspace(1e-7, 0.1, 50)
    noise = rng.choice([0.01, 0.03, 0.2], size=50)
    losses = list(noise[:35]) + [0.5, 0.9, 1.5, 3.0, 6.0, 12.0] + [20.0] * 9
    sweep = LossSweep(rates)
    for loss in losses:
        if sweep.record(float(loss)):
            break
    finding = sweep.finding(rule="minimum_over_10")
    assert len(finding.losses) > 35 and finding.stopped_early  # stopped at the blow-up
    assert finding.suggestion is not None
    # A fresh head's sweep still stops once its loss has grown well past where it began.
    sweep = LossSweep(rates)
    fresh = [0.7] * 10 + [0.4, 0.2, 0.1, 0.1, 0.3, 0.8, 2.0, 5.0, 9.0] + [20.0] * 31
    for loss in fresh:
        if sweep.record(loss):
            break
    assert sweep.stopped_early and len(sweep.losses) < 25


def test_an_unusable_sweep_falls_back_to_the_default_rate_and_says_why(tmp_path):
    sweep = LossSweep(np.geomspace(1e-7, 10.0, 100))
    for loss in (0.7, 0.69, float("nan")):  # the loss is not finite at the third step
        if sweep.record(loss):
            break
    finding = sweep.finding()  # never raises
    assert finding.suggestion is None and "only 3 steps" in finding.problem
    rate, reason = choose_learning_rate(finding, 1e-3, HEAD_BOUNDS)
    assert rate == 1e-3 and "default rate 0.001" in reason

    # A suggestion outside the phase's bounds is not trusted either.
    wild = dataclasses.replace(finding, suggestion=1e-7, problem=None)
    rate, reason = choose_learning_rate(wild, 5e-4, FINE_TUNE_BOUNDS)
    assert rate == 5e-4 and "outside the bounds" in reason
    inside = dataclasses.replace(finding, suggestion=2e-4, problem=None)
    assert choose_learning_rate(inside, 5e-4, FINE_TUNE_BOUNDS) == (2e-4, None)

    # The recipes' record_finding writes the plot and the decision, and trains on.
    used = record_finding(finding, str(tmp_path), "fine_tune", "finder", default=5e-4)
    saved = json.loads((tmp_path / "lr_finder_fine_tune.json").read_text())
    assert used == 5e-4 and saved["used"] == 5e-4 and "only 3 steps" in saved["fallback"]
    assert (tmp_path / "lr_finder_fine_tune.png").is_file()


def test_warmup_cosine_values_at_chosen_steps():
    schedule = WarmupCosine(peak_learning_rate=1.0, total_steps=110, warmup_steps=10,
                            initial_learning_rate=0.1, final_learning_rate=0.0)
    values = {step: float(schedule(step)) for step in (0, 5, 10, 60, 110, 500)}
    assert values[0] == pytest.approx(0.1)
    assert values[5] == pytest.approx(0.55)
    assert values[10] == pytest.approx(1.0)
    assert values[60] == pytest.approx(0.5, abs=1e-6)  # halfway through the cosine
    assert values[110] == pytest.approx(0.0, abs=1e-7)
    assert values[500] == pytest.approx(0.0, abs=1e-7)


def test_one_cycle_values_and_save_with_the_model(tmp_path):
    schedule = OneCycle(max_learning_rate=0.01, total_steps=100, warmup_fraction=0.3)
    assert float(schedule(0)) == pytest.approx(0.01 / 25)
    assert float(schedule(30)) == pytest.approx(0.01)
    assert float(schedule(65)) == pytest.approx(0.01 / 1e4 + (0.01 - 0.01 / 1e4) / 2, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(0.01 / 1e4)
    middle = [float(schedule(step)) for step in range(0, 31)]
    assert all(b > a for a, b in zip(middle, middle[1:]))

    model = small_classifier()
    model.compile(keras.optimizers.Adam(learning_rate=schedule), "sparse_categorical_crossentropy")
    x, y = classification_problem(size=64)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    restored = reloaded.optimizer.learning_rate  # the schedule's current value
    assert isinstance(reloaded.optimizer._learning_rate, OneCycle)
    assert reloaded.optimizer._learning_rate.get_config() == schedule.get_config()
    assert float(restored) == pytest.approx(float(schedule(2)), rel=1e-5)
    with pytest.raises(ValueError, match="warmup_fraction"):
        OneCycle(0.1, 10, warmup_fraction=1.5)
    assert math.isclose(float(WarmupCosine(1.0, 10)(0)), 1.0)


def blocky_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block1_conv")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block2_conv")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block3_conv")(x)
    backbone = keras.Model(inputs, x, name="blocks")
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(
        keras.layers.GlobalAveragePooling2D()(backbone.output))
    return backbone, keras.Model(inputs, outputs)


def test_block_boundaries_of_keras_applications_names():
    from templates.models.backbones import (
        block_boundaries,
        block_cut_points,
        block_name,
    )

    assert block_name("conv_pw_13_relu") == "block_13"
    assert block_name("conv5_block3_out") == "conv5_block3"
    assert block_name("block6a_expand_conv") == "block6a"
    assert block_name("convnext_tiny_stage_3_block_2_depthwise_conv") == "stage_3_block_2"
    assert block_name("mixed10") == "mixed10" and block_name("input_layer") is None
    backbone, _ = blocky_model()
    assert block_boundaries(backbone) == [("stem", 0), ("block1", 1), ("block2", 2),
                                          ("block3", 3)]
    assert block_cut_points(backbone, 2) == ["block1_conv", "block3_conv"]
    assert block_cut_points(backbone, 5) == ["block1_conv", "block2_conv", "block3_conv"]
    mobilenet = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None,
                                             input_shape=(96, 96, 3))
    cuts = block_cut_points(mobilenet, 4)
    assert cuts[-1] == mobilenet.layers[-1].name == "conv_pw_13_relu"
    assert cuts == ["conv_pw_1_relu", "conv_pw_5_relu", "conv_pw_9_relu", "conv_pw_13_relu"]


@pytest.mark.parametrize("optimizer_name", ["adam", "sgd"])
def test_discriminative_update_sizes_follow_the_requested_rates(tmp_path, optimizer_name):
    from templates.training.optimizers import (
        DiscriminativeAdam,
        DiscriminativeSGD,
        discriminative_multipliers,
    )

    backbone, model = blocky_model()
    multipliers = discriminative_multipliers(backbone, from_layer="block2_conv", factor=4.0)
    paths = {layer: [weight.path for weight in backbone.get_layer(layer).weights]
             for layer in ("block1_conv", "block2_conv", "block3_conv")}
    assert {multipliers[path] for path in paths["block3_conv"]} == {0.25}
    assert {multipliers[path] for path in paths["block2_conv"]} == {0.0625}
    assert not set(paths["block1_conv"]) & set(multipliers)  # frozen part: not listed

    rate = 1e-3
    if optimizer_name == "adam":
        optimizer = DiscriminativeAdam(learning_rate=rate, learning_rate_multipliers=multipliers)
    else:
        optimizer = DiscriminativeSGD(learning_rate=rate, learning_rate_multipliers=multipliers)
    model.compile(optimizer, "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 2, size=32).astype("int32")
    plain = keras.models.clone_model(model)
    plain.set_weights(model.get_weights())
    plain.compile(keras.optimizers.Adam(rate) if optimizer_name == "adam"
                  else keras.optimizers.SGD(rate), "sparse_categorical_crossentropy")
    before = {layer: [w.copy() for w in backbone.get_layer(layer).get_weights()]
              for layer in paths}
    before["head"] = [w.copy() for w in model.get_layer("head").get_weights()]
    model.train_on_batch(x, y)
    plain.train_on_batch(x, y)

    def step(trained, layer):
        kernel_before = before[layer][0]
        return np.abs(trained.get_layer(layer).get_weights()[0] - kernel_before)

    def step_in(full_model, layer):
        inner = [candidate for candidate in full_model.layers if layer in
                 [item.name for item in getattr(candidate, "layers", [])]]
        return step(inner[0] if inner else full_model, layer)

    # block1 is not listed (it would be frozen in fine-tuning): it keeps the full rate,
    # as the head does.
    for layer, expected in (("block3_conv", 0.25), ("block2_conv", 0.0625), ("block1_conv", 1.0),
                            ("head", 1.0)):
        ratio = step_in(model, layer).sum() / step_in(plain, layer).sum()
        # Steps are read back as float32 weight differences: allow their rounding.
        assert ratio == pytest.approx(expected, rel=5e-3), layer

    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(reloaded.optimizer).__name__ == type(optimizer).__name__
    assert reloaded.optimizer.learning_rate_multipliers == multipliers


def test_one_cycle_momentum_moves_adams_beta_1_inside_fit():
    from templates.training.optimizers import DiscriminativeAdam

    schedule = OneCycle(max_learning_rate=0.1, total_steps=10, warmup_fraction=0.3)
    momentum = schedule.momentum_schedule()
    assert float(momentum(0)) == pytest.approx(0.95)
    assert float(momentum(3)) == pytest.approx(0.85)
    assert float(momentum(6.5)) == pytest.approx(0.90)
    assert float(momentum(10)) == pytest.approx(0.95)

    # w * 1 with loss = prediction: the gradient is exactly 1 at every step, so the
    # weight after 4 compiled training steps follows from the Adam formula alone.
    def run(optimizer):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((1,))
        model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False,
                                                       kernel_initializer="zeros")(inputs))
        model.compile(optimizer, loss=lambda y_true, y_pred: keras.ops.mean(y_pred))
        model.fit(np.ones((4, 1), "float32"), np.zeros((4, 1), "float32"), batch_size=1,
                  epochs=1, shuffle=False, verbose=0)
        return float(model.get_weights()[0][0, 0])

    weight, first, second = 0.0, 0.0, 0.0
    for step in range(4):
        beta_1, beta_2 = float(momentum(step)), 0.999
        first += (1.0 - first) * (1 - beta_1)
        second += (1.0 - second) * (1 - beta_2)
        alpha = float(schedule(step)) * math.sqrt(1 - beta_2 ** (step + 1)) / (
            1 - beta_1 ** (step + 1))
        weight -= alpha * first / (math.sqrt(second) + 1e-7)
    cycled = run(DiscriminativeAdam(learning_rate=schedule, momentum_schedule=momentum))
    assert cycled == pytest.approx(weight, rel=1e-5)
    constant = run(keras.optimizers.Adam(learning_rate=schedule))  # beta_1 fixed at 0.9
    assert abs(constant - weight) > 1e-4


def test_compile_classifier_pairs_one_cycle_with_its_momentum(tmp_path):
    from templates.training.compilation import compile_classifier
    from templates.training.optimizers import DiscriminativeAdam
    from templates.training.schedules import CyclicalMomentum

    model = small_classifier()
    compile_classifier(model, OneCycle(0.01, 100))
    assert isinstance(model.optimizer, DiscriminativeAdam)
    assert isinstance(model.optimizer.momentum_schedule, CyclicalMomentum)
    x, y = classification_problem(size=64)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert reloaded.optimizer.momentum_schedule.get_config() == (
        model.optimizer.momentum_schedule.get_config())
