"""The training plan: one dataclass that owns every setting of a transfer.

`TransferPlan` holds the seed, the epochs of both phases, the rates and how they are
found, the schedule, augmentation, class weights, early stopping and the callbacks; data,
checkpoints, comparisons and sweeps read them from it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.settings import setting
from templates.data.feature_store import DEFAULT_FEATURE_MEMORY_GB
from templates.training.finder import DEFAULT_RULE, SUGGESTION_RULES
from templates.training.schedules import SCHEDULES

MONITORS = ("val_accuracy", "val_loss", "val_balanced_accuracy", "val_macro_f1",
            "val_micro_f1")


PHASES = ("head", "fine_tune")


def tensorboard_logs(directory: str | os.PathLike | None
                     ) -> Callable[[str], list[keras.callbacks.Callback]]:
    """``phase name -> callbacks``: a TensorBoard callback logging to ``DIRECTORY/PHASE``
    (none without a folder), for `TransferPlan.callbacks` and the comparisons' and
    sweeps' ``phase_callbacks``."""
    def callbacks(phase: str) -> list[keras.callbacks.Callback]:
        if not directory:
            return []
        return [keras.callbacks.TensorBoard(log_dir=os.path.join(directory, phase))]
    return callbacks

KEEP_FINE_TUNING = ("if_better", "always")
HEAD_INITS = ("random", "class_means")

# A head on cached features takes at least this many steps per epoch it is given: on 16
# labelled sentences (one batch) ten head epochs were ten steps, and the head ended near
# chance in the one draw looked at (docs/results.md, "Few labels"; not checked over seeds).
HEAD_STEPS_AT_LEAST = 16


