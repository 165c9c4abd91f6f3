"""The learning-rate finder: sweep the rate on the user's data, suggest one, fall back safely.

* `find_learning_rate` raises the learning rate exponentially, one step per batch, on
  the user's own data, records the loss, restores the weights, and suggests a rate by
  one of the `SUGGESTION_RULES`: ``"minimum_over_10"`` (`DEFAULT_RULE`, every finder's
  default and `templates.training.plan.TransferPlan`'s, chosen on validation data,
  docs/results.md: the rate at the loss minimum divided by 10, fastai's
  ``minimum``), ``"valley"`` (fastai's default since v2.5: two thirds of the way down the
  longest stretch over which the smoothed loss keeps falling) or ``"steepest"`` (the
  steepest descent of the smoothed loss before its minimum; Smith 2017, ktrain,
  fastai's ``steep``, which on real data left the bounds most often).
  `choose_learning_rate` turns a finding into the rate to train with:
  a sweep that recorded too little, or a suggestion outside the phase's bounds
  (`HEAD_BOUNDS`, `FINE_TUNE_BOUNDS`), falls back to the default rate with the
  reason, so the finder never stops a run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.batches import epoch_seed, set_epoch
from templates.data.files import atomic_path, write_json
from templates.training.seeds import reseed_generators

SUGGESTION_RULES = ("steepest", "valley", "minimum_over_10")
# The rule every finder uses unless told otherwise (`TransferPlan.finder_rule`'s default):
# the loss minimum / 10, chosen on validation data (docs/results.md).
DEFAULT_RULE = "minimum_over_10"


# Rates outside these bounds come from a sweep that went wrong (a head suggestion of
# 0.42 and fine-tuning suggestions of 1e-7 were seen on real photos): Adam trains a new
# head between 1e-4 and 0.3 (small heads on cached features take the high end), and
# fine-tunes pretrained weights between 1e-6 and 3e-3, in every recipe here and in the
# keras-io and fastai examples.
HEAD_BOUNDS = (1e-4, 0.3)


FINE_TUNE_BOUNDS = (1e-6, 3e-3)


@dataclasses.dataclass
class LearningRateFinding:
    """What `find_learning_rate` measured.

    Attributes:
        learning_rates: The rate of each step.
        losses: The training loss of each step.
        smoothed_losses: ``losses`` smoothed exponentially (bias-corrected).
        suggestion: The suggested rate (by ``rule``), or ``None`` when the sweep
            recorded too few steps to suggest one (``problem`` says why).
        stopped_early: Whether the sweep stopped because the loss diverged.
        rule: The suggestion rule (one of `SUGGESTION_RULES`).
        problem: Why no rate could be suggested, or ``None``.
    """

    learning_rates: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggestion: float | None
    stopped_early: bool
    rule: str = DEFAULT_RULE
    problem: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def write_json(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())

    def plot(self, path: str | os.PathLike, title: str = "Learning-rate finder") -> None:
        """Loss against learning rate (log scale), the suggestion marked; a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 4.5))
        axis.plot(self.learning_rates, self.losses, color="0.75", label="loss per step")
        axis.plot(self.learning_rates, self.smoothed_losses, color="tab:blue",
                  label="smoothed loss")
        if self.suggestion is not None:
            axis.axvline(self.suggestion, color="tab:red", linestyle="--",
                         label=f"suggestion {self.suggestion:.2e} ({self.rule})")
        axis.set_xscale("log")
        axis.set_xlabel("learning rate (log scale)")
        axis.set_ylabel("training loss")
        finite = [value for value in self.smoothed_losses if math.isfinite(value)] or [0.0]
        low, high = min(finite), finite[0]
        axis.set_ylim(low - 0.1 * abs(high - low + 1e-9), high + 0.5 * abs(high - low + 1e-9))
        axis.set_title(title)
        axis.grid(alpha=0.3, which="both")
        axis.legend()
        figure.tight_layout()
        with atomic_path(path, suffix=".png") as temporary:
            figure.savefig(temporary, dpi=100)
        plt.close(figure)


