"""How many labels do you need? The label-count curve.

`label_curve` trains the transfer model (and, given a builder, the same architecture
from scratch) on stratified subsets of K labelled examples per class, several seeds per
K (`seeds_for`: the small subsets vary most, so they get more), always validating on the
same validation set and scoring the same test set. It writes ``label_curve.json`` (every
point, then mean, spread and seeds per K) and ``label_curve.png`` (test accuracy against
labels per class on a log axis), and says in one sentence how many labels scratch
training needs to match transfer at the smallest K, or that it never does in the range.

    curve = label_curve([8, 16, 32, None], train_labels, train_batches_of,
                        build_transfer, validation, test, plan, state=state,
                        build_scratch=build_scratch, directory="runs/x")
    print(curve.sentence)

Finished points are kept in the run's `templates.training.checkpoints.TrainingState` and
skipped on a resume. ``features`` (the frozen part's features of every training
example, computed once) let every subset's head train on its rows of them; when the
plan trains the head alone, the validation and test examples' features are computed
once too, and every point's head is validated and scored on them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from templates.data.batches import array_batches
from templates.data.errors import CookbookError
from templates.data.feature_store import FeatureStore
from templates.data.files import atomic_path, write_json
from templates.models.transfer_model import head_on_features
from templates.training.checkpoints import TrainingState
from templates.training.comparison import train_from_scratch
from templates.training.phases import extract_features, head_training_features
from templates.training.plan import TransferPlan
from templates.training.run import run_transfer

# Seeds per point: subsets of up to SMALL_SUBSET labels per class vary most.
SMALL_SUBSET = 32
SEEDS_SMALL, SEEDS_LARGE = 5, 3
KINDS = ("transfer", "scratch")


def seeds_for(per_class: int | None, first_seed: int = 0) -> list[int]:
    """The seeds of one point of the curve: five from ``first_seed`` for up to 32 labels
    per class, three above (and for all the labels, ``None``)."""
    count = SEEDS_SMALL if per_class is not None and per_class <= SMALL_SUBSET else SEEDS_LARGE
    return list(range(first_seed, first_seed + count))


def stratified_subset(labels: Sequence[int], per_class: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of ``per_class`` examples of every class, drawn with ``seed``
    (``None``: every row).

    Raises:
        CookbookError: when a class has fewer than ``per_class`` examples.
    """
    labels = np.asarray(labels)
    if labels.ndim > 1:
        raise CookbookError("A label-count curve draws K examples of every class: it needs "
                            "single labels, not --multi-label ones.")
    if per_class is None:
        return np.arange(len(labels))
    if per_class < 1:
        raise CookbookError(f"A label-count curve needs at least 1 label per class; got "
                            f"{per_class}.")
    rng = np.random.default_rng(seed)
    rows = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise CookbookError(
                f"--label-curve {per_class}: class {label} has only {len(members)} training "
                f"examples; the curve's points must be at most {len(members)} per class.")
        rows.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(rows))