@dataclasses.dataclass
class TransferPlan:
    """How a transfer trains: everything `run_transfer` needs but the model and data.

    ``TransferPlan()`` is a good start (ten head epochs, three of fine-tuning, Adam at
    1e-3 then 1e-4, early stopping after three epochs without a better validation
    accuracy, the best epoch restored). Everything but ``augmentation`` and
    ``callbacks`` is plain data: `to_dict` / `from_dict` round-trip it through JSON.

    Attributes:
        head_epochs: Epochs of phase 1 (reused part frozen).
        fine_tune_epochs: Epochs of phase 2 (0 skips fine-tuning; not both 0, unless
            the head starts from the class means).
        head_init: How the head's output layer starts (`HEAD_INITS`): ``"random"``, or
            ``"class_means"``, the nearest class mean of the training examples'
            features (`templates.models.nearest_class_mean.imprint_class_means`); with
            ``head_epochs=0`` the head stays that classifier, which beats a trained head
            at 1-20 photos per class (docs/results.md, "Few labels").
        learning_rate: The head's Adam rate, in (0, 1] (with ``find_learning_rates``,
            the rate used when the finder's sweep cannot be trusted).
        fine_tune_learning_rate: The fine-tuning rate (likewise).
        scratch_learning_rate: The rate of the same model from random weights
            (`templates.training.comparison.train_from_scratch`); ``None``:
            ``learning_rate``. A transformer from scratch needs a far lower rate than a
            head on its features (the text-encoder recipe: 1e-4 against 1e-2).
        batch_size: Examples per batch when training on cached features (batches the
            caller gives are used as they are).
        cache_features: Train the head on the frozen part's features, computed once.
        schedule: Rate within each phase: one of `templates.training.schedules.SCHEDULES`.
        discriminative_factor: Fine-tune each earlier block of the reused part this
            many times slower than the next (fastai: 2.6); ``None``: one rate.
        steps_per_epoch: Batches per epoch, for a schedule; ``None`` reads it from the
            training batches.
        find_learning_rates: Run the learning-rate finder before each phase.
        finder_rule: How the finder suggests a rate (`SUGGESTION_RULES`): the loss
            minimum / 10 by default, chosen on the validation data of selection seeds,
            photos and text (docs/results.md).
        fine_tune_from: First layer of the reused part to unfreeze: ``"default"`` (the
            template's choice), a layer name or index, or ``None`` (all of it).
        patience: Stop a phase after this many epochs without a better ``monitor``
            (0: never early).
        restore_best: End each phase with its best epoch's weights.
        monitor: What early stopping and best-epoch restore watch (`MONITORS`).
        seed: Every epoch's data order, dropout and augmentation are drawn from
            ``(seed, epoch)`` (`templates.data.batches`).
        class_weight: ``{label: weight}`` scaling each training example's loss in both
            phases (and the scratch run of a comparison), e.g. `balanced_class_weight`
            for imbalanced classes; ``None``: every example counts 1.
        label_smoothing: Train towards smoothed targets (the true class gets
            ``1 - s + s / classes``; `templates.training.losses`) in both phases and the scratch
            run of a comparison; 0: none. The finder sweeps the plain loss.
        augmented_views: With ``augmentation`` and ``cache_features``: the head trains
            on cached features of the originals and of K augmented views of every
            training example, extracted once (`templates.training.phases.head_training_features`);
            fine-tuning applies ``augmentation`` in the graph. 0: no views.
        head_epoch_factor: Multiplies ``head_epochs`` and the head's patience; set by
            `for_training_set` so that a head on cached features of a small training
            set takes at least `HEAD_STEPS_AT_LEAST` steps per head epoch.
        keep_fine_tuning: ``"if_better"``: after fine-tuning, the run keeps the
            fine-tuned weights only if they beat the head's on the validation data
            (``monitor``; ``val_accuracy`` for ``val_loss``, which the scores leave out),
            else it puts the head's weights back (`TransferRun.fine_tuning_kept` says
            which); ``"always"``: keep them whatever they score. The multi-worker loop
            (`templates.training.multi_worker`) keeps them always (not yet one phase
            implementation with ``fit``'s, issue 38).
        feature_memory_gb: The head's cached features (training and validation
            together, every view) stay in memory up to this many GB; beyond it they are
            memory-mapped from a temporary file
            (`templates.data.feature_store.FeatureStore`). ``None``: no limit.
        augmentation: Keras layers applied to training inputs (with
            ``cache_features=False``, or through ``augmented_views``); not serialised.
        callbacks: Extra Keras callbacks per phase, ``{"head": [...], "fine_tune":
            [...]}`` (e.g. TensorBoard); not serialised.
    """

    # A field with a `setting` is also a command-line flag of every recipe, spelled as
    # the field (``--head-epochs``) with the help and range given here
    # (`templates.cli.add_plan_arguments`, `templates.data.settings`); a recipe changes only its default.
    head_epochs: int = setting(
        10, "Epochs of phase 1: the new head on the frozen reused part.", minimum=0)
    fine_tune_epochs: int = setting(
        3, "Epochs of phase 2, the reused part unfrozen (0 skips it).", minimum=0)
    head_init: str = setting(
        "random", "How the head's output layer starts: random, or class_means: each "
        "class's weights the mean direction of its training examples' features (weight "
        "imprinting); with --head-epochs 0 the head is the nearest-class-mean classifier, "
        "ahead of a trained head with 1-20 photos per class (docs/results.md).",
        choices=HEAD_INITS)
    learning_rate: float = setting(1e-3, "Phase 1's learning rate.", above=0, maximum=1)
    fine_tune_learning_rate: float = setting(
        1e-4, "Phase 2's learning rate (well below phase 1's).", above=0, maximum=1)
    scratch_learning_rate: float | None = setting(
        None, "The rate of --compare-scratch's model (every layer from random weights); "
        "none: phase 1's rate.", above=0, maximum=1)
    batch_size: int = setting(32, "Examples per batch and replica.", minimum=1,
                              maximum=65536)
    cache_features: bool = True
    schedule: str = setting(
        "constant", "Learning-rate schedule within each phase: constant, warm-up (a tenth of "
        "the steps) then cosine decay, or one-cycle (the rate given is the peak).",
        choices=SCHEDULES)
    discriminative_factor: float | None = setting(
        None, "Fine-tune each earlier backbone block F times slower than the next (e.g. "
        "2.6); none: one rate for every unfrozen layer.", minimum=1, maximum=100,
        metavar="F")
    steps_per_epoch: int | None = None
    find_learning_rates: bool = setting(
        False, "Run the learning-rate finder before each phase and use its suggestion "
        "(--finder-rule; the given rate when the sweep is unusable or out of bounds), and "
        "write lr_finder_PHASE.png/.json.")
    finder_rule: str = setting(
        DEFAULT_RULE, "How the finder suggests a rate from its sweep: fastai's "
        "valley, the steepest descent of the loss, or the loss minimum / 10 (chosen on "
        "validation data: docs/results.md).", choices=SUGGESTION_RULES)
    fine_tune_from: str | int | None = "default"
    patience: int = setting(
        3, "Stop a phase after this many epochs without a better --monitor score (0: "
        "never stop early).", minimum=0)
    restore_best: bool = setting(
        True, "End each phase with its best epoch's weights (by --monitor) instead of its "
        "last epoch's.")
    monitor: str = setting(
        "val_accuracy", "What early stopping, best-epoch restore and keeping fine-tuning "
        "watch: validation accuracy or loss, or for imbalanced classes the balanced "
        "accuracy or macro F1.", choices=MONITORS)
    seed: int = setting(
        0, "Seeds the splits, every epoch's order, dropout and augmentation.", minimum=0,
        maximum=2**32 - 1)
    augmented_views: int = 0
    head_epoch_factor: int = 1
    class_weight: dict[int, float] | str | None = setting(
        None, "balanced: weigh each training example's loss by the inverse of its "
        "class's frequency (for imbalanced classes), in both phases and the scratch run.",
        choices=("none", "balanced"))
    label_smoothing: float = setting(
        0.0, "Train towards smoothed targets (the true class 1 - S + S / classes), in both "
        "phases and the scratch run.", minimum=0, below=1, metavar="S")
    feature_memory_gb: float | None = DEFAULT_FEATURE_MEMORY_GB
    keep_fine_tuning: str = setting(
        "if_better", "if_better: keep the fine-tuned weights only if they beat the head's "
        "on the validation data, else end with the head's (metrics.json's "
        "fine_tuning_kept says which); always: keep them whatever they score.",
        choices=KEEP_FINE_TUNING)
    augmentation: keras.layers.Layer | None = dataclasses.field(
        default=None, repr=False, compare=False)
    callbacks: dict[str, list[keras.callbacks.Callback]] = dataclasses.field(
        default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        checks = [
            (self.head_epochs >= 0 and self.fine_tune_epochs >= 0,
             f"epochs must be 0 or more; got head_epochs={self.head_epochs}, "
             f"fine_tune_epochs={self.fine_tune_epochs}"),
            (self.head_epochs + self.fine_tune_epochs > 0 or self.head_init == "class_means",
             "head_epochs and fine_tune_epochs are both 0: nothing would be trained (with "
             "head_init='class_means' the head needs no training)"),
            (self.head_init in HEAD_INITS,
             f"unknown head_init {self.head_init!r}; choose from {', '.join(HEAD_INITS)}"),
            (all(_finite(rate) and 0 < rate <= 1
                 for rate in (self.learning_rate, self.fine_tune_learning_rate)),
             f"learning rates must be finite and in (0, 1]; got {self.learning_rate} and "
             f"{self.fine_tune_learning_rate}"),
            (self.batch_size >= 1, f"batch_size must be at least 1; got {self.batch_size}"),
            (self.schedule in SCHEDULES,
             f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}"),
            (self.discriminative_factor is None or (
                _finite(self.discriminative_factor) and 1 <= self.discriminative_factor <= 100),
             f"discriminative_factor must be in [1, 100] (earlier blocks learn slower); got "
             f"{self.discriminative_factor}"),
            (self.finder_rule in SUGGESTION_RULES,
             f"unknown finder_rule {self.finder_rule!r}; choose from "
             f"{', '.join(SUGGESTION_RULES)}"),
            (self.patience >= 0, f"patience must be 0 or more; got {self.patience}"),
            (self.monitor in MONITORS,
             f"unknown monitor {self.monitor!r}; choose from {', '.join(MONITORS)}"),
            (self.seed >= 0, f"seed must be a non-negative integer; got {self.seed}"),
            (_finite(self.label_smoothing) and 0.0 <= self.label_smoothing < 1.0,
             f"label_smoothing must be in [0, 1); got {self.label_smoothing}"),
            (self.feature_memory_gb is None or (_finite(self.feature_memory_gb)
                                                and self.feature_memory_gb >= 0),
             f"feature_memory_gb must be 0 or more (or None: no limit); got "
             f"{self.feature_memory_gb}"),
            (self.keep_fine_tuning in KEEP_FINE_TUNING,
             f"unknown keep_fine_tuning {self.keep_fine_tuning!r}; choose from "
             f"{', '.join(KEEP_FINE_TUNING)}"),
            (self.augmented_views >= 0,
             f"augmented_views must be 0 or more; got {self.augmented_views}"),
            (self.augmentation is None or not self.cache_features or self.augmented_views,
             "augmentation changes the inputs every epoch, so the head cannot train on "
             "features cached once: set cache_features=False, or augmented_views=K to "
             "cache the features of K augmented views of every training example"),
            (not self.augmented_views or self.augmentation is not None,
             "augmented_views needs an augmentation to draw the views with"),
            (self.class_weight is None or self.class_weight == "balanced" or (
                isinstance(self.class_weight, dict) and self.class_weight
                and all(_finite(float(weight)) and float(weight) > 0
                        for weight in self.class_weight.values())),
             f"class_weight must be None, 'balanced' or a non-empty {{label: positive "
             f"weight}} dict; "
             f"got {self.class_weight!r}"),
            (set(self.callbacks) <= set(PHASES),
             f"callbacks are given per phase, {{'head': [...], 'fine_tune': [...]}}; got "
             f"the keys {sorted(self.callbacks)}"),
        ]
        for passed, message in checks:
            if not passed:
                raise CookbookError(f"TransferPlan: {message}.")

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (``augmentation`` and ``callbacks`` by name)."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.name not in ("augmentation", "callbacks")}
        data["augmentation"] = None if self.augmentation is None else self.augmentation.name
        data["callbacks"] = {phase: [type(callback).__name__ for callback in callbacks]
                             for phase, callbacks in self.callbacks.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], augmentation: keras.layers.Layer | None = None,
                  callbacks: dict[str, list[keras.callbacks.Callback]] | None = None
                  ) -> TransferPlan:
        """The plan `to_dict` wrote; its augmentation and callbacks (written by name
        only) are given again here."""
        names = {field.name for field in dataclasses.fields(cls)} - {"augmentation",
                                                                      "callbacks"}
        unknown = sorted(set(data) - names - {"augmentation", "callbacks"})
        if unknown:
            raise CookbookError(f"TransferPlan.from_dict: unknown fields {unknown}.")
        fields = {key: value for key, value in data.items() if key in names}
        if isinstance(fields.get("class_weight"), dict):  # JSON object keys are strings
            fields["class_weight"] = {int(label): float(weight)
                                      for label, weight in fields["class_weight"].items()}
        return cls(**fields, augmentation=augmentation, callbacks=callbacks or {})

    def with_rates(self, learning_rates: dict[str, float]) -> TransferPlan:
        """This plan with the rates a run used (`TransferRun.learning_rates`) and no
        finder: what a second model must train with to be compared fairly."""
        return dataclasses.replace(
            self, learning_rate=learning_rates.get("head", self.learning_rate),
            fine_tune_learning_rate=learning_rates.get("fine_tune",
                                                       self.fine_tune_learning_rate),
            find_learning_rates=False)

    def with_augmentation(self, augmentation: keras.layers.Layer | None,
                          views: int = 0) -> TransferPlan:
        """This plan with ``augmentation`` (``None``: the plan unchanged): with ``views``
        K > 0 the head trains on the cached features of K augmented views of every
        example, else through the backbone; fine-tuning sees augmented inputs."""
        if augmentation is None:
            return self
        return dataclasses.replace(self, augmentation=augmentation, augmented_views=views,
                                   cache_features=views > 0)

    def head_only(self) -> TransferPlan:
        """This plan without fine-tuning or extra callbacks (a sweep's heads)."""
        return dataclasses.replace(self, fine_tune_epochs=0, callbacks={})

    def for_training_set(self, labels) -> TransferPlan:
        """This plan fitted to the training set's ``labels``: ``class_weight="balanced"``
        becomes the weights of those labels (`balanced_class_weight`), and an unset
        ``steps_per_epoch`` the batches per epoch (for the schedules). A head trained
        on cached features gets at least `HEAD_STEPS_AT_LEAST` steps per head epoch:
        on a training set of fewer batches, ``head_epoch_factor`` multiplies the head's
        epochs and patience to make up the difference (a pass over cached features
        costs almost nothing; fine-tuning's epochs stay as they are)."""
        labels = np.asarray(labels)
        changes: dict[str, Any] = {}
        if self.class_weight == "balanced":
            changes["class_weight"] = balanced_class_weight(labels)
        batches = -(-len(labels) // self.batch_size)
        if self.steps_per_epoch is None and len(labels):
            changes["steps_per_epoch"] = batches
        if self.cache_features and len(labels):
            changes["head_epoch_factor"] = max(1, -(-HEAD_STEPS_AT_LEAST // (
                batches * (1 + self.augmented_views))))
        return dataclasses.replace(self, **changes)

    def phases(self) -> list[str]:
        """The phases this plan trains: ``["head", "fine_tune"]``, or ``["head"]``."""
        return list(PHASES) if self.fine_tune_epochs > 0 else ["head"]

    def epochs_of(self, phase: str) -> int:
        """The most epochs ``phase`` (``"head"`` or ``"fine_tune"``) trains."""
        if phase not in PHASES:
            raise CookbookError(f"Unknown phase {phase!r}; the phases are {', '.join(PHASES)}.")
        return (self.head_epochs * self.head_epoch_factor if phase == "head"
                else self.fine_tune_epochs)

    def scratch_epochs(self) -> int:
        """The epochs a comparison trains the same model from random weights:
        ``head_epochs + fine_tune_epochs`` (`templates.training.comparison`).

        Raises:
            CookbookError: when both are 0 (a class-means head trains none).
        """
        if not self.head_epochs + self.fine_tune_epochs:
            raise CookbookError(
                "Training from scratch (--compare-scratch) runs the plan's head_epochs + "
                "fine_tune_epochs, and both are 0 (a class-means head needs none): give "
                "--head-epochs N, which the head then also trains from the class means.")
        return self.head_epochs + self.fine_tune_epochs

    def compared_score(self) -> str:
        """The validation score that decides whether fine-tuning is kept: ``monitor``,
        or ``val_accuracy`` when it watches the loss (phase scores leave the loss out)."""
        return "val_accuracy" if self.monitor == "val_loss" else self.monitor

    def early_stopping(self, phase: str | None = None) -> dict[str, Any]:
        """The settings `templates.training.checkpoints.TrainingState.callbacks` takes
        (for ``"head"``, the patience times ``head_epoch_factor``)."""
        factor = self.head_epoch_factor if phase == "head" else 1
        return {"keep_best": self.restore_best or bool(self.patience),
                "patience": self.patience * factor or None,
                "restore_best": self.restore_best, "monitor": self.monitor}


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.number)) and bool(np.isfinite(value))


def balanced_class_weight(labels) -> dict[int, float]:
    """``{label: weight}`` that makes every class weigh as much in the loss as the
    others: ``examples / (classes * examples of the label)``, scikit-learn's
    ``compute_class_weight("balanced")`` over the labels present."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        raise CookbookError("balanced_class_weight needs at least one label.")
    classes = np.unique(labels)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(label): round(float(weight), 6) for label, weight in zip(classes, weights)}