def suggest_learning_rate(learning_rates: list[float], smoothed_losses: list[float],
                          skip_start: int = 3, rule: str = DEFAULT_RULE) -> float:
    """Suggest a rate from a sweep's smoothed loss curve.

    Args:
        learning_rates: Increasing rates, one per step.
        smoothed_losses: The smoothed loss at each rate.
        skip_start: Steps ignored at the start (the smoothing is still warming up).
        rule: ``"steepest"``: where the loss falls fastest per decade, before its
            minimum. ``"valley"``: fastai's rule, two thirds of the way down the
            longest stretch of falling loss. ``"minimum_over_10"``: the rate at the
            loss minimum, divided by 10.
    """
    if rule not in SUGGESTION_RULES:
        raise CookbookError(f"Unknown suggestion rule {rule!r}; choose from "
                            f"{', '.join(SUGGESTION_RULES)}.")
    if len(learning_rates) != len(smoothed_losses) or len(learning_rates) < 3:
        raise CookbookError("Need at least three (rate, loss) pairs of equal length to suggest "
                            "a learning rate; run the finder for more steps.")
    rates = np.log10(np.asarray(learning_rates, dtype="float64"))
    losses = np.asarray(smoothed_losses, dtype="float64")
    losses = np.where(np.isfinite(losses), losses, np.inf)
    if rule == "minimum_over_10":
        return float(learning_rates[int(np.argmin(losses))]) / 10.0
    if rule == "valley":
        return float(learning_rates[_valley_index(losses)])
    end = int(np.argmin(losses)) + 1
    start = min(skip_start, max(end - 2, 0))
    if end - start < 2:
        return float(learning_rates[0])
    slopes = np.gradient(losses[start:end], rates[start:end])
    return float(learning_rates[start + int(np.argmin(slopes))])


def _valley_index(losses: np.ndarray) -> int:
    """fastai's ``valley``: the longest decreasing run (not necessarily contiguous)
    of the loss curve, and the step two thirds of the way along it."""
    count = len(losses)
    longest = [1] * count
    best_start, best_end = 0, 0
    for later in range(1, count):
        for earlier in range(later):
            if losses[later] < losses[earlier] and longest[later] < longest[earlier] + 1:
                longest[later] = longest[earlier] + 1
        if longest[best_end] < longest[later]:
            best_end = later
            best_start = best_end - longest[best_end]
    sections = (best_end - best_start) / 3
    return max(0, min(count - 1, best_start + int(sections) + int(sections / 2)))


def choose_learning_rate(finding: LearningRateFinding, default: float,
                         bounds: tuple[float, float]) -> tuple[float, str | None]:
    """The rate to train with: the finding's suggestion, or ``default`` with the reason.

    Args:
        finding: From `find_learning_rate`.
        default: The rate used when the suggestion cannot be trusted.
        bounds: ``(lowest, highest)`` rate to accept (`HEAD_BOUNDS`,
            `FINE_TUNE_BOUNDS`).

    Returns:
        ``(rate, reason)``: ``reason`` is ``None`` when the suggestion is used, else
        one sentence saying why ``default`` is used instead.
    """
    lowest, highest = bounds
    if finding.suggestion is None:
        return default, f"{finding.problem} Training at the default rate {default:g}."
    if not lowest <= finding.suggestion <= highest:
        return default, (
            f"the suggestion {finding.suggestion:.2e} lies outside the bounds "
            f"[{lowest:g}, {highest:g}] for this phase, so the sweep is not trusted; "
            f"training at the default rate {default:g}.")
    return finding.suggestion, None


def finder_bounds(phase: str) -> tuple[float, float]:
    """The rates a finder suggestion must lie within for ``phase`` (fine-tuning phases:
    `FINE_TUNE_BOUNDS`; head or whole-model training: `HEAD_BOUNDS`)."""
    return FINE_TUNE_BOUNDS if "fine_tune" in phase else HEAD_BOUNDS


def record_finding(finding: LearningRateFinding, output_dir: str | os.PathLike, phase: str,
                   title: str, default: float) -> float:
    """Write ``lr_finder_PHASE.json/.png``, print and return the rate to train with.

    The rate is the finder's suggestion, or ``default`` when the sweep is unusable or
    its suggestion lies outside `finder_bounds` (the message and the JSON's
    ``fallback`` say why): the finder never stops a run.
    """
    rate, reason = choose_learning_rate(finding, default, finder_bounds(phase))
    write_json(os.path.join(os.fspath(output_dir), f"lr_finder_{phase}.json"),
               {**finding.to_dict(), "used": rate, "fallback": reason})
    finding.plot(os.path.join(os.fspath(output_dir), f"lr_finder_{phase}.png"), title=title)
    if reason is None:
        print(f"Learning-rate finder ({phase}): suggests {rate:.2e}")
    else:
        print(f"Learning-rate finder ({phase}): {reason}")
    return rate


