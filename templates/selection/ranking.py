"""Choose the source before paying to train it: rank candidates from frozen features.

    selection = rank_sources(candidates, train, validation)
    print(selection.summary_text())           # the table, and how far to trust it
    selection.write("runs/x")                 # selection.json, selection.png
    run = run_transfer(selection.transfer, train, validation, plan,
                       features=selection.features)   # the pick, features already cached

A `Candidate` is anything a template can build: a `keras.applications` backbone with
its options, a keras-hub preset or a TF-Hub module (`image_candidates`), a cut of one
(`rank_cuts`), a developed source model, a set of word vectors. For each, the frozen
part's features of the target's training and validation examples are extracted once,
with the function the head phase caches them with
(`templates.training.phases.head_training_features`), and scored by every estimate of
`templates.selection.transferability` that applies. The candidates are ranked by one
estimate (`SelectionBudget.rank_by`; LogME by default, chosen on the selection seeds of
the digits and cats pools, where the linear probe picked worse: docs/results.md), and a
bootstrap over the training rows says how often the top pick stays on top: below `SelectionBudget.close_call` the table says "too close to call"
instead of pretending to a clear winner.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.files import atomic_path, write_json
from templates.models.transfer_model import Transferable
from templates.selection import transferability
from templates.training.phases import extract_features, head_training_features

RANK_BY = (*transferability.ESTIMATES, "mean_rank")


@dataclasses.dataclass
class SelectionBudget:
    """How the candidates are scored and ranked.

    Attributes:
        rank_by: The estimate the final rank follows (`RANK_BY`; ``"mean_rank"``
            averages each candidate's rank over every estimate it has).
        knn_neighbours: ``k`` of the k-NN probe.
        probe_regularisation: Inverse L2 strength of the linear probe.
        bootstrap: Resamplings of the training rows (within each class) for the
            stability of the top pick; 0 skips it.
        close_call: The top pick is "clear" when it stays on top in at least this
            share of the resamplings; below it the ranking is "too close to call".
        max_examples: Score on at most this many training rows (an even share per
            class, drawn with ``seed``); ``None``: all of them.
        seed: Seeds each candidate's build (so the pick is the model a direct run
            would build), the bootstrap and the row sample.
    """

    rank_by: str = "logme"
    knn_neighbours: int = 10
    probe_regularisation: float = 1.0
    bootstrap: int = 30
    close_call: float = 0.8
    max_examples: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.rank_by not in RANK_BY:
            raise CookbookError(f"SelectionBudget: unknown rank_by {self.rank_by!r}; choose "
                                f"from {', '.join(RANK_BY)}.")
        if self.knn_neighbours < 1 or self.probe_regularisation <= 0 or self.bootstrap < 0:
            raise CookbookError("SelectionBudget: knn_neighbours must be at least 1, "
                                "probe_regularisation positive and bootstrap 0 or more.")
        if not 0 < self.close_call <= 1:
            raise CookbookError(f"SelectionBudget: close_call must be in (0, 1]; got "
                                f"{self.close_call}.")


@dataclasses.dataclass
class Candidate:
    """One source to rank.

    Attributes:
        name: How the table names it (e.g. the backbone's spelling).
        build: Returns the candidate's `TransferModel` (or any `Transferable`), its
            reused part frozen.
        data: Given the built model, returns ``(train, validation)`` batches for this
            candidate when it needs its own (another image size, another vocabulary);
            ``None``: the batches given to `rank_sources`.
        source_classifier: Given the built model, returns a model from the same inputs
            to the source task's class probabilities (for LEEP), or ``None`` when the
            source has no classifier head.
        pooling: How a feature map becomes a vector for the estimates (as the head
            pools it: ``"avg"``, ``"max"`` or ``"flatten"``).
        details: Anything to record beside its scores (its options, its source check).
    """

    name: str
    build: Callable[[], Transferable]
    data: Callable[[Transferable], tuple[Iterable, Iterable]] | None = None
    source_classifier: Callable[[Transferable], keras.Model | None] | None = None
    pooling: str = "avg"
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CandidateScore:
    """One row of the table: a candidate's estimates, times and rank."""

    candidate: str
    rank: int = 0
    linear_probe: float | None = None
    knn: float | None = None
    logme: float | None = None
    leep: float | None = None
    h_score: float | None = None
    mean_rank: float | None = None
    top_share: float | None = None
    feature_seconds: float = 0.0
    estimate_seconds: float = 0.0
    examples: int = 0
    dimensions: int = 0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Selection:
    """What `rank_sources` found.

    Attributes:
        candidates: The rows, best first (``rank`` 1 is the pick).
        budget: How they were scored.
        verdict: ``"clear"``, ``"too close to call"`` or ``"single candidate"``.
        seconds: Wall time of the whole ranking.
        transfer: The pick's built model (its reused part frozen).
        features: The pick's cached training features ``(features, labels)``, as the
            head phase caches them: pass them to `run_transfer(features=...)`.
        data: The pick's ``(train, validation)`` batches.
    """

    candidates: list[CandidateScore]
    budget: SelectionBudget
    verdict: str
    seconds: float
    transfer: Transferable | None = dataclasses.field(default=None, repr=False)
    features: tuple[np.ndarray, np.ndarray] | None = dataclasses.field(default=None,
                                                                            repr=False)
    data: tuple[Iterable, Iterable] | None = dataclasses.field(default=None, repr=False)

    @property
    def pick(self) -> str:
        """The name of the rank-1 candidate."""
        return self.candidates[0].candidate

    def features_for(self, plan) -> tuple[np.ndarray, np.ndarray] | None:
        """The pick's cached features for `run_transfer(features=...)`, or ``None``
        when ``plan`` caches other ones (augmented views) or none."""
        if plan.augmented_views or not plan.cache_features:
            return None
        return self.features

    def brief(self) -> dict[str, Any]:
        """What a run's metrics.json records of the selection."""
        return {"pick": self.pick, "verdict": self.verdict, "contenders": self.contenders,
                "rank_by": self.budget.rank_by,
                "candidates": [row.candidate for row in self.candidates]}

    @property
    def contenders(self) -> list[str]:
        """Candidates that were on top in at least one resampling (the pick first)."""
        return [row.candidate for row in self.candidates if (row.top_share or 0) > 0] \
            or [self.pick]

    def to_dict(self) -> dict[str, Any]:
        return {"pick": self.pick, "verdict": self.verdict, "contenders": self.contenders,
                "rank_by": self.budget.rank_by, "budget": dataclasses.asdict(self.budget),
                "ranking_seconds": round(self.seconds, 2),
                "candidates": [dataclasses.asdict(row) for row in self.candidates]}

    def summary_text(self) -> str:
        """The table as text, with the verdict."""
        lines = [f"{'rank':>4}  {'candidate':<44} {'probe':>6} {'k-NN':>6} {'LogME':>7} "
                 f"{'LEEP':>7} {'H':>7} {'top':>5} {'seconds':>7}"]
        for row in self.candidates:
            def number(value, width, digits=3):
                return f"{value:>{width}.{digits}f}" if value is not None else " " * (
                    width - 1) + "-"
            lines.append(
                f"{row.rank:>4}  {row.candidate[:44]:<44} {number(row.linear_probe, 6)} "
                f"{number(row.knn, 6)} {number(row.logme, 7)} {number(row.leep, 7)} "
                f"{number(row.h_score, 7, 2)} {number(row.top_share, 5, 2)} "
                f"{row.feature_seconds + row.estimate_seconds:>7.1f}")
        if self.verdict == "clear":
            lines.append(f"Pick: {self.pick} (ranked by {self.budget.rank_by}; on top in "
                         f"{self.candidates[0].top_share:.0%} of {self.budget.bootstrap} "
                         "resamplings of the training rows).")
        elif self.verdict == "too close to call":
            lines.append(f"Too close to call between {', '.join(self.contenders)} (ranked "
                         f"by {self.budget.rank_by}, the pick on top in only "
                         f"{self.candidates[0].top_share:.0%} of {self.budget.bootstrap} "
                         f"resamplings); training {self.pick}, the point estimate's pick.")
        else:
            lines.append(f"Pick: {self.pick} (the only candidate).")
        top = self.candidates[0].details if self.candidates else {}
        if top.get("kind") == "sentence encoder":
            lines.append(f"The pick is a sentence encoder: train it with python -m "
                         f"recipes.text_encoder_classification --preset {top['preset']}.")
        return "\n".join(lines)

    def write(self, directory: str | os.PathLike, title: str = "Source selection") -> None:
        """Write ``selection.json`` and ``selection.png`` (each estimate per candidate,
        the pick marked) to ``directory``."""
        os.makedirs(directory, exist_ok=True)
        write_json(os.path.join(directory, "selection.json"), self.to_dict())
        plot_selection(self, os.path.join(directory, "selection.png"), title)


def _sample_rows(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` rows, an even share per class (all when ``None``)."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    share = max(1, limit // len(classes))
    picked = [rng.permutation(np.flatnonzero(labels == label))[:share] for label in classes]
    return np.sort(np.concatenate(picked))


def _resample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bootstrap of the rows within each class (class counts kept)."""
    return np.concatenate([rng.choice(np.flatnonzero(labels == label),
                                         size=int((labels == label).sum()), replace=True)
                           for label in np.unique(labels)])


@dataclasses.dataclass
class _Scored:
    train: np.ndarray
    labels: np.ndarray
    validation: np.ndarray
    validation_labels: np.ndarray
    probabilities: np.ndarray | None


def estimate(scored: _Scored, budget: SelectionBudget, rows: np.ndarray | None = None,
             only: str | None = None) -> dict[str, float | None]:
    """Every estimate (or ``only`` one) of one candidate's vectors, on ``rows`` of the
    training examples (all when ``None``)."""
    rows = np.arange(len(scored.labels)) if rows is None else rows
    train, labels = scored.train[rows], scored.labels[rows]
    wanted = transferability.ESTIMATES if only is None else (only,)
    results: dict[str, float | None] = {}
    for name in wanted:
        if name == "linear_probe":
            results[name] = transferability.linear_probe_accuracy(
                train, labels, scored.validation, scored.validation_labels,
                budget.probe_regularisation)
        elif name == "knn":
            results[name] = transferability.knn_accuracy(
                train, labels, scored.validation, scored.validation_labels,
                budget.knn_neighbours)
        elif name == "logme":
            results[name] = transferability.logme(train, labels)
        elif name == "h_score":
            results[name] = transferability.h_score(train, labels)
        elif name == "leep":
            results[name] = (None if scored.probabilities is None else
                                transferability.leep(scored.probabilities[rows], labels))
    return results


def _mean_ranks(rows: list[CandidateScore]) -> list[float]:
    """Each row's rank (1 = best) averaged over the estimates it has."""
    totals = [[] for _ in rows]
    for name in transferability.ESTIMATES:
        present = [(index, getattr(row, name)) for index, row in enumerate(rows)
                   if getattr(row, name) is not None]
        ordered = sorted(present, key=lambda item: -item[1])
        for position, (index, _) in enumerate(ordered, start=1):
            totals[index].append(position)
    return [float(np.mean(ranks)) if ranks else float(len(rows)) for ranks in totals]


def _order_values(rows: list[CandidateScore], rank_by: str) -> list[float]:
    """Higher is better, for every ``rank_by``."""
    if rank_by == "mean_rank":
        return [-value for value in _mean_ranks(rows)]
    values = [getattr(row, rank_by) for row in rows]
    if all(value is None for value in values):
        raise CookbookError(f"No candidate has a {rank_by} estimate (LEEP needs a source "
                         "classifier head); rank by another estimate.")
    return [-np.inf if value is None else value for value in values]


def rank_sources(
    candidates: Sequence[Candidate],
    train: Iterable | None = None,
    validation: Iterable | None = None,
    budget: SelectionBudget | None = None,
    progress: Callable[[str], None] | None = print,
) -> Selection:
    """Rank ``candidates`` by how well their frozen features fit the target labels.

    Args:
        candidates: What to rank (`Candidate`; `image_candidates` spells image ones).
        train, validation: Batches of ``(inputs, integer labels)``, as `run_transfer`
            takes them (a candidate with its own ``data`` uses those instead). The
            training batches are read in their epoch-0 order, as the head phase reads
            them.
        budget: How to score and rank (`SelectionBudget`).
        progress: Called with a line per candidate (``None``: silent).

    Returns:
        A `Selection`: the table best first, the verdict, and the pick's model,
        cached training features and batches.
    """
    budget = budget or SelectionBudget()
    if not candidates:
        raise CookbookError("rank_sources needs at least one candidate.")
    names = [candidate.name for candidate in candidates]
    if len(set(names)) != len(names):
        raise CookbookError(f"Candidate names must differ; got {names}.")
    say = progress or (lambda line: None)
    started = time.perf_counter()
    rows, scored = [], []
    best_value, kept = None, None
    for position, candidate in enumerate(candidates, start=1):
        say(f"Selecting [{position}/{len(candidates)}] {candidate.name}: extracting "
            "features...")
        extraction_started = time.perf_counter()
        keras.utils.set_random_seed(budget.seed)  # the model a direct run would build
        try:
            transfer = candidate.build()
        except (ValueError, RuntimeError) as error:
            raise type(error)(f"Candidate {candidate.name!r}: {error}") from error
        candidate_train, candidate_validation = (candidate.data(transfer) if candidate.data
                                                    else (train, validation))
        if candidate_train is None or candidate_validation is None:
            raise CookbookError(f"Candidate {candidate.name!r} has no data: give rank_sources "
                                "train and validation batches, or the candidate its own.")
        features, labels = head_training_features(transfer, candidate_train)
        labels = np.asarray(labels).reshape(-1)
        if labels.dtype.kind == "f" or np.ndim(labels) != 1:
            labels = labels.astype(np.int64)
        validation_features, validation_labels = extract_features(transfer.feature_extractor,
                                                                     candidate_validation)
        probabilities = None
        classifier = (candidate.source_classifier(transfer) if candidate.source_classifier
                      else None)
        if classifier is not None:
            probabilities, _ = extract_features(classifier, _epoch_zero(candidate_train))
        feature_seconds = time.perf_counter() - extraction_started
        rows_used = _sample_rows(labels, budget.max_examples, budget.seed)
        vectors = _Scored(
            transferability.feature_vectors(features, candidate.pooling)[rows_used],
            labels[rows_used],
            transferability.feature_vectors(validation_features, candidate.pooling),
            np.asarray(validation_labels).reshape(-1).astype(np.int64),
            None if probabilities is None else np.asarray(probabilities, np.float64)[rows_used])
        estimate_started = time.perf_counter()
        values = estimate(vectors, budget)
        row = CandidateScore(candidate.name, **values,
                                feature_seconds=round(feature_seconds, 2),
                                estimate_seconds=round(time.perf_counter() - estimate_started, 3),
                                examples=len(rows_used), dimensions=vectors.train.shape[1],
                                details=dict(candidate.details))
        rows.append(row)
        scored.append(vectors)
        shown = ", ".join(f"{name} {value:.3f}" for name, value in values.items()
                          if value is not None)
        say(f"Selecting [{position}/{len(candidates)}] {candidate.name}: {len(labels)} + "
            f"{len(validation_labels)} examples in {feature_seconds:.1f} s; {shown}")
        # Keep only the best candidate so far (by the point estimate) in memory.
        value = None if budget.rank_by == "mean_rank" else values.get(budget.rank_by)
        if kept is None or (value is not None and (best_value is None or value > best_value)):
            kept = (candidate.name, transfer, (features, labels),
                    (candidate_train, candidate_validation))
            best_value = value
        else:
            del transfer, features

    order_values = _order_values(rows, budget.rank_by)
    means = _mean_ranks(rows)
    for row, mean in zip(rows, means):
        row.mean_rank = mean
    order = sorted(range(len(rows)), key=lambda index: (-order_values[index], means[index]))
    tops = np.zeros(len(rows))
    if budget.bootstrap and len(rows) > 1:
        rng = np.random.default_rng(budget.seed)
        for _ in range(budget.bootstrap):
            resampled = [
                estimate(vectors, budget, _resample(vectors.labels, rng),
                         None if budget.rank_by == "mean_rank" else budget.rank_by)
                for vectors in scored]
            if budget.rank_by == "mean_rank":
                trial = [dataclasses.replace(row, **values) for row, values in
                         zip(rows, resampled)]
                trial_values = _order_values(trial, "mean_rank")
            else:
                trial_values = [-np.inf if values[budget.rank_by] is None
                                   else values[budget.rank_by] for values in resampled]
            trial_values = np.asarray(trial_values, dtype=np.float64)
            leaders = np.flatnonzero(np.isclose(trial_values, trial_values.max(),
                                                   rtol=1e-9, atol=1e-12))
            tops[leaders] += 1 / len(leaders)  # a tie shares the round
        for row, count in zip(rows, tops):
            row.top_share = round(count / budget.bootstrap, 3)
    ranked = [rows[index] for index in order]
    for rank, row in enumerate(ranked, start=1):
        row.rank = rank
    if len(rows) == 1:
        verdict = "single candidate"
    elif not budget.bootstrap:
        verdict = "clear"
    else:
        verdict = "clear" if (ranked[0].top_share or 0) >= budget.close_call \
            else "too close to call"
    pick = ranked[0].candidate
    transfer = features = data = None
    if kept is not None and kept[0] == pick:
        _, transfer, features, data = kept
    else:  # ranked by mean rank, or the pick had no point estimate: build it again
        chosen = candidates[names.index(pick)]
        keras.utils.set_random_seed(budget.seed)
        transfer = chosen.build()
        data = chosen.data(transfer) if chosen.data else (train, validation)
        features = head_training_features(transfer, data[0])
    return Selection(ranked, budget, verdict, time.perf_counter() - started,
                     transfer=transfer, features=features, data=data)


def select_source(candidates: Sequence[Candidate], train: Iterable | None = None,
                  validation: Iterable | None = None, *, seed: int = 0,
                  rank_by: str | None = None, directory: str | os.PathLike | None = None,
                  title: str = "Source selection", multi_label: bool = False) -> Selection:
    """`rank_sources` as a recipe uses it: rank ``candidates`` with the run's ``seed``
    (``rank_by``: the estimate the rank follows; ``None``: `SelectionBudget`'s), print
    the table, write ``selection.json`` / ``.png`` to ``directory`` and return the
    `Selection`. The estimates rank single-label targets: ``multi_label`` is refused."""
    if multi_label:
        raise CookbookError("--select-from ranks single-label targets; the estimates do not "
                            "apply to --multi-label.")
    budget = SelectionBudget(seed=seed, **({"rank_by": rank_by} if rank_by else {}))
    selection = rank_sources(candidates, train, validation, budget)
    print(selection.summary_text())
    if directory is not None:
        selection.write(directory, title)
    return selection


ENCODER_PREFIX = "encoder:"


def text_encoder_candidate(name: str, texts: tuple, num_classes: int, batch_size: int = 32,
                           seed: int = 0) -> Candidate:
    """A sentence encoder among the word-vector candidates of a text pool: ``name`` is
    ``"encoder:PRESET"`` (a keras-hub preset, ``hf://`` handle or folder, pooled as
    `templates.models.text_encoders.pretrained_text_encoder` pools it: mean for a
    sentence-transformers folder); ``texts`` is ``(train_texts, train_labels,
    validation_texts, validation_labels)``. Its features are its pooled vectors."""
    from templates.models.text_encoders import pretrained_text_encoder

    if not name.startswith(ENCODER_PREFIX) or not name[len(ENCODER_PREFIX):].strip():
        raise CookbookError(f"{name!r}: a sentence-encoder candidate is written "
                         f"{ENCODER_PREFIX}PRESET_OR_FOLDER.")
    preset = name[len(ENCODER_PREFIX):].strip()
    train_texts, train_labels, validation_texts, validation_labels = texts

    def build():
        return pretrained_text_encoder(preset, num_classes, fit_texts=train_texts,
                                          pooling_data=texts)

    def data(transfer):
        return (transfer.batches(train_texts, train_labels, batch_size, shuffle=True,
                                    seed=seed),
                transfer.batches(validation_texts, validation_labels, batch_size))

    return Candidate(name, build, data=data, details={"kind": "sentence encoder",
                                                         "preset": preset})


def text_source_candidates(names: Sequence[str], tokenized: Callable[[str], Any],
                           build: Callable[[Any], Transferable], splits, batch_size: int,
                           seed: int) -> list[Candidate]:
    """A text recipe's pool: word-vector sources (``glove``, ``random``...: each tokenised
    by ``tokenized(name)`` and built by ``build``) beside sentence encoders
    (``encoder:PRESET``, `text_encoder_candidate`), all ranked on ``splits`` (a
    `templates.data.texts.TextSplits`). Each candidate's ``details`` say what it is; an
    encoder, when picked, is trained by ``recipes.text_encoder_classification``."""
    encoders = [name for name in names if name.startswith(ENCODER_PREFIX)]
    texts = (splits.train.texts, splits.labels["train"], splits.validation.texts,
             splits.labels["validation"])
    words = prepared_candidates(
        [name for name in names if name not in encoders], tokenized, build,
        lambda data: (data.batches("train", batch_size, shuffle=True, seed=seed),
                      data.batches("validation", batch_size)))
    return words + [text_encoder_candidate(name, texts, len(splits.class_names), batch_size,
                                              seed) for name in encoders]


def prepared_candidates(names: Sequence[str], prepare: Callable[[str], Any],
                        build: Callable[[Any], Transferable],
                        batches: Callable[[Any], tuple[Iterable, Iterable]],
                        **options) -> list[Candidate]:
    """Candidates whose model and batches both come from data prepared per candidate
    (word vectors: each set has its own vocabulary, so its own token ids).

    Args:
        names: The candidates' names.
        prepare: ``name -> prepared data`` (e.g. `templates.models.tokenized_text
            .tokenize_for_vectors` of that source's vectors); called once per candidate.
        build: ``prepared -> model``.
        batches: ``prepared -> (train, validation)``.
        **options: Further `Candidate` fields (``pooling``...).
    """
    candidates = []
    for name in names:
        prepared: dict[str, Any] = {}

        def data_of(name=name, prepared=prepared):
            if "data" not in prepared:
                prepared["data"] = prepare(name)
            return prepared["data"]

        candidates.append(Candidate(name, lambda data_of=data_of: build(data_of()),
                                       data=lambda transfer, data_of=data_of: batches(data_of()),
                                       **options))
    return candidates


def rank_cuts(
    build_at: Callable[[str | int | None], Transferable],
    cut_points: Sequence[str | int | None],
    train: Iterable,
    validation: Iterable,
    budget: SelectionBudget | None = None,
    pooling: str = "avg",
    progress: Callable[[str], None] | None = print,
) -> Selection:
    """Rank cuts of one backbone (how much of it to reuse) as `rank_sources` ranks
    sources: the fast mode of `templates.training.comparison.reuse_depth_sweep`, which trains a
    head per cut.

    Args:
        build_at: Returns the `TransferModel` reusing the backbone up to a cut point
            (``lambda cut: pretrained_model("MobileNet", 2, alpha=0.25, cut_at=cut)``).
        cut_points: Layer names or indices (`templates.models.backbones.block_cut_points`).
        train, validation, budget, progress: As in `rank_sources`.
        pooling: How the head pools the cut's feature map.
    """
    return rank_sources(cut_candidates(build_at, cut_points, pooling), train, validation,
                        budget, progress)


def cut_candidates(build_at: Callable[[str | int | None], Transferable],
                   cut_points: Sequence[str | int | None],
                   pooling: str = "avg") -> list[Candidate]:
    """One `Candidate` per cut point (named after it), as `rank_cuts` ranks them."""
    return [Candidate(str(cut), (lambda cut=cut: build_at(cut)), pooling=pooling,
                      details={"cut_at": cut}) for cut in cut_points]


def _epoch_zero(batches):
    from templates.data.batches import set_epoch

    set_epoch(batches, 0)
    return batches


def plot_selection(selection: Selection, path: str | os.PathLike, title: str) -> None:
    """A bar chart per estimate (each candidate's value, the pick in a darker colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    estimates = [name for name in transferability.ESTIMATES
                 if any(getattr(row, name) is not None for row in selection.candidates)]
    figure, axes = plt.subplots(1, len(estimates), figsize=(3.2 * len(estimates), 4.2),
                                   squeeze=False)
    names = [row.candidate for row in selection.candidates]
    for axis, name in zip(axes[0], estimates):
        values = [getattr(row, name) if getattr(row, name) is not None else 0.0
                  for row in selection.candidates]
        colours = ["#1f5fa8" if row.rank == 1 else "#9ab8dc" for row in selection.candidates]
        axis.barh(range(len(names)), values, color=colours)
        axis.set_yticks(range(len(names)), names if axis is axes[0][0] else [""] * len(names),
                        fontsize=7)
        axis.invert_yaxis()
        axis.set_title(name.replace("_", " "), fontsize=9)
        axis.grid(axis="x", alpha=0.3)
    verdict = selection.verdict if selection.verdict != "clear" else "clear pick"
    figure.suptitle(f"{title}: pick {selection.pick} ({verdict})", fontsize=9)
    figure.tight_layout()
    with atomic_path(os.fspath(path), suffix=".png") as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)


def source_model_candidate(name: str, develop: Callable[[], Any], num_classes: int,
                           cut_at: str | int, pooling: str = "avg") -> Candidate | None:
    """A candidate for a developed source model (the develop-model approach).

    ``develop()`` develops (or reloads) the source model and checks it against its naive
    baseline (`templates.training.develop.develop_model`); the candidate reuses it up to
    ``cut_at`` under a new head of ``num_classes``, its own head serving LEEP. A source
    model that fails its check is not ranked: ``None``, and a line saying why.
    """
    from templates.training.develop import UnskilledSourceModelError, reuse_model

    try:
        developed = develop()
    except UnskilledSourceModelError as error:
        print(f"Source task {name}: refused, not ranked ({error})")
        return None
    source = developed.source_model
    return Candidate(name, lambda: reuse_model(source, num_classes, cut_at=cut_at,
                                                  pooling=pooling),
                     source_classifier=lambda transfer: source, pooling=pooling,
                     details={"source_check": dataclasses.asdict(developed.source_check)})
