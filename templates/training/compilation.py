"""Compiling a classifier for a phase: loss, metrics, optimiser, and the XLA switch.
"""

from __future__ import annotations

from typing import Any

import keras

from templates.data.errors import CookbookError
from templates.data.multi_label import is_multi_label
from templates.data.multi_label import training_metrics as multi_label_metrics
from templates.training.losses import classification_loss
from templates.training.metrics import metrics_for
from templates.training.optimizers import DiscriminativeAdam
from templates.training.schedules import OneCycle

# XLA compilation of the train/test steps for every `compile_classifier` call that does
# not choose for itself: "auto" is Keras's rule (on for GPU/TPU, off on CPU and under
# tf.distribute strategies). Recipes set it from --xla through `set_jit_compile`.
JIT_COMPILE_SETTINGS = {"auto": "auto", "on": True, "off": False}


_jit_compile_default: Any = "auto"


def set_jit_compile(setting: str | bool) -> None:
    """Set XLA compilation for the phases: ``"auto"``, ``"on"``/``True``, ``"off"``/``False``.

    Switching XLA off helps when a model's ops are not XLA-compatible or when first-step
    compilation time dominates a short run; on is the usual choice on GPU/TPU.
    """
    global _jit_compile_default
    if isinstance(setting, bool):
        _jit_compile_default = setting
        return
    if setting not in JIT_COMPILE_SETTINGS:
        raise CookbookError(
            f"XLA setting must be one of {', '.join(JIT_COMPILE_SETTINGS)} (or a bool); "
            f"got {setting!r}.")
    _jit_compile_default = JIT_COMPILE_SETTINGS[setting]


def jit_compile_setting() -> Any:
    """The XLA setting `compile_classifier` uses by default (see `set_jit_compile`)."""
    return _jit_compile_default


def compile_classifier(
    model: keras.Model,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    jit_compile: Any = None,
    learning_rate_multipliers: dict[str, float] | None = None,
    monitor: str = "val_accuracy",
    label_smoothing: float = 0.0,
):
    """Compile ``model`` for integer class labels with Adam at ``learning_rate``; a
    multi-label model (sigmoid outputs, `templates.data.multi_label.is_multi_label`) for
    multi-hot targets: binary cross-entropy, exact-match ``accuracy``, micro and macro F1.

    Args:
        model: The model to compile.
        learning_rate: A rate or a schedule (`templates.training.schedules.OneCycle`...).
        jit_compile: Passed to ``compile``; ``None`` uses the setting chosen with
            `set_jit_compile` (``"auto"`` unless changed).
        learning_rate_multipliers: Per-variable multipliers (discriminative rates,
            `templates.training.optimizers.discriminative_multipliers`): uses
            `DiscriminativeAdam`.
        monitor: What early stopping will watch: ``"val_balanced_accuracy"`` or
            ``"val_macro_f1"`` also compile that metric (`templates.training.metrics`).
        label_smoothing: Smooth the targets (`templates.training.losses.classification_loss`).
    """
    # A one-cycle rate brings its momentum counter-cycle (Adam's beta_1).
    momentum = (learning_rate.momentum_schedule() if isinstance(learning_rate, OneCycle)
                else None)
    if learning_rate_multipliers or momentum is not None:
        optimizer = DiscriminativeAdam(learning_rate=learning_rate,
                                       learning_rate_multipliers=learning_rate_multipliers,
                                       momentum_schedule=momentum)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    loss = classification_loss(model, label_smoothing)
    if is_multi_label(model):
        metrics = multi_label_metrics()
    else:
        # An instance, not the string "accuracy": its variables exist before the first
        # step is traced (see below).
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                   *metrics_for(monitor, int(model.output_shape[-1]))]
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=metrics,
        jit_compile=_jit_compile_default if jit_compile is None else jit_compile,
    )
    # Without a distribution strategy, Keras creates the optimiser's and the metrics'
    # variables while tracing the first training or test step, and TensorFlow traces a
    # function that created variables a second time. Creating them now saves a trace
    # per phase, most of the time of a small model's phase. (Recompile after changing
    # what is trainable, as Keras asks anyway.)
    if model.built:
        model.optimizer.build(model.trainable_variables)


def quiet_retracing_warnings() -> None:
    """Hide TensorFlow's "triggered tf.function retracing" warning: a run that builds
    many small models (comparisons over seeds, sweeps) traces each model's functions on
    purpose, and the warning would only alarm the reader."""
    import logging

    logging.getLogger("tensorflow").addFilter(
        lambda record: "triggered tf.function retracing" not in record.getMessage())
