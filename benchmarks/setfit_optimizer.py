"""SetFit's optimiser for the contrastive phase, on validation: levers for 32 per class.

sentence-transformers (which SetFit trains through) uses AdamW with weight decay 0.01
(biases and LayerNorm weights excluded) and a linear decay after the warm-up; the
text-encoder recipe's ``--contrastive`` uses no weight decay and a cosine decay
(`templates.training.contrastive`). This runs ``benchmarks.few_shot_text --methods
contrastive20`` at 32 sentences per class on the selection draws (seeds 11-15) with
SetFit's optimiser swapped in for the contrastive phase only (``--optimizer setfit``),
the recipe's with the gradients clipped to a global norm of 1 as SetFit's trainer clips
them (``--optimizer clipped``), the recipe's keeping a moving average of the weights
(``--optimizer ema``, not SetFit's), or as the recipe has it (``--optimizer recipe``), and
prints that benchmark's JSON.

    python -m benchmarks.setfit_optimizer --optimizer setfit \\
        --preset ../shared/presets/all-MiniLM-L6-v2 --data ../shared/data/text/sst2
"""

from __future__ import annotations

import argparse
import types

import keras

from benchmarks import few_shot_text
from templates.training import contrastive

WEIGHT_DECAY = 0.01
NOT_DECAYED = ["bias", "gamma", "beta"]  # LayerNorm's weights are gamma and beta in Keras
MAX_GRADIENT_NORM = 1.0  # transformers.TrainingArguments.max_grad_norm's default
EMA_MOMENTUM = 0.99  # Keras's default


class WarmupLinear(keras.optimizers.schedules.LearningRateSchedule):
    """sentence-transformers' WarmupLinear: up to ``peak`` over ``warmup`` steps, then
    down to 0 at ``total``."""

    def __init__(self, peak: float, warmup: int, total: int):
        self.peak, self.warmup, self.total = peak, max(warmup, 1), max(total, 1)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        rising = self.peak * step / self.warmup
        falling = self.peak * keras.ops.maximum(
            0.0, (self.total - step) / max(self.total - self.warmup, 1))
        return keras.ops.where(step < self.warmup, rising, falling)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total}


def swap_contrastive_optimizers(adamw, schedules) -> None:
    """`templates.training.contrastive` sees ``keras.optimizers.AdamW`` and
    ``keras.optimizers.schedules`` as these (this process); the rest of Keras as it is."""
    namespace = {name: getattr(keras, name) for name in dir(keras) if not name.startswith("__")}
    namespace["optimizers"] = types.SimpleNamespace(AdamW=adamw, schedules=schedules)
    contrastive.keras = types.SimpleNamespace(**namespace)


def use_setfits_optimizer() -> None:
    """The contrastive phase's AdamW and schedule replaced by SetFit's (this process)."""

    def adamw(learning_rate, weight_decay=0.0):
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=WEIGHT_DECAY)
        optimizer.exclude_from_weight_decay(var_names=NOT_DECAYED)
        return optimizer

    def schedule(initial, decay_steps, warmup_target, warmup_steps):
        return WarmupLinear(warmup_target, warmup_steps, decay_steps + warmup_steps)

    swap_contrastive_optimizers(adamw, types.SimpleNamespace(CosineDecay=schedule))


def use_clipped_gradients() -> None:
    """The recipe's contrastive AdamW with the gradients clipped to a global norm of 1
    (the Hugging Face trainer's ``max_grad_norm``, under SetFit 1.x and
    sentence-transformers' own ``fit`` alike), nothing else changed (this process)."""

    def adamw(learning_rate, weight_decay=0.0):
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay,
                                      global_clipnorm=MAX_GRADIENT_NORM)

    swap_contrastive_optimizers(adamw, keras.optimizers.schedules)


def use_weight_average() -> None:
    """The recipe's contrastive AdamW keeping an exponential moving average of the
    weights (Keras's ``use_ema``, momentum 0.99: about the last 100 of the 160 steps at 32
    per class, the first steps' weights still a fifth of it), the average written into
    the encoder when ``fit`` ends; nothing else changed (this process). Not SetFit's: a
    lever for the variance of one training run."""

    def adamw(learning_rate, weight_decay=0.0):
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay,
                                      use_ema=True, ema_momentum=EMA_MOMENTUM)

    swap_contrastive_optimizers(adamw, keras.optimizers.schedules)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.setfit_optimizer",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--optimizer", choices=("setfit", "recipe", "clipped", "ema"),
                        required=True)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--data", required=True, help="SST-2's stsa.binary.{train,dev,test}.")
    parser.add_argument("--output", default="runs/setfit_optimizer")
    args = parser.parse_args(argv)
    if args.optimizer == "setfit":
        use_setfits_optimizer()
    elif args.optimizer == "clipped":
        use_clipped_gradients()
    elif args.optimizer == "ema":
        use_weight_average()
    return few_shot_text.main(["--preset", args.preset, "--data", args.data, "--counts", "32",
                               "--methods", "contrastive20", "--seed", "11",
                               "--output", f"{args.output}_{args.optimizer}"])


if __name__ == "__main__":
    main()