@dataclasses.dataclass
class LabelCurve:
    """A label-count curve: every trained point, and what they say.

    Attributes:
        points: One dict per run: ``kind`` (transfer or scratch), ``per_class`` (``None``
            for all the labels), ``seed``, ``examples``, ``val_accuracy``,
            ``test_accuracy``.
    """

    points: list[dict[str, Any]]

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{kind: {K: {"mean", "sd", "min", "max", "seeds", "examples"}}}`` of the
        test accuracy (the validation accuracy without a test set); ``sd`` is the
        sample standard deviation over the seeds."""
        table: dict[str, dict[str, dict[str, Any]]] = {}
        for kind in KINDS:
            rows = [point for point in self.points if point["kind"] == kind]
            for key in dict.fromkeys(_key(point["per_class"]) for point in rows):
                scores = [_score(point) for point in rows if _key(point["per_class"]) == key]
                table.setdefault(kind, {})[key] = {
                    "mean": float(np.mean(scores)),
                    "sd": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                    "min": float(np.min(scores)), "max": float(np.max(scores)),
                    "seeds": len(scores), "examples": int(np.mean(
                        [point["examples"] for point in rows
                         if _key(point["per_class"]) == key]))}
        return table

    def scratch_matches_at(self) -> str | None:
        """The smallest K at which scratch training's mean reaches transfer's mean at
        the smallest K, or ``None`` (never in the range, or no scratch curve)."""
        table = self.summary()
        if "scratch" not in table or "transfer" not in table:
            return None
        first = next(iter(table["transfer"]))
        target = table["transfer"][first]["mean"]
        return next((key for key, row in table["scratch"].items() if row["mean"] >= target),
                    None)

    @property
    def sentence(self) -> str:
        """One sentence: where scratch catches up with transfer at the smallest K."""
        table = self.summary()
        first = next(iter(table["transfer"]))
        transfer = table["transfer"][first]
        said = (f"Transfer with {first} labels per class: {transfer['mean']:.3f} "
                f"(sd {transfer['sd']:.3f}, {transfer['seeds']} seeds)")
        if "scratch" not in table:
            return said + "."
        match = self.scratch_matches_at()
        if match is None:
            return (said + "; scratch training never matches it in the range (at "
                    f"{list(table['scratch'])[-1]}: "
                    f"{list(table['scratch'].values())[-1]['mean']:.3f}).")
        return (said + f"; scratch training needs {match} labels per class to match it "
                f"({table['scratch'][match]['mean']:.3f}).")

    def write(self, directory: str | os.PathLike, title: str = "Label-count curve") -> None:
        """Write ``label_curve.json`` and ``label_curve.png`` to ``directory``."""
        os.makedirs(directory, exist_ok=True)
        write_json(os.path.join(directory, "label_curve.json"),
                   {"points": self.points, "summary": self.summary(),
                    "scratch_matches_at": self.scratch_matches_at(),
                    "sentence": self.sentence})
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6.5, 4.2))
        largest = max((point["per_class"] or 0) for point in self.points)
        for kind, colour in zip(KINDS, ("tab:blue", "tab:orange")):
            rows = self.summary().get(kind)
            if not rows:
                continue
            # "all" sits one step right of the largest K on the log axis.
            x = [float(key) if key != "all" else max(2.0 * largest, 1.0) for key in rows]
            means = np.array([row["mean"] for row in rows.values()])
            axis.plot(x, means, "o-", color=colour, label=kind)
            axis.fill_between(x, [row["min"] for row in rows.values()],
                              [row["max"] for row in rows.values()], color=colour,
                              alpha=0.2)
        axis.set_xscale("log")
        axis.set_xlabel("labels per class (log scale; band: lowest to highest seed)")
        axis.set_ylabel("test accuracy")
        axis.set_title(title)
        axis.legend()
        axis.grid(alpha=0.3)
        figure.tight_layout()
        with atomic_path(os.path.join(directory, "label_curve.png"), suffix=".png") as path:
            figure.savefig(path, dpi=120)
        plt.close(figure)


def _key(per_class: int | None) -> str:
    return "all" if per_class is None else str(per_class)


def _score(point: dict[str, Any]) -> float:
    score = point.get("test_accuracy")
    return point["val_accuracy"] if score is None else score


def label_curve(
    counts: Sequence[int | None],
    train_labels: Sequence[int],
    train_for: Callable[[np.ndarray, int], Any],
    build_transfer: Callable[[], Any],
    validation,
    test=None,
    plan: TransferPlan | None = None,
    state: TrainingState | None = None,
    build_scratch: Callable[[], keras.Model] | None = None,
    features: tuple[np.ndarray, np.ndarray] | None = None,
    before_training: Callable[[Any, np.ndarray, int], dict | None] | None = None,
    directory: str | os.PathLike | None = None,
    title: str = "Label-count curve",
    verbose: int | str = 0,
) -> LabelCurve:
    """Train on K labels per class for every K of ``counts``, over `seeds_for` seeds.

    When the plan trains the head alone (no fine-tuning, cached features, no augmented
    views) and nothing changes the frozen part (no ``before_training``), the frozen
    part is the same at every point: the validation and test examples go through it
    once, on the first transfer point, and every point's head trains, validates and is
    scored on features (`templates.models.transfer_model.head_on_features`).

    Args:
        counts: Labels per class, smallest first (``None``: all of them).
        train_labels: The full training set's integer labels (the subsets' strata).
        train_for: ``(rows, seed) -> batches`` of those training rows, shuffled with
            ``seed``.
        build_transfer: A fresh transfer model (a `templates.models.transfer_model
            .Transferable`), built after Keras is seeded with the point's seed.
        validation, test: The same batches for every point.
        plan: The recipe's plan; each point runs it with its own seed (the subset's
            draw, the head's initial weights, the data order).
        state: Keeps every finished point (``curve.KIND.K.SEED``): a resumed curve
            skips them.
        build_scratch: The same architecture from random weights: a scratch curve
            beside the transfer one (`templates.training.comparison.train_from_scratch`,
            all the plan's epochs at its ``scratch_learning_rate``, else the head's rate).
        features: The frozen part's features of every training example and their
            labels (`templates.training.phases.head_training_features`), so each
            subset's head trains on its rows without extracting them again.
        before_training: ``(transfer, rows, seed) -> details``, called on each point's
            fresh transfer model before its phases (for example
            `templates.training.contrastive.contrastive_tune` on the subset's texts);
            the details it returns are kept with the point. ``features`` are then not
            used (the frozen part changed).

        directory: Where `LabelCurve.write` puts the JSON and the plot (and the
            sentence is printed); ``None``: nothing written.

    Returns:
        The `LabelCurve`.
    """
    plan = plan or TransferPlan()
    labels = np.asarray(train_labels)
    points: list[dict[str, Any]] = []
    kinds = ["transfer"] + (["scratch"] if build_scratch is not None else [])
    if build_scratch is not None:
        plan.scratch_epochs()  # refused before any point trains when there are none
    # A head-only plan on an unchanged frozen part: held-out features, once (a list
    # the first transfer point fills).
    held_out: list | None = ([] if before_training is None and plan.phases() == ["head"]
                             and plan.cache_features and not plan.augmented_views else None)
    for per_class in counts:
        for seed in seeds_for(per_class, plan.seed):
            rows = stratified_subset(labels, per_class, seed)
            point_plan = dataclasses.replace(plan, seed=seed, steps_per_epoch=None)
            point_plan = point_plan.for_training_set(labels[rows])
            for kind in kinds:
                name = f"curve.{kind}.{_key(per_class)}.{seed}"
                saved = state.result(name) if state is not None else None
                if saved is None:
                    saved = _train_point(kind, rows, seed, point_plan, train_for,
                                         build_transfer, build_scratch, validation, test,
                                         features, before_training, verbose,
                                         held_out=held_out)
                    saved.update(kind=kind, per_class=per_class, seed=seed,
                                 examples=int(len(rows)))
                    print(f"Label curve: {kind}, {_key(per_class)} labels per class, seed "
                          f"{seed}: {'test' if saved['test_accuracy'] is not None else 'val'} "
                          f"accuracy {_score(saved):.3f}.", flush=True)
                    if state is not None:
                        state.save_result(name, saved)
                    keras.backend.clear_session()
                points.append(saved)
    curve = LabelCurve(points)
    if directory is not None:
        curve.write(directory, title)
        print(curve.sentence)
    return curve


def scratch_point(model: keras.Model, train, validation, test=None,
                  plan: TransferPlan | None = None, verbose: int | str = 0) -> dict[str, Any]:
    """One scratch point of a curve: ``model`` (random weights) trained on ``train`` as
    `templates.training.comparison.train_from_scratch` trains it; its validation
    accuracy (the best epoch's with ``restore_best``) and test accuracy (``None``
    without ``test``)."""
    plan = plan or TransferPlan()
    _, curve, test_score = train_from_scratch(model, train, validation, test, plan,
                                              verbose=verbose)
    return {"val_accuracy": float(max(curve)) if plan.restore_best else float(curve[-1]),
            "test_accuracy": None if test_score is None else float(test_score)}


def _held_out_batches(transfer, data, name: str, memory_limit_gb: float | None):
    if data is None:
        return None
    features, labels = extract_features(transfer.feature_extractor, data,
                                        FeatureStore(memory_limit_gb),
                                        what=f"{name} features (once for every point)")
    return array_batches(features, labels, batch_size=256, shuffle=False,
                         dtype=str(features.dtype))


def _train_point(kind, rows, seed, plan, train_for, build_transfer, build_scratch,
                 validation, test, features, before_training, verbose,
                 held_out=None) -> dict[str, Any]:
    keras.utils.set_random_seed(seed)
    train = train_for(rows, seed)
    if kind == "scratch":
        return scratch_point(build_scratch(), train, validation, test, plan, verbose)
    transfer = build_transfer()
    details = before_training(transfer, rows, seed) if before_training is not None else None
    subset = (None if features is None or plan.augmented_views or before_training is not None
              else (features[0][rows], features[1][rows]))
    if held_out is not None:
        if not held_out:  # the first transfer point: the held-out sets, through the frozen part
            held_out += [_held_out_batches(transfer, data, name, plan.feature_memory_gb)
                         for data, name in ((validation, "validation"), (test, "test"))]
        subset = subset if subset is not None else head_training_features(
            transfer, train, memory_limit_gb=plan.feature_memory_gb)
        transfer, validation, test = head_on_features(transfer.head), *held_out
        train = array_batches(*subset, batch_size=plan.batch_size, seed=seed,
                              dtype=str(subset[0].dtype))
    run = run_transfer(transfer, train, validation, plan, None, test=test, verbose=verbose,
                       features=subset)
    return {"val_accuracy": float(run.scores.get("val_accuracy", float("nan"))),
            "test_accuracy": run.test_scores.get("accuracy"),
            **({"before_training": details} if details is not None else {})}
