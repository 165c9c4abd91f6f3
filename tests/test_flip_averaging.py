"""`templates.models.flip_averaging`: predictions averaged over an image and its mirror."""

import keras
import numpy as np
import pytest

from templates.models.flip_averaging import flip_averaged
from templates.training.saving import load_model, save_model


def lopsided_model():
    """A classifier that looks only at the left half of the image: mirroring changes
    its answer, so averaging is visible."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    left = keras.layers.Cropping2D(((0, 0), (0, 4)))(inputs)
    hidden = keras.layers.GlobalAveragePooling2D()(left)
    outputs = keras.layers.Dense(2, activation="softmax")(hidden)
    return keras.Model(inputs, outputs, name="lopsided")


def test_the_average_of_an_image_and_its_mirror_survives_a_save(tmp_path):
    model = lopsided_model()
    images = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    mirrored = images[:, :, ::-1, :]
    averaged = flip_averaged(model)
    expected = (model.predict(images, verbose=0) + model.predict(mirrored, verbose=0)) / 2
    np.testing.assert_allclose(averaged.predict(images, verbose=0), expected, rtol=1e-5)
    # A mirror image gets the same answer as the image: the model is now symmetric.
    np.testing.assert_allclose(averaged.predict(mirrored, verbose=0), expected, rtol=1e-5)
    assert not np.allclose(model.predict(images, verbose=0), expected)
    # Saved and reloaded (safe mode) it still averages.
    save_model(averaged, tmp_path / "model.keras")
    reloaded = load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="image model"):
        flip_averaged(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
