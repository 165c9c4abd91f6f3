"""Image backbones from keras-hub presets, behind the same template as `keras.applications`.

    transfer = pretrained_model("keras_hub:resnet_50_imagenet", num_classes=2)
    transfer = pretrained_model("keras_hub:/path/to/preset_dir", num_classes=2)

A preset is a name keras-hub downloads (ResNet, EfficientNet, ConvNeXt, MobileNetV3,
ViT... `keras_hub.models.Backbone.presets`) or a local folder written by
``Backbone.save_to_preset`` and ``ImageConverter.save_to_preset``. The preset's image
converter (resizing and scaling) becomes the model's preprocessing layer, so the saved
model still takes 0..255 RGB images; the backbone's feature map is pooled by the usual
head, can be cut at a layer, and is fine-tuned from its last stage with every
BatchNormalization frozen, like any registry backbone.

keras-hub is an optional extra (``pip install -e ".[hub]"``); nothing imports it until
a ``keras_hub:`` backbone is asked for.
"""

from __future__ import annotations

import os
import re

import keras

from templates.data.errors import CookbookError

PREFIX = "keras_hub:"
_STAGE = re.compile(r"^(stack\d+|stage_?\d+|block\d+|transformer_layer_\d+|"
                    r"[a-z_]*?stage_\d+)")


def is_keras_hub(backbone) -> bool:
    """Whether ``backbone`` names a keras-hub preset (``"keras_hub:NAME_OR_DIR"``)."""
    return isinstance(backbone, str) and backbone.startswith(PREFIX)


def preset_of(backbone: str) -> str:
    """The preset name or folder of a ``"keras_hub:..."`` backbone."""
    preset = backbone[len(PREFIX):].strip()
    if not preset:
        raise CookbookError(f"{backbone!r} names no preset: write keras_hub:NAME or "
                            "keras_hub:/path/to/preset_dir.")
    return preset


def import_keras_hub():
    """The keras_hub module, or an ImportError saying how to install it."""
    try:
        import keras_hub
    except ImportError:
        raise ImportError("keras-hub presets need keras-hub: pip install -e \".[hub]\" "
                          "(or pip install keras-hub).") from None
    return keras_hub


def load_image_preset(preset: str, load_weights: bool = True, image_size: int | None = None):
    """The backbone and image converter of a keras-hub image preset.

    Args:
        preset: A preset name (downloaded by keras-hub) or a local preset folder.
        load_weights: ``False`` builds the architecture with random weights.
        image_size: Square side the converter resizes to (the preset's when ``None``).

    Returns:
        ``(backbone, converter, image_size)``.

    Raises:
        WeightsUnavailableError: a preset name that cannot be downloaded (offline), with
            the sentence that a local preset folder works.
        ValueError: a folder that is not a keras-hub image preset.
    """
    keras_hub = import_keras_hub()

    def load(name):
        return (keras_hub.models.Backbone.from_preset(name, load_weights=load_weights),
                keras_hub.layers.ImageConverter.from_preset(name))

    backbone, converter = load_from_preset(preset, load, "image", "--backbone keras_hub:")
    if converter is None:
        raise CookbookError(f"keras-hub preset {preset!r} has no image converter "
                            "(image_converter.json): it is not an image preset.")
    size = int(image_size or (converter.image_size or (224, 224))[0])
    converter.image_size = (size, size)
    return backbone, converter, size


def load_from_preset(preset: str, load, kind: str, flag: str):
    """``load(preset)`` for a keras-hub preset name or folder, failing in one sentence.

    Args:
        preset: A preset name (downloaded by keras-hub) or a local preset folder.
        load: Loads what is needed from the preset (``Backbone.from_preset``...).
        kind: ``"image"`` or ``"text"``, for the messages.
        flag: How a user passes a local folder instead (``"--preset "``).

    Raises:
        WeightsUnavailableError: a preset name that cannot be downloaded (offline), with
            the sentence that a local preset folder works.
        ValueError: a folder that is missing or that ``load`` cannot read.
    """
    from templates.models.backbones import WeightsUnavailableError

    local = os.path.isdir(preset)
    handle = "://" in preset  # hf://, kaggle://: keras-hub downloads (or reads its cache)
    if not local and not handle and (os.sep in preset or preset.startswith(".")):
        raise CookbookError(f"keras-hub preset folder {preset!r} does not exist.")
    try:
        return load(preset)
    except ImportError as error:  # timm and Hugging Face folders need safetensors
        raise ImportError(f"Loading the keras-hub {kind} preset {preset!r} needs the "
                          f"{error.name or 'missing'} package: pip install -e \".[hub]\" "
                          f"({error}).") from error
    except Exception as error:  # network failures come as several exception types
        # keras-hub reports a failed hf:// download as a preset that "has no config.json".
        download_failed = looks_like_network_failure(error) or (
            handle and "no config.json" in str(error))
        if local or not download_failed:
            raise CookbookError(f"Could not load the keras-hub {kind} preset {preset!r}: "
                                f"{error}") from error
        raise WeightsUnavailableError(
            f"Could not download the keras-hub preset {preset!r} "
            f"({type(error).__name__}; or the name is misspelt). Offline? Pass a local "
            f"preset folder instead ({flag}/path/to/preset_dir: written by "
            "Backbone.save_to_preset and the preprocessor's save_to_preset, or a Hugging "
            "Face or timm repository downloaded once).") from None


def looks_like_network_failure(error: Exception) -> bool:
    """Whether ``error`` reads like a failed download (keras-hub raises several types)."""
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in (
        "connection", "resolve", "network", "timed out", "urlopen", "http", "kaggle"))


def last_stage_start(backbone: keras.Model) -> str | None:
    """Name of the first layer of ``backbone``'s last stage (``stack3``, ``stage_4``,
    ``block7``...), where fine-tuning starts by default; ``None`` when the layers name
    no stages (then the whole backbone is fine-tuned)."""
    stages: dict[str, str] = {}
    for layer in backbone.layers:
        match = _STAGE.match(layer.name)
        if match and match.group(1) not in stages:
            stages[match.group(1)] = layer.name
    if len(stages) < 2:
        return None
    return list(stages.values())[-1]
