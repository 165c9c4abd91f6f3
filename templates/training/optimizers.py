"""Per-variable learning rates: discriminative Adam and SGD, one-cycle momentum.

* Discriminative learning rates: Keras 3 has no per-layer rate, so `DiscriminativeAdam`
  (and `DiscriminativeSGD`) multiply the rate per variable inside the update rule;
  `discriminative_multipliers` spreads the multipliers geometrically over a backbone's
  blocks (`templates.models.backbones.block_boundaries`), earlier blocks learning slower.

Plain Keras 3: runs on any backend.
"""

from __future__ import annotations

import keras

from templates.data.errors import CookbookError
from templates.models.backbones import block_boundaries


class _PerVariableLearningRates:
    """Mixin: scales the learning rate of each variable by its group's multiplier.

    The multiplier applies to the rate inside the optimiser's own update rule, so for
    Adam a variable with multiplier 0.1 moves 10x less per step (scaling gradients
    would not do this: Adam's update is invariant to the gradient's scale).
    Multipliers are keyed by variable path (``variable.path``) so they serialise.
    """

    def __init__(self, *args, learning_rate_multipliers: dict[str, float] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.learning_rate_multipliers = dict(learning_rate_multipliers or {})
        for path, multiplier in self.learning_rate_multipliers.items():
            if not multiplier >= 0:
                raise CookbookError(f"Learning-rate multiplier for {path!r} must be >= 0; "
                                    f"got {multiplier}.")
        self._multiplier_by_key: dict = {}

    def build(self, variables):
        for variable in variables:
            multiplier = self.learning_rate_multipliers.get(variable.path, 1.0)
            self._multiplier_by_key[self._var_key(variable)] = float(multiplier)
        super().build(variables)

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier_by_key.get(self._var_key(variable), 1.0)
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(),
                "learning_rate_multipliers": self.learning_rate_multipliers}


class _ScheduledMomentum:
    """Mixin for Adam-style optimisers: ``beta_1`` follows ``momentum_schedule``.

    Keras optimisers read ``beta_1`` as a constant when the training step is traced, so
    assigning it from a callback changes nothing; here the update step computes it from
    the optimiser's step counter inside the traced function. (Adam's bias correction
    then uses the current ``beta_1``, as fastai's one-cycle Adam does.)
    """

    def __init__(self, *args, momentum_schedule=None, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(momentum_schedule, dict):
            momentum_schedule = keras.saving.deserialize_keras_object(momentum_schedule)
        self.momentum_schedule = momentum_schedule

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum_schedule is None:
            return super().update_step(gradient, variable, learning_rate)
        constant = self.beta_1
        object.__setattr__(self, "beta_1", self.momentum_schedule(self.iterations))
        try:
            return super().update_step(gradient, variable, learning_rate)
        finally:
            object.__setattr__(self, "beta_1", constant)

    def get_config(self) -> dict:
        config = super().get_config()
        if self.momentum_schedule is not None:
            config["momentum_schedule"] = keras.saving.serialize_keras_object(
                self.momentum_schedule)
        return config


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class DiscriminativeAdam(_ScheduledMomentum, _PerVariableLearningRates, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with a learning-rate multiplier per variable, and
    optionally a momentum (``beta_1``) schedule such as `OneCycle.momentum_schedule`.

    Args:
        learning_rate_multipliers: ``{variable.path: multiplier}``; variables not
            listed use 1.0. Build it with `discriminative_multipliers`.
        momentum_schedule: ``beta_1`` as a function of the step (`CyclicalMomentum`).
        **kwargs: `keras.optimizers.Adam` arguments.
    """


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class DiscriminativeSGD(_PerVariableLearningRates, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with a learning-rate multiplier per variable."""


def discriminative_multipliers(
    backbone: keras.Model, from_layer: str | int | None = None, factor: float = 2.6,
) -> dict[str, float]:
    """Learning-rate multipliers falling geometrically from the head to earlier blocks.

    As in fastai's layer groups, the head keeps the full rate (1.0, it is not in
    ``backbone``), the backbone's last block gets ``1 / factor``, the block before it
    ``1 / factor**2``, and so on (fastai's default spread is 2.6 per group). Only layers
    from ``from_layer`` on are listed: earlier ones are frozen anyway. A backbone with
    no recognised blocks (an embedding) is one group at ``1 / factor``.

    Returns:
        ``{variable.path: multiplier}`` for `DiscriminativeAdam`.
    """
    if factor < 1:
        raise CookbookError(f"factor must be >= 1 (earlier blocks learn slower); got {factor}.")
    layers = backbone.layers
    if from_layer is None:
        start = 0
    elif isinstance(from_layer, str):
        start = [layer.name for layer in layers].index(from_layer)
    else:
        start = from_layer % len(layers)
    boundaries = [index for _, index in block_boundaries(backbone)]
    multipliers: dict[str, float] = {}
    for index in range(start, len(layers)):
        later_blocks = sum(1 for boundary in boundaries if boundary > index)
        for variable in layers[index].weights:
            multipliers[variable.path] = float(factor ** -(1 + later_blocks))
    return multipliers
