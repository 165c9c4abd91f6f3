"""Strategies, mixed precision and the hardware flags (`templates.training.hardware`, the
hardware part of `templates.cli`), on CPU."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from templates.training.hardware import (
    StrategyChoice,
    check_tpu_paths,
    choose_strategy,
    set_mixed_precision,
)


def test_strategy_choices_on_a_cpu_machine(monkeypatch):
    choice = choose_strategy("cpu")
    assert (choice.name, choice.replicas, choice.device) == ("cpu", 1, "cpu")
    assert choice.global_batch_size(32) == 32
    assert choose_strategy("auto").name == "cpu"  # no TPU, no GPU here
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        choose_strategy("multi_worker")
    with pytest.raises(ValueError, match="no GPU"):
        choose_strategy("gpu")
    with pytest.raises(ValueError, match="Unknown strategy"):
        choose_strategy("quantum")


def test_tpu_refuses_local_paths():
    tpu = StrategyChoice(strategy=None, name="tpu", replicas=8, device="tpu")
    with pytest.raises(ValueError, match="/data/cats"):
        check_tpu_paths(tpu, "/data/cats", "gs://bucket/dogs")
    check_tpu_paths(tpu, "gs://bucket/cats", None)
    check_tpu_paths(StrategyChoice(None, "cpu", 1, "cpu"), "/data/cats")


@pytest.mark.parametrize("mode, compute", [("float16", "float16"), ("bfloat16", "bfloat16")])
def test_mixed_precision_policies_train_with_a_float32_output(mode, compute):
    from templates.models.pretrained import pretrained_model
    from templates.training.compilation import compile_classifier

    try:
        policy = set_mixed_precision(mode)
        assert policy == f"mixed_{mode}"
        keras.utils.set_random_seed(0)
        transfer = pretrained_model("MobileNet", num_classes=2, weights=None, image_size=32,
                                    alpha=0.25)
        convolutions = [layer for layer in transfer.backbone.layers
                        if isinstance(layer, keras.layers.Conv2D)]
        assert convolutions and all(layer.compute_dtype == compute for layer in convolutions)
        assert all(layer.variable_dtype == "float32" for layer in convolutions)
        assert transfer.model.output.dtype == "float32"  # the head's softmax stays float32
        compile_classifier(transfer.model, 1e-3)
        scaled = isinstance(transfer.model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert scaled == (mode == "float16")  # loss scaling only for float16
        images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        loss = transfer.model.train_on_batch(images, np.array([0, 1, 0, 1]))
        assert np.all(np.isfinite(loss))  # [loss, accuracy]
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert set_mixed_precision("auto", device="cpu") == "float32"
    with pytest.raises(ValueError, match="Unknown mixed precision"):
        set_mixed_precision("float8")


@pytest.mark.parametrize("flag, compiled", [("on", True), ("off", False), ("auto", False)])
def test_xla_flag_sets_how_the_phases_compile(flag, compiled):
    import argparse

    from templates.cli import add_hardware_arguments, setup_hardware
    from templates.training.compilation import (
        compile_classifier,
        jit_compile_setting,
        set_jit_compile,
    )

    parser = argparse.ArgumentParser()
    add_hardware_arguments(parser)
    try:
        setup_hardware(parser.parse_args(["--strategy", "cpu", "--xla", flag]))
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
        compile_classifier(model, 1e-2)
        # "auto" is Keras's rule, which is off on a CPU-only machine.
        assert model.jit_compile is compiled
        x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
        history = model.fit(x, (x[:, 0] > 0).astype("int32"), epochs=3, verbose=0)
        assert history.history["loss"][-1] < history.history["loss"][0]  # it trains
        compile_classifier(model, 1e-2, jit_compile=not compiled)  # an explicit choice wins
        assert model.jit_compile is (not compiled)
    finally:
        set_jit_compile("auto")
    assert jit_compile_setting() == "auto"
    with pytest.raises(ValueError, match="XLA setting"):
        set_jit_compile("sometimes")
    with pytest.raises(SystemExit):  # argparse refuses an unknown choice
        parser.parse_args(["--xla", "maybe"])


def test_mixed_precision_auto_follows_the_device():
    """auto: bfloat16 on TPUs and GPUs of compute capability 8.0+, float16 on 7.x, float32
    on CPU and older GPUs."""
    from templates.training.hardware import mixed_precision_policy

    assert mixed_precision_policy("auto", "tpu") == "mixed_bfloat16"
    assert mixed_precision_policy("auto", "gpu", (9, 0)) == "mixed_bfloat16"
    assert mixed_precision_policy("auto", "gpu", (7, 5)) == "mixed_float16"
    assert mixed_precision_policy("auto", "gpu", (6, 1)) == "float32"
    assert mixed_precision_policy("auto", "cpu") == "float32"
    assert mixed_precision_policy("float16", "cpu") == "mixed_float16"
