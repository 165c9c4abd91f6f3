"""Transferability estimates: how well a frozen source's features fit the target labels.

Each estimate is computed from the frozen features of the target's training examples
(and, for the probes, its validation examples) in seconds, without fine-tuning:

- `logme` (You et al., ICML 2021): the log of the maximum evidence of a Bayesian linear
  model from the features to each class's one-hot label, per example, averaged over
  classes. Higher is better.
- `leep` (Nguyen et al., ICML 2020): the log expected empirical prediction of the
  source's own classifier head, mapped to the target classes through their empirical
  co-occurrence. Needs the source's class probabilities, so only a source with a
  classifier head has it. Higher is better (at most 0).
- `h_score` (Bao et al., ICIP 2019): ``tr(cov(f)^-1 cov(E[f | y]))``, how much of the
  features' variance lies between classes. Higher is better.
- `knn_accuracy`: validation accuracy of a k-nearest-neighbour classifier (cosine) on
  the training features.
- `linear_probe_accuracy`: validation accuracy of a logistic regression on the
  standardised training features.

No single estimate wins everywhere (Agostinelli et al., ECCV 2022); a 2025 study of 23
of them (Sorkhei et al.) found the plain probes as good as any.
`templates.selection.ranking` ranks candidates by one of them and says, from a bootstrap over
the training rows, how far to trust the ranking.

Everything here is NumPy and scikit-learn: any Keras backend.
"""

from __future__ import annotations

import math

import numpy as np

from templates.data.errors import CookbookError

ESTIMATES = ("linear_probe", "knn", "logme", "leep", "h_score")


def feature_vectors(features: np.ndarray, pooling: str = "avg") -> np.ndarray:
    """One vector per example from a backbone's output, as the head would pool it.

    A feature map ``(examples, height, width, channels)`` is averaged over its
    positions (``pooling="avg"``), maxed (``"max"``) or flattened (``"flatten"``); a
    sequence ``(examples, tokens, dimensions)`` (word vectors) is averaged over the
    tokens whose vector is not all zeros (padding rows are zeros); vectors stay as they
    are. Returns float64.
    """
    features = np.asarray(features)
    if features.ndim == 2:
        return features.astype(np.float64)
    if features.ndim == 3:
        present = np.abs(features).sum(axis=-1, keepdims=True) > 0
        total = (features * present).sum(axis=1, dtype=np.float64)
        return total / np.maximum(present.sum(axis=1), 1)
    if features.ndim == 4:
        if pooling == "flatten":
            return features.reshape(len(features), -1).astype(np.float64)
        if pooling == "max":
            return features.max(axis=(1, 2)).astype(np.float64)
        return features.mean(axis=(1, 2), dtype=np.float64)
    raise CookbookError(f"features of shape {features.shape} are neither vectors, sequences "
                        "(examples, tokens, dimensions) nor feature maps (examples, height, "
                        "width, channels).")


