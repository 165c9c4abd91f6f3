"""The registry is a faithful table of keras.applications."""

from __future__ import annotations

import urllib.error

import keras
import numpy as np
import pytest

from templates.models.backbones import (
    BACKBONES,
    WeightsUnavailableError,
    build_backbone,
    cut_backbone,
    get_backbone_spec,
)
from templates.models.preprocessing import BackbonePreprocessing

REQUIRED_FAMILIES = (
    ["VGG16", "VGG19", "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2",
     "ResNet152V2", "InceptionV3", "InceptionResNetV2", "Xception", "MobileNet", "MobileNetV2",
     "MobileNetV3Small", "MobileNetV3Large", "DenseNet121", "DenseNet169", "DenseNet201",
     "NASNetMobile", "NASNetLarge"]
    + [f"EfficientNetB{i}" for i in range(8)]
    + [f"EfficientNetV2{size}" for size in ("B0", "B1", "B2", "B3", "S", "M", "L")]
    + [f"ConvNeXt{size}" for size in ("Tiny", "Small", "Base", "Large", "XLarge")]
)


def test_registry_covers_every_required_family():
    assert sorted(BACKBONES) == sorted(REQUIRED_FAMILIES)
    assert FAST_FAMILIES <= set(BACKBONES)
    for spec in BACKBONES.values():
        assert callable(spec.constructor), spec.name


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_preprocessing_matches_the_family_module(name):
    spec = BACKBONES[name]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(2, 8, 8, 3)).astype("float32")
    expected = spec.preprocess_input(images.copy())
    actual = keras.ops.convert_to_numpy(BackbonePreprocessing(spec.preprocessing)(images))
    np.testing.assert_allclose(actual, np.asarray(expected), rtol=1e-5, atol=1e-4)
    if spec.preprocessing == "inside_model":
        # The family's own preprocess_input is a pass-through: inputs stay 0..255.
        np.testing.assert_array_equal(np.asarray(expected), images)


# One family per keras.applications module is built in the fast tier; the larger
# members of each module (same code, more blocks) are built in the full run.
FAST_FAMILIES = {"VGG16", "ResNet50", "ResNet50V2", "InceptionV3", "InceptionResNetV2",
                 "Xception", "MobileNet", "MobileNetV2", "MobileNetV3Small", "DenseNet121",
                 "NASNetMobile", "EfficientNetB0", "EfficientNetV2B0", "ConvNeXtTiny"}


@pytest.mark.parametrize("name", [
    name if name in FAST_FAMILIES else pytest.param(name, marks=pytest.mark.acceptance)
    for name in sorted(BACKBONES)])
def test_built_backbone_matches_its_row(name):
    spec = BACKBONES[name]
    size = max(spec.minimum_image_size, 32)
    model = build_backbone(spec, weights=None, image_size=size)
    try:
        assert model.output_shape[-1] == spec.feature_width
        names = [layer.name for layer in model.layers]
        assert spec.fine_tune_from in names
        # The fine-tuning start is in the top part of the network, not at its base.
        assert names.index(spec.fine_tune_from) > len(names) // 2
        if spec.preprocessing == "inside_model":
            first = [type(layer).__name__ for layer in model.layers[:4]]
            assert {"Rescaling", "Normalization"} & set(first), first
    finally:
        keras.backend.clear_session()


def test_lookup_is_case_insensitive_and_helpful():
    assert get_backbone_spec("mobilenetv2").name == "MobileNetV2"
    assert get_backbone_spec("RESNET50").name == "ResNet50"
    with pytest.raises(ValueError, match="MobileNetV2"):
        get_backbone_spec("MobileNetV22")


def test_alpha_only_for_families_that_have_it():
    with pytest.raises(ValueError, match="width multiplier"):
        build_backbone("ResNet50", weights=None, image_size=32, alpha=0.5)


def test_too_small_images_are_refused():
    with pytest.raises(ValueError, match="at least 75"):
        build_backbone("InceptionV3", weights=None, image_size=32)


def test_local_weights_file_is_loaded(tmp_path):
    source = build_backbone("MobileNet", weights=None, image_size=32, alpha=0.25)
    path = tmp_path / "mobilenet.weights.h5"
    source.save_weights(path)
    loaded = build_backbone("MobileNet", weights=path, image_size=32, alpha=0.25)
    for expected, actual in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(expected, actual)


def test_missing_weights_file_names_the_path(tmp_path):
    with pytest.raises(ValueError, match="nowhere.h5"):
        build_backbone("MobileNet", weights=tmp_path / "nowhere.h5", image_size=32, alpha=0.25)


def test_offline_imagenet_download_gives_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", offline)
    # alpha=0.5 weights are not in the shared cache, so Keras must try to download.
    with pytest.raises(WeightsUnavailableError, match="KERAS_HOME") as caught:
        build_backbone("MobileNet", weights="imagenet", image_size=128, alpha=0.5)
    assert "weights=PATH" in str(caught.value)


def test_cut_at_layer_name_and_depth():
    backbone = build_backbone("MobileNet", weights=None, image_size=32, alpha=0.25)
    by_name = cut_backbone(backbone, "conv_pw_5_relu")
    assert by_name.layers[-1].name == "conv_pw_5_relu"
    assert by_name.output_shape[-1] == 64  # 256 * alpha
    by_depth = cut_backbone(backbone, 20)
    assert by_depth.layers[-1].name == backbone.layers[19].name
    assert len(by_depth.layers) == 20
    # The cut model shares the backbone's weights rather than copying them.
    assert by_depth.layers[1].kernel is backbone.layers[1].kernel
    assert cut_backbone(backbone, None) is backbone


def test_cut_errors_are_clear():
    backbone = build_backbone("MobileNet", weights=None, image_size=32, alpha=0.25)
    with pytest.raises(ValueError, match="conv_pw_5_relu"):
        cut_backbone(backbone, "conv_pw_5_rel")
    with pytest.raises(ValueError, match="at least one layer"):
        cut_backbone(backbone, 1)
