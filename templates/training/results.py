"""What a transfer run returns: per-phase results and the whole run (`TransferRun`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from templates.training.plan import TransferPlan


@dataclasses.dataclass
class PhaseResult:
    """One phase of a `TransferRun`.

    Attributes:
        epochs: Epochs recorded (across restarts; fewer than planned after an early stop).
        seconds: Wall time of this call's work on the phase (0 when restored).
        learning_rate: The peak rate the phase trained at (the finder's, or the plan's).
        scores: Scores after the phase: ``val_accuracy``, ``test_accuracy`` and the
            other compiled metrics (``val_macro_f1``...).
        restored: Whether the phase had finished in an earlier run.
        epochs_run: The epochs of the phase this call trained, counted from 0 within
            the phase (a resumed run skips finished ones; empty when restored).
    """

    epochs: int
    seconds: float
    learning_rate: float
    scores: dict[str, float]
    restored: bool
    epochs_run: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TransferRun:
    """What `run_transfer` did.

    Attributes:
        history: Per-epoch logs of both phases (`templates.training.history.merge_histories`:
            ``epoch`` counted on across phases, ``phase``, one list per metric).
        phases: ``{"head": PhaseResult, "fine_tune": PhaseResult}``.
        plan: The plan that ran.
        start_scores: Every compiled validation metric before any training
            (``{"accuracy": ..., "macro_f1": ...}``; with ``measure_start=True``).
        test_scores: Every compiled test metric at the end (when test data was given).
        resumed: What a resumed run restored (``finished_phases``, the ``phase`` it
            continued and the ``epoch`` it continued from); ``None`` for a fresh run.
        fine_tuning_kept: Whether the model ends with the fine-tuned weights: ``False``
            when the plan's ``keep_fine_tuning="if_better"`` put the head's back because
            fine-tuning did not beat them on validation; ``None`` without fine-tuning.
    """

    history: dict[str, list[float]]
    phases: dict[str, PhaseResult]
    plan: TransferPlan
    start_scores: dict[str, float] = dataclasses.field(default_factory=dict)
    test_scores: dict[str, float] = dataclasses.field(default_factory=dict)
    resumed: dict[str, Any] | None = None
    fine_tuning_kept: bool | None = None

    @property
    def start_accuracy(self) -> float | None:
        """Validation accuracy before any training (with ``measure_start=True``)."""
        return self.start_scores.get("accuracy")

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy at the end (when test data was given)."""
        return self.test_scores.get("accuracy")

    @property
    def learning_rates(self) -> dict[str, float]:
        """The rate each phase trained at."""
        return {phase: result.learning_rate for phase, result in self.phases.items()}

    @property
    def validation_curve(self) -> list[float]:
        """Validation accuracy per epoch, both phases."""
        return self.curve("accuracy")

    def curve(self, metric: str) -> list[float]:
        """Validation ``metric`` (``"accuracy"``, ``"macro_f1"``...) per epoch, both
        phases."""
        return list(self.history.get(f"val_{metric}", []))

    def per_phase(self, key: str) -> dict[str, list[float]]:
        """``history[key]`` split by phase: ``{"head": [...], "fine_tune": [...]}``."""
        split: dict[str, list[float]] = {}
        for phase, value in zip(self.history["phase"], self.history.get(key, [])):
            split.setdefault("fine_tune" if phase == "fine-tuning" else phase, []).append(value)
        return split

    @property
    def scores(self) -> dict[str, float]:
        """The scores of the weights the run ends with: the last phase's, or the head's
        when fine-tuning was not kept."""
        if not self.phases:
            return {}
        if self.fine_tuning_kept is False:
            return self.phases["head"].scores
        return list(self.phases.values())[-1].scores

    def metrics(self) -> dict[str, Any]:
        """What a recipe's ``metrics.json`` records of the run: the final scores, the
        scores and wall time after each phase, the rates used and the plan."""
        metrics: dict[str, Any] = {**self.scores}
        for phase, key in (("head", "head"), ("fine_tune", "fine_tuned")):
            if phase in self.phases:
                metrics[key] = self.phases[phase].scores
                metrics[f"{phase}_seconds"] = self.phases[phase].seconds
        metrics.update(learning_rates=self.learning_rates, plan=self.plan.to_dict())
        if self.fine_tuning_kept is not None:
            metrics["fine_tuning_kept"] = self.fine_tuning_kept
        if self.resumed is not None:
            metrics["resumed"] = self.resumed
        return metrics

    def to_dict(self) -> dict[str, Any]:
        return {"history": self.history,
                "phases": {name: dataclasses.asdict(result)
                           for name, result in self.phases.items()},
                "learning_rates": self.learning_rates, "start_accuracy": self.start_accuracy,
                "test_accuracy": self.test_accuracy, "start_scores": self.start_scores,
                "test_scores": self.test_scores, "plan": self.plan.to_dict(),
                "resumed": self.resumed, "fine_tuning_kept": self.fine_tuning_kept}


def test_part(scores: dict[str, float]) -> dict[str, float]:
    """``{"accuracy": ...}`` from a phase's ``{"test_accuracy": ..., "val_...": ...}``."""
    return {name[len("test_"):]: value for name, value in scores.items()
            if name.startswith("test_")}