class LossSweep:
    """The finder's bookkeeping, shared by the ``fit`` callback and training loops.

    ``rate()`` is the learning rate for the next step; ``record(loss)`` keeps the loss
    and its bias-corrected exponential smoothing and says whether to stop (the sweep is
    over, the loss is not finite, or it diverged); ``finding()`` turns the record into a
    `LearningRateFinding`.

    Divergence is fastai's test, the smoothed loss above ``divergence`` times its best,
    with two guards for a model that already fits its data (the fine-tuning sweep starts
    from a trained head): nothing but a non-finite loss stops the sweep in its first
    ``warmup_steps`` steps, and the loss must also exceed ``divergence`` times where it
    stood after them. On EfficientNet-Lite0's cats (head at 0.98), batch losses of 0.01
    then 0.2 at a rate of 1e-7 had stopped the sweep after two steps.
    """

    def __init__(self, rates: np.ndarray, smoothing: float = 0.9, divergence: float = 4.0,
                 warmup_steps: int = 5):
        self.rates = rates
        self.smoothing = smoothing
        self.divergence = divergence
        self.warmup_steps = warmup_steps
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.average = 0.0
        self.best = math.inf
        self.start = 0.0  # the smoothed loss at the end of the warm-up
        self.stopped_early = False

    def rate(self) -> float:
        return float(self.rates[len(self.losses)])

    def record(self, loss: float) -> bool:
        step = len(self.losses) + 1
        self.losses.append(loss)
        self.average = self.smoothing * self.average + (1 - self.smoothing) * loss
        smoothed = self.average / (1 - self.smoothing ** step)
        self.smoothed.append(smoothed)
        self.best = min(self.best, smoothed)
        if step == self.warmup_steps:
            self.start = smoothed
        diverged = (step > self.warmup_steps
                    and smoothed > self.divergence * max(self.best, self.start))
        if not math.isfinite(loss) or diverged:
            self.stopped_early = True
            return True
        return step >= len(self.rates)

    def finding(self, rule: str = DEFAULT_RULE) -> LearningRateFinding:
        """The sweep's record and suggestion; with fewer than 5 steps recorded the
        suggestion is ``None`` and ``problem`` says why (it never raises)."""
        recorded = len(self.losses)
        learning_rates = [float(rate) for rate in self.rates[:recorded]]
        suggestion, problem = None, None
        if recorded < 5:
            problem = (f"The learning-rate finder recorded only {recorded} steps (the "
                       "data is too small or the loss diverged at once), too few to "
                       "suggest a rate.")
        else:
            suggestion = suggest_learning_rate(learning_rates, self.smoothed, rule=rule)
        return LearningRateFinding(
            learning_rates=learning_rates, losses=self.losses,
            smoothed_losses=self.smoothed, suggestion=suggestion,
            stopped_early=self.stopped_early, rule=rule, problem=problem)


def sweep_rates(start_learning_rate: float, end_learning_rate: float, steps: int,
                smoothing: float = 0.9) -> np.ndarray:
    """The finder's exponentially spaced rates, after checking its arguments."""
    if not 0 < start_learning_rate < end_learning_rate:
        raise CookbookError(
            f"Need 0 < start_learning_rate < end_learning_rate; got {start_learning_rate} "
            f"and {end_learning_rate}.")
    if steps < 5:
        raise CookbookError(f"steps must be at least 5; got {steps}.")
    if not 0 <= smoothing < 1:
        raise CookbookError(f"smoothing must be in [0, 1); got {smoothing}.")
    return np.geomspace(start_learning_rate, end_learning_rate, steps)


class _SweepLearningRate(keras.callbacks.Callback):
    """Sets the rate before each batch; records the loss after it; stops on divergence.

    Keras's batch logs carry the epoch's running mean of the loss, not the batch's own
    (a sweep recorded from them lags behind the rate and resets every epoch); the
    batch's loss is what it added to that mean: ``k * mean_k - (k - 1) * mean_(k-1)``
    for the ``k``-th batch of the epoch, which is what fastai's finder and the
    multi-worker loop (`templates.training.multi_worker`) record.
    """

    def __init__(self, sweep: LossSweep):
        super().__init__()
        self.sweep = sweep
        self.previous_mean = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.previous_mean = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.sweep.rate())

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"]) if logs and "loss" in logs else math.nan
        loss = batch_loss(mean, self.previous_mean, int(batch) + 1)
        self.previous_mean = mean
        if self.sweep.record(loss):
            self.model.stop_training = True