def _check(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if features.ndim != 2 or len(features) != len(labels):
        raise CookbookError(f"estimates need (examples, dimensions) features and one label per "
                            f"example; got {features.shape} and {labels.shape}.")
    if len(np.unique(labels)) < 2:
        raise CookbookError("estimates need examples of at least two classes.")
    return features, labels.astype(np.int64)


def logme(features: np.ndarray, labels: np.ndarray, iterations: int = 11,
          tolerance: float = 1e-2) -> float:
    """LogME: the maximum log evidence per example, averaged over one-vs-rest classes.

    For each class, ``y = f w + noise`` with ``w ~ N(0, 1/alpha)`` and noise
    ``N(0, 1/beta)``; alpha and beta maximise the evidence by MacKay's fixed point
    (at most ``iterations`` updates, stopping when ``alpha / beta`` moves by less than
    ``tolerance`` of itself). Computed in the features' singular-value basis, so the
    cost is one SVD of the ``(examples, dimensions)`` matrix.
    """
    features, labels = _check(features, labels)
    examples, dimensions = features.shape
    left, singular, _ = np.linalg.svd(features, full_matrices=False)
    squares = singular ** 2
    evidences = []
    for label in np.unique(labels):
        target = (labels == label).astype(np.float64)
        projected = left.T @ target                     # target in the features' basis
        outside = float(target @ target - projected @ projected)  # beyond their span
        alpha, beta = 1.0, 1.0
        for _ in range(iterations):
            ratio = alpha / beta
            weights = singular * projected / (squares + ratio)   # posterior mean, V basis
            gamma = float((squares / (squares + ratio)).sum())
            weight_norm = float(weights @ weights)
            residual = outside + float(((projected - singular * weights) ** 2).sum())
            alpha = gamma / (weight_norm + 1e-5)
            beta = (examples - gamma) / (residual + 1e-5)
            if abs(alpha / beta - ratio) / ratio < tolerance:
                break
        ratio = alpha / beta
        weights = singular * projected / (squares + ratio)
        weight_norm = float(weights @ weights)
        residual = outside + float(((projected - singular * weights) ** 2).sum())
        # Eigenvalues of f^T f beyond the examples' span are 0.
        log_determinant = (float(np.log(alpha + beta * squares).sum())
                           + (dimensions - len(squares)) * math.log(alpha))
        evidence = (dimensions / 2 * math.log(alpha) + examples / 2 * math.log(beta)
                    - log_determinant / 2 - beta / 2 * residual - alpha / 2 * weight_norm
                    - examples / 2 * math.log(2 * math.pi))
        evidences.append(evidence / examples)
    return float(np.mean(evidences))


def leep(source_probabilities: np.ndarray, labels: np.ndarray) -> float:
    """LEEP from the source classifier's probabilities ``(examples, source classes)``
    on the target's training examples and their target labels."""
    probabilities = np.asarray(source_probabilities, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise CookbookError(f"LEEP needs (examples, source classes) probabilities and one label "
                            f"per example; got {probabilities.shape} and {labels.shape}.")
    classes = int(labels.max()) + 1
    joint = np.zeros((classes, probabilities.shape[1]))
    np.add.at(joint, labels, probabilities)
    joint /= len(labels)
    conditional = joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-12)  # P(y | z)
    expected = (probabilities * conditional[labels]).sum(axis=1)
    return float(np.mean(np.log(np.maximum(expected, 1e-12))))


def h_score(features: np.ndarray, labels: np.ndarray, shrinkage: float = 1e-3) -> float:
    """H-score: ``tr(cov(f)^-1 cov(E[f | y]))``, with ``shrinkage`` times the mean
    variance added to the covariance's diagonal so that it stays invertible."""
    features, labels = _check(features, labels)
    centred = features - features.mean(axis=0)
    covariance = centred.T @ centred / len(features)
    covariance += shrinkage * float(np.trace(covariance)) / len(covariance) * np.eye(
        len(covariance))
    means = np.zeros_like(centred)
    for label in np.unique(labels):
        members = labels == label
        means[members] = centred[members].mean(axis=0)
    between = means.T @ means / len(features)
    return float(np.trace(np.linalg.solve(covariance, between)))


def knn_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                 validation_features: np.ndarray, validation_labels: np.ndarray,
                 neighbours: int = 10) -> float:
    """Validation accuracy of a cosine k-nearest-neighbour vote on the training
    features (``neighbours`` is capped at the number of training examples)."""
    from sklearn.neighbors import KNeighborsClassifier

    train_features, train_labels = _check(train_features, train_labels)
    classifier = KNeighborsClassifier(n_neighbors=min(neighbours, len(train_labels)),
                                      metric="cosine")
    classifier.fit(train_features, train_labels)
    return float(classifier.score(np.asarray(validation_features, np.float64),
                                  np.asarray(validation_labels).reshape(-1)))


def linear_probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                          validation_features: np.ndarray, validation_labels: np.ndarray,
                          regularisation: float = 1.0) -> float:
    """Validation accuracy of a logistic regression (L2, inverse strength
    ``regularisation``) on the training features, each dimension standardised on the
    training rows."""
    from sklearn.linear_model import LogisticRegression

    train_features, train_labels = _check(train_features, train_labels)
    mean = train_features.mean(axis=0)
    scale = train_features.std(axis=0)
    scale[scale == 0] = 1.0
    classifier = LogisticRegression(C=regularisation, max_iter=500)
    classifier.fit((train_features - mean) / scale, train_labels)
    validation = (np.asarray(validation_features, np.float64) - mean) / scale
    return float(classifier.score(validation, np.asarray(validation_labels).reshape(-1)))
