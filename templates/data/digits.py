"""scikit-learn's handwritten digits as a develop-model transfer problem.

The target: tell 5, 6, 7, 8 and 9 apart from a few labelled scans per class. The source
tasks: cheap labels on every scan the target does not use (all of 0-4 and the spare
half of 5-9): `SOURCE_TASKS` names them and their classes; ``unrelated`` is a control
of memorised noise patterns. The 1,797 real 8x8 scans (16 grey levels) ship with
scikit-learn: no download.
"""

from __future__ import annotations

import numpy as np

from templates.data.errors import CookbookError

TARGET_DIGITS = (5, 6, 7, 8, 9)
# Candidate source tasks, each labelled on the scans the target does not use (every
# 0-4 scan and the spare half of the 5-9 scans): the classes of each, in label order.
# `unrelated` is a deliberately unrelated control: jittered copies of noise patterns,
# each pattern labelled at random; learnable (it passes the baseline check) by
# memorising the patterns, nothing like strokes.
SOURCE_TASKS = {
    "parity": ("even", "odd"),                              # the digit modulo 2
    "low_digits": ("0", "1", "2", "3", "4"),                # tell 0-4 apart (0-4 scans)
    "loops": ("no loop", "loop"),                           # 0, 6, 8, 9 have closed loops
    "unrelated": ("a", "b", "c", "d"),  # random labels of noise patterns
}


def source_labels(task: str, images: np.ndarray, digits: np.ndarray, rng):
    """The scans and labels of one source task (``unrelated``: as many noise images)."""
    if task == "parity":
        return images, digits % 2
    if task == "low_digits":
        keep = digits < 5
        return images[keep], digits[keep]
    if task == "loops":
        return images, np.isin(digits, (0, 6, 8, 9)).astype(int)
    if task == "unrelated":
        # 200 noise patterns, each given one of 4 labels at random, seen as jittered
        # copies: learnable by memorising the patterns (held-out copies are recognised),
        # useless for strokes.
        patterns = rng.uniform(0, 16, size=(200, *images.shape[1:]))
        pattern_labels = rng.integers(0, 4, size=len(patterns))
        which = rng.integers(0, len(patterns), size=len(images))
        copies = patterns[which] + rng.normal(0, 1.5, size=images.shape)
        return np.clip(copies, 0, 16).astype("float32"), pattern_labels[which]
    raise CookbookError(f"Unknown source task {task!r}; the tasks are {', '.join(SOURCE_TASKS)}.")


def load_digits_by_task(labels_per_class: int, seed: int, validation_per_class: int = 80,
                        source_task: str = "parity") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The target's ``train`` / ``validation`` / ``test`` scans (labels 0-4 for digits
    5-9) and ``source_train`` / ``source_held_out`` of ``source_task``, split by
    ``seed``; the source's training scans also shifted one pixel each way."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[..., None].astype("float32")  # (1797, 8, 8, 1), values 0..16
    labels = digits.target
    rng = np.random.default_rng(seed)

    # Target: a few labels per class for training, `validation_per_class` for
    # validation (the learning curves: 80 per class make one scan 0.25 points), and of
    # the rest half for the test and half for the source task.
    train, validation, test = [], [], []
    source = np.flatnonzero(~np.isin(labels, TARGET_DIGITS)).tolist()
    for digit in TARGET_DIGITS:
        members = np.flatnonzero(labels == digit)
        rng.shuffle(members)
        train += members[:labels_per_class].tolist()
        validation += members[labels_per_class:labels_per_class + validation_per_class].tolist()
        rest = members[labels_per_class + validation_per_class:]
        if len(rest) < 2:
            raise CookbookError(
                f"--labels-per-class {labels_per_class} leaves no test scans of digit "
                f"{digit} ({len(members)} scans, {validation_per_class} for validation); "
                f"use at most {len(members) - validation_per_class - 2}.")
        test += rest[:len(rest) // 2].tolist()
        source += rest[len(rest) // 2:].tolist()
    # Source: the task's labels for every scan the target does not use.
    source_images, source_targets = source_labels(source_task, images[source],
                                                  labels[source], rng)
    order = rng.permutation(len(source_targets))
    held_out, kept = order[:len(order) // 5], order[len(order) // 5:]

    def pairs(indices, offset):
        return images[indices], (labels[indices] - offset).astype("int32")

    def task(indices):
        return source_images[indices], source_targets[indices].astype("int32")

    def shifted(pair):
        # Each source scan also moved one pixel each way: features that do not depend on
        # where a stroke sits serve new digits better (docs/results.md).
        x, y = pair
        views = [x] + [np.roll(x, step, axis=axis) for axis in (1, 2) for step in (-1, 1)]
        return np.concatenate(views), np.concatenate([y] * len(views))

    return {
        "source_train": shifted(task(kept)),
        "source_held_out": task(held_out),
        "train": pairs(np.array(train), 5), "validation": pairs(np.array(validation), 5),
        "test": pairs(np.array(test), 5),
    }
