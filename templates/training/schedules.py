"""Learning-rate schedules that save with the model: warm-up + cosine, one-cycle, cyclical momentum.

* `WarmupCosine` and `OneCycle` are `keras.optimizers.schedules.LearningRateSchedule`
  subclasses, registered for serialisation, so a model compiled with them saves and
  reloads with its schedule.
* One-cycle momentum: `DiscriminativeAdam(momentum_schedule=one_cycle.momentum_schedule())`
  moves Adam's ``beta_1`` against the rate (0.95 -> 0.85 -> 0.95);
  `templates.training.compilation.compile_classifier` does it whenever the rate is a `OneCycle`.

Plain Keras 3: runs on any backend.
"""

from __future__ import annotations

import math

import keras

from templates.data.errors import CookbookError

SCHEDULES = ("constant", "warmup_cosine", "one_cycle")


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``initial_learning_rate`` to ``peak_learning_rate``, then
    cosine decay to ``final_learning_rate`` at ``total_steps`` (constant after).

    Args:
        peak_learning_rate: The rate at the end of the warm-up.
        total_steps: Steps of the whole schedule.
        warmup_steps: Steps of the linear warm-up.
        initial_learning_rate: The rate at step 0.
        final_learning_rate: The rate at ``total_steps`` and after.
    """

    def __init__(self, peak_learning_rate: float, total_steps: int, warmup_steps: int = 0,
                 initial_learning_rate: float = 0.0, final_learning_rate: float = 0.0):
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise CookbookError(f"Need total_steps >= 1 and 0 <= warmup_steps <= total_steps; "
                                f"got total_steps={total_steps}, warmup_steps={warmup_steps}.")
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.initial_learning_rate = float(initial_learning_rate)
        self.final_learning_rate = float(final_learning_rate)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = max(self.warmup_steps, 1)
        rising = self.initial_learning_rate + (
            self.peak_learning_rate - self.initial_learning_rate) * step / warmup
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = keras.ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        falling = self.final_learning_rate + (
            self.peak_learning_rate - self.final_learning_rate) * cosine
        return keras.ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self) -> dict:
        return {"peak_learning_rate": self.peak_learning_rate,
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "initial_learning_rate": self.initial_learning_rate,
                "final_learning_rate": self.final_learning_rate}


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class OneCycle(WarmupCosine):
    """The one-cycle policy (Smith 2018, as in fastai): warm up from
    ``max_learning_rate / div_factor`` to ``max_learning_rate`` over the first
    ``warmup_fraction`` of the steps, then cosine-anneal to
    ``max_learning_rate / final_div_factor``.

    Args:
        max_learning_rate: The peak rate (e.g. the finder's suggestion).
        total_steps: Steps of the whole cycle (epochs x batches per epoch).
        warmup_fraction: Share of the steps spent warming up.
        div_factor: Start rate = ``max_learning_rate / div_factor``.
        final_div_factor: End rate = ``max_learning_rate / final_div_factor``.
    """

    def __init__(self, max_learning_rate: float, total_steps: int,
                 warmup_fraction: float = 0.25, div_factor: float = 25.0,
                 final_div_factor: float = 1e4):
        if not 0 <= warmup_fraction < 1:
            raise CookbookError(f"warmup_fraction must be in [0, 1); got {warmup_fraction}.")
        self.max_learning_rate = float(max_learning_rate)
        self.warmup_fraction = float(warmup_fraction)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        super().__init__(
            peak_learning_rate=max_learning_rate, total_steps=total_steps,
            warmup_steps=int(round(warmup_fraction * total_steps)),
            initial_learning_rate=max_learning_rate / div_factor,
            final_learning_rate=max_learning_rate / final_div_factor)

    def momentum_schedule(self, high: float = 0.95, low: float = 0.85) -> "CyclicalMomentum":
        """The momentum counter-cycle that goes with this rate cycle."""
        return CyclicalMomentum(self.total_steps, self.warmup_steps, high=high, low=low)

    def get_config(self) -> dict:
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "warmup_fraction": self.warmup_fraction, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor}


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class CyclicalMomentum(keras.optimizers.schedules.LearningRateSchedule):
    """The one-cycle momentum, a schedule of the step like a learning-rate schedule.

    It falls from ``high`` to ``low`` while the rate warms up (over ``warmup_steps``)
    and rises back along a cosine to ``high`` at ``total_steps``: high momentum where
    the rate is low, and the reverse (Smith 2018).
    """

    def __init__(self, total_steps: int, warmup_steps: int, high: float = 0.95,
                 low: float = 0.85):
        if not 0 <= low <= high < 1:
            raise CookbookError(f"Need 0 <= low <= high < 1; got low={low}, high={high}.")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.high = float(high)
        self.low = float(low)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        falling = self.high - (self.high - self.low) * step / max(self.warmup_steps, 1)
        progress = keras.ops.clip((step - self.warmup_steps)
                                  / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        rising = self.low + (self.high - self.low) * (1 - keras.ops.cos(math.pi * progress)) / 2
        return keras.ops.where(step < self.warmup_steps, falling, rising)

    def get_config(self) -> dict:
        return {"total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "high": self.high, "low": self.low}


def scheduled(learning_rate: float, schedule: str, epochs: int, steps_per_epoch: int):
    """``learning_rate`` shaped over a phase of ``epochs`` x ``steps_per_epoch`` steps.

    ``"constant"`` returns the rate itself; ``"warmup_cosine"`` warms up over the first
    10% of the steps, then decays to 1% of the rate (`WarmupCosine`); ``"one_cycle"``
    makes the rate the peak of a `OneCycle`.
    """
    if schedule not in SCHEDULES:
        raise CookbookError(f"Unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}.")
    total = max(1, int(epochs) * int(steps_per_epoch))
    if schedule == "warmup_cosine":
        return WarmupCosine(learning_rate, total, warmup_steps=max(1, total // 10),
                            final_learning_rate=learning_rate / 100)
    if schedule == "one_cycle":
        return OneCycle(learning_rate, total)
    return learning_rate
