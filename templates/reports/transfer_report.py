"""Did transfer help? The three measures, computed from learning curves.

Transfer learning carries no guarantee. The field judges it by three benefits
(Torrey & Shavlik, "Transfer Learning", 2009), each compared between the transferred
model and the same architecture trained from scratch on identical data, epochs,
seeds and optimiser:

- **start**: skill after the first target epoch (skill before any target training is
  recorded too, as ``before_training``: with a fresh head it is chance for both).
- **slope**: how fast skill rises early on, defined here as the area under the
  validation-accuracy curve over the first ``k`` epochs, normalised to 0..1 (the mean
  validation accuracy of epochs 1..k). Unlike "gain per epoch", it cannot reward a
  model for starting low. ``gain_per_epoch`` ((accuracy at epoch k - before training)/k)
  is recorded for reference.
- **asymptote**: the best validation accuracy over the run, with the final test
  accuracy beside it.

"Accuracy" above is the report's metric: accuracy by default, or the score early
stopping watched (``report_metric("val_macro_f1")`` is ``"macro_f1"``: a multi-label or
imbalanced task is judged on the score it was tuned for).

A measure on which the transferred model is below scratch is reported as negative
transfer, plainly, rather than hidden.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from templates.data.errors import CookbookError
from templates.data.files import atomic_path, write_json

#: The scores a report can be made on: higher is better for each.
REPORT_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "micro_f1")


def report_metric(monitor: str) -> str:
    """The metric a transfer report compares for a run whose early stopping watched
    ``monitor``: the monitored score without its ``val_`` prefix, or ``"accuracy"`` when
    the monitor is the loss (a report measures skill, and its gains read as points)."""
    name = monitor[len("val_"):] if monitor.startswith("val_") else monitor
    if name == "loss":
        return "accuracy"
    if name not in REPORT_METRICS:
        raise CookbookError(f"No transfer report on {monitor!r}: it reports one of "
                            f"{', '.join('val_' + metric for metric in REPORT_METRICS)} "
                            "(or accuracy for val_loss).")
    return name


@dataclasses.dataclass
class CurveSummary:
    """The three measures of one learning curve, on one metric (accuracy unless the
    report says otherwise).

    Attributes:
        before_training: Validation score before any target training.
        start: Validation score after the first epoch.
        slope: Mean validation score over the first ``slope_epochs`` epochs.
        gain_per_epoch: (score at epoch k - before_training) / k.
        asymptote: Best validation score.
        test_score: Score of the final model on the test set (or ``None``).
        validation_curve: Validation score per epoch (epoch 1 first).
        slope_epochs: The ``k`` the slope was computed over.
    """

    before_training: float
    start: float
    slope: float
    gain_per_epoch: float
    asymptote: float
    test_score: float | None
    validation_curve: list[float]
    slope_epochs: int


def summarize_curve(
    validation_curve: Sequence[float],
    before_training: float,
    test_score: float | None = None,
    slope_epochs: int = 3,
) -> CurveSummary:
    """Compute start, slope and asymptote from one validation curve (accuracy, or the
    report's metric).

    Args:
        validation_curve: Validation score after each epoch (at least one).
        before_training: Validation score before the first epoch.
        test_score: Final test score, if measured.
        slope_epochs: ``k``, the number of early epochs the slope looks at (capped at
            the curve's length).
    """
    curve = [float(value) for value in validation_curve]
    if not curve:
        raise CookbookError("validation_curve is empty: train for at least one epoch.")
    if slope_epochs < 1:
        raise CookbookError(f"slope_epochs must be at least 1; got {slope_epochs}.")
    k = min(slope_epochs, len(curve))
    return CurveSummary(
        before_training=float(before_training),
        start=curve[0],
        slope=float(np.mean(curve[:k])),
        gain_per_epoch=(curve[k - 1] - float(before_training)) / k,
        asymptote=float(max(curve)),
        test_score=None if test_score is None else float(test_score),
        validation_curve=curve,
        slope_epochs=k,
    )


@dataclasses.dataclass
class TransferReport:
    """Transfer against scratch on the three measures, over one or more seeds.

    Attributes:
        transfer: Per-seed summaries of the transferred model.
        scratch: Per-seed summaries of the same architecture trained from scratch.
        seeds: The seeds, in the order of the summaries.
        phase_boundary: Epoch after which the transferred model started fine-tuning
            (``None`` when it had a single phase); marked on the plot.
        metric: The score the curves hold (`report_metric`): ``"accuracy"``,
            ``"balanced_accuracy"``, ``"macro_f1"`` or ``"micro_f1"``.

    Every summary must have been computed over the same slope window ``k``
    (`slope_epochs`), or the slopes would not be comparable.
    """

    transfer: list[CurveSummary]
    scratch: list[CurveSummary]
    seeds: list[int]
    phase_boundary: int | None = None
    metric: str = "accuracy"

    def __post_init__(self):
        if self.metric not in REPORT_METRICS:
            raise CookbookError(f"metric must be one of {REPORT_METRICS}; got {self.metric!r} "
                                "(report_metric(monitor) gives it).")
        if not self.transfer or not self.scratch:
            raise CookbookError(
                "A transfer report needs at least one transfer and one scratch run.")
        windows = {summary.slope_epochs for summary in self.transfer + self.scratch}
        if len(windows) != 1:
            raise CookbookError(
                f"The runs' slopes were computed over different windows {sorted(windows)}; "
                "summarise every curve with the same slope_epochs (and train at least that "
                "many epochs) so the slopes compare."
            )

    @property
    def slope_epochs(self) -> int:
        """``k``, the slope window shared by every run."""
        return self.transfer[0].slope_epochs

    @property
    def measures(self) -> tuple[str, ...]:
        """The names the report compares: ``start``, ``slope``, ``asymptote`` and the
        test score named after the metric (``test_accuracy``, ``test_macro_f1``...)."""
        return ("start", "slope", "asymptote", f"test_{self.metric}")

    def _values(self, which: str, measure: str) -> list[float]:
        attribute = "test_score" if measure.startswith("test_") else measure
        values = [getattr(summary, attribute) for summary in getattr(self, which)]
        return [value for value in values if value is not None]

    def mean(self, which: str, measure: str) -> float | None:
        """Mean over seeds of ``measure`` (one of `measures`, ``before_training`` or
        ``gain_per_epoch``) for ``which`` side (``"transfer"`` or ``"scratch"``)."""
        values = self._values(which, measure)
        return float(np.mean(values)) if values else None

    def std(self, which: str, measure: str) -> float | None:
        """Standard deviation over seeds of ``measure`` (see `mean`)."""
        values = self._values(which, measure)
        return float(np.std(values)) if values else None

    def differences(self) -> dict[str, float | None]:
        """Mean transfer minus mean scratch, per measure (positive: transfer helped)."""
        result = {}
        for measure in self.measures:
            transfer, scratch = self.mean("transfer", measure), self.mean("scratch", measure)
            result[measure] = None if None in (transfer, scratch) else transfer - scratch
        return result

    def verdicts(self) -> dict[str, str]:
        """``"higher"``, ``"equal"`` or ``"lower"`` (negative transfer), per measure."""
        verdict = {}
        for measure, difference in self.differences().items():
            if difference is None:
                continue
            verdict[measure] = ("higher" if difference > 1e-9 else
                                "lower" if difference < -1e-9 else "equal")
        return verdict

    @property
    def negative_transfer(self) -> list[str]:
        """The measures on which transfer did worse than scratch."""
        return [measure for measure, verdict in self.verdicts().items() if verdict == "lower"]

    def summary_text(self) -> str:
        """One plain sentence a user can read in a log."""
        parts = []
        for measure, difference in self.differences().items():
            if difference is not None:
                parts.append(f"{measure} {difference * 100:+.1f} points")
        on = "" if self.metric == "accuracy" else f" (on {self.metric})"
        text = f"Transfer vs scratch{on}: " + ", ".join(parts) + "."
        if self.negative_transfer:
            text += (" NEGATIVE TRANSFER on " + ", ".join(self.negative_transfer)
                     + ": the transferred model did worse than training from scratch there.")
        return text

    def metrics(self) -> dict:
        """What a recipe's ``metrics.json`` records of the report: ``pretrained`` and
        ``scratch`` (each side's measures and its first run's validation curve) and
        ``transfer_report`` (the differences)."""
        return {
            **{key: {**{measure: self.mean(side, measure) for measure in self.measures},
                     "validation_curve": list(getattr(self, side)[0].validation_curve)}
               for key, side in (("pretrained", "transfer"), ("scratch", "scratch"))},
            "transfer_report": self.differences(),
        }

    def to_dict(self) -> dict:
        def side(which):
            return {
                **{measure: self.mean(which, measure) for measure in self.measures},
                "std": {measure: self.std(which, measure) for measure in self.measures},
                "before_training": self.mean(which, "before_training"),
                "gain_per_epoch": self.mean(which, "gain_per_epoch"),
                "runs": [dataclasses.asdict(s) for s in getattr(self, which)],
            }

        return {
            "transfer": side("transfer"),
            "scratch": side("scratch"),
            "difference": self.differences(),
            "verdict": self.verdicts(),
            "negative_transfer": self.negative_transfer,
            "summary": self.summary_text(),
            "seeds": list(self.seeds),
            "metric": self.metric,
            "definitions": {
                "start": f"validation {self.metric} after the first target epoch",
                "slope": f"mean validation {self.metric} over the first {self.slope_epochs} "
                         "epochs (normalised area under the validation curve)",
                "asymptote": f"best validation {self.metric} over the run",
                f"test_{self.metric}": f"test {self.metric} of the final model",
            },
            "slope_epochs": self.slope_epochs,
            "phase_boundary": self.phase_boundary,
        }

    def write(self, directory: str | os.PathLike, title: str = "Transfer vs scratch") -> None:
        """``transfer_report.json`` and ``transfer_report.png`` in ``directory``."""
        self.write_json(os.path.join(directory, "transfer_report.json"))
        self.plot(os.path.join(directory, "transfer_report.png"), title=title)

    def write_json(self, path: str | os.PathLike) -> str:
        write_json(path, self.to_dict())
        return os.fspath(path)

    def plot(self, path: str | os.PathLike, title: str = "Transfer vs scratch") -> str:
        """Both learning curves on one figure (mean and spread over seeds), annotated."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(8, 5))
        colors = {"transfer": "tab:blue", "scratch": "tab:orange"}
        for which in ("transfer", "scratch"):
            runs = getattr(self, which)
            length = min(len(r.validation_curve) for r in runs)
            curves = np.array([[r.before_training] + r.validation_curve[:length] for r in runs])
            epochs = np.arange(length + 1)
            mean = curves.mean(axis=0)
            axis.plot(epochs, mean, "-o", markersize=3, color=colors[which],
                      label=f"{which} (mean of {len(runs)} seed{'s' * (len(runs) > 1)})")
            if len(runs) > 1:
                axis.fill_between(epochs, curves.min(axis=0), curves.max(axis=0),
                                  color=colors[which], alpha=0.15)
            asymptote = self.mean(which, "asymptote")
            axis.axhline(asymptote, color=colors[which], linestyle=":", linewidth=1)
        axis.axvspan(0.5, self.slope_epochs + 0.5, color="gray", alpha=0.08,
                     label=f"slope window (epochs 1-{self.slope_epochs})")
        if self.phase_boundary:
            axis.axvline(self.phase_boundary + 0.5, color="gray", linestyle="--", linewidth=1,
                         label="transfer: fine-tuning starts")
        difference = self.differences()
        lines = [f"{measure}: {self.mean('transfer', measure):.3f} vs "
                 f"{self.mean('scratch', measure):.3f} ({difference[measure] * 100:+.1f})"
                 for measure in self.measures if difference[measure] is not None]
        if self.negative_transfer:
            lines.append("NEGATIVE TRANSFER: " + ", ".join(self.negative_transfer))
        axis.text(0.98, 0.04, "transfer vs scratch\n" + "\n".join(lines),
                  transform=axis.transAxes, ha="right", va="bottom", fontsize=8,
                  family="monospace", bbox={"facecolor": "white", "alpha": 0.85})
        axis.set_xlabel("target epoch (0 = before training)")
        axis.set_ylabel(f"validation {self.metric.replace('_', ' ')}")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize=8)
        figure.tight_layout()
        with atomic_path(path, suffix=".png") as temporary:
            figure.savefig(temporary, dpi=100)
        plt.close(figure)
        return os.fspath(path)