def batch_loss(mean: float, previous_mean: float, count: int) -> float:
    """The loss of the ``count``-th batch of an epoch from the epoch's running means
    after it (``mean``) and before it (``previous_mean``); never below 0 (float32
    rounding of the means)."""
    if count <= 1 or not math.isfinite(mean):
        return mean
    return max(0.0, count * mean - (count - 1) * previous_mean)


def find_learning_rate(
    model: keras.Model,
    train_data: Iterable,
    start_learning_rate: float = 1e-7,
    end_learning_rate: float = 10.0,
    steps: int = 100,
    optimizer: Callable[[float], keras.optimizers.Optimizer] | None = None,
    loss: str | keras.losses.Loss | None = None,
    smoothing: float = 0.9,
    divergence: float = 4.0,
    rule: str = DEFAULT_RULE,
    seed: int = 0,
) -> LearningRateFinding:
    """Sweep the learning rate exponentially on ``train_data``; suggest one.

    The model trains for at most ``steps`` batches (cycling through ``train_data`` as
    needed), the rate growing from ``start_learning_rate`` to ``end_learning_rate``; the
    sweep stops early once the smoothed loss exceeds ``divergence`` times its best.
    Afterwards the model's weights are restored; it is left compiled with the sweep's
    optimizer, so compile it again before training (the template phases do).

    Args:
        model: The model to probe (e.g. ``transfer.head`` on cached features, or
            ``transfer.model`` after `templates.models.freezing.unfreeze_from` for fine-tuning).
        train_data: What ``fit`` accepts: a `tf.data.Dataset`, a `keras.utils.PyDataset`
            (e.g. `templates.data.batches.ShuffledArrays`), ...
        start_learning_rate, end_learning_rate: The sweep's bounds.
        steps: Most batches to train.
        optimizer: Builds the optimiser from a rate (default Adam).
        loss: The training loss; ``None``: sparse categorical cross-entropy, or binary
            cross-entropy for a multi-label model (`templates.data.multi_label`).
        smoothing: Exponential smoothing factor of the loss curve.
        divergence: Stop once the smoothed loss exceeds this multiple of its best.
        rule: How to suggest a rate (one of `SUGGESTION_RULES`).
        seed: The sweep reads ``train_data`` from its epoch-0 order on and seeds the
            model's dropout from ``seed`` (`templates.data.batches`), whatever the
            data served before: the same model and data give the same suggestion in a
            resumed run.

    Returns:
        The `LearningRateFinding`; its ``suggestion`` is ``None`` (with the reason in
        ``problem``) when the sweep recorded too few steps. Pass it to
        `choose_learning_rate` for a rate that is always usable.
    """
    if rule not in SUGGESTION_RULES:
        raise CookbookError(f"Unknown suggestion rule {rule!r}; choose from "
                            f"{', '.join(SUGGESTION_RULES)}.")
    if loss is None:
        from templates.training.losses import classification_loss

        loss = classification_loss(model)
    rates = sweep_rates(start_learning_rate, end_learning_rate, steps, smoothing)
    saved = [np.array(weight) for weight in model.get_weights()]
    build = optimizer or (lambda rate: keras.optimizers.Adam(learning_rate=rate))
    model.compile(optimizer=build(float(rates[0])), loss=loss)
    model.optimizer.build(model.trainable_variables)  # before tracing: one trace, not two
    sweep = LossSweep(rates, smoothing, divergence)
    try:
        batches_per_epoch = len(train_data)  # type: ignore[arg-type]
    except TypeError:
        batches_per_epoch = None
    epochs = math.ceil(steps / batches_per_epoch) if batches_per_epoch else steps
    try:
        # Epoch 0's order onwards and freshly seeded dropout, whatever the data served
        # before: the same model and data give the same sweep in a resumed run.
        set_epoch(train_data, 0)
        reseed_generators(model, epoch_seed(seed, 0))
        model.fit(train_data, epochs=epochs, callbacks=[_SweepLearningRate(sweep)], verbose=0,
                  shuffle=False)
    finally:
        model.set_weights(saved)
    return sweep.finding(rule)
