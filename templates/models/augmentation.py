"""Image augmentation layers, seeded from the plan's seed.

``flip_rotate``: random horizontal flips and rotations of up to 10% of a turn;
``randaugment``: flips and Keras's RandAugment. Both take 0..255 RGB images (the
backbone's preprocessing comes after them, inside the model).
"""

from __future__ import annotations

import keras

from templates.data.errors import CookbookError

AUGMENTATIONS = ("flip_rotate", "randaugment")


def image_augmentation(kind: str, seed: int) -> keras.Sequential:
    """The augmentation named ``kind`` (one of `AUGMENTATIONS`), seeded with ``seed``."""
    if kind not in AUGMENTATIONS:
        raise CookbookError(
            f"Unknown augmentation {kind!r}; choose from {', '.join(AUGMENTATIONS)}.")
    second = (keras.layers.RandAugment(value_range=(0, 255), seed=seed) if kind == "randaugment"
              else keras.layers.RandomRotation(0.1, seed=seed))
    return keras.Sequential([keras.layers.RandomFlip("horizontal", seed=seed), second],
                            name=f"augmentation_{kind}")
