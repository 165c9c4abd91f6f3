"""The backbone registry: every `keras.applications` image family as one table.

Each row says how to build the family, what image size it was trained at, how its
inputs must be preprocessed, how wide its feature map is and where fine-tuning should
start by default. Code that needs a backbone looks the row up instead of branching on
names, so adding a family is adding a row.

Preprocessing modes (see `templates.models.preprocessing`):

- ``"caffe"``: RGB to BGR, then subtract the ImageNet channel means (VGG, ResNet v1).
- ``"tf"``: scale 0..255 to -1..1 (Inception, Xception, MobileNet v1/v2, ResNet v2, NASNet).
- ``"torch"``: scale to 0..1, then normalise by the ImageNet mean and standard deviation
  (DenseNet).
- ``"inside_model"``: the model preprocesses its own 0..255 inputs (MobileNet v3,
  EfficientNet, EfficientNet v2, ConvNeXt); nothing must be done outside.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from typing import Any

import keras

from templates.data.errors import CookbookError

PREPROCESSING_MODES = ("caffe", "tf", "torch", "inside_model")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One row of the registry.

    Attributes:
        name: The `keras.applications` constructor name, e.g. ``"MobileNetV2"``.
        module: The `keras.applications` submodule holding its `preprocess_input`.
        preprocessing: One of `PREPROCESSING_MODES`.
        default_image_size: Side of the square images the ImageNet weights were trained on.
        feature_width: Channels of the feature map without the top (at ``alpha=1.0``).
        fine_tune_from: Name of the layer where fine-tuning starts by default (that layer
            and every later one are unfrozen; BatchNormalization layers stay frozen).
        minimum_image_size: Smallest image side the family accepts.
        has_alpha: Whether the constructor takes a width multiplier ``alpha``.
    """

    name: str
    module: str
    preprocessing: str
    default_image_size: int
    feature_width: int
    fine_tune_from: str
    minimum_image_size: int = 32
    has_alpha: bool = False

    @property
    def constructor(self):
        """The `keras.applications` constructor of this family."""
        return getattr(keras.applications, self.name)

    @property
    def preprocess_input(self):
        """The family's own `keras.applications.<module>.preprocess_input`."""
        return getattr(keras.applications, self.module).preprocess_input


def _spec(name, module, preprocessing, size, width, fine_tune_from, minimum=32, alpha=False):
    return BackboneSpec(name, module, preprocessing, size, width, fine_tune_from, minimum, alpha)


# The table. Columns: constructor, module, preprocessing, default image size, feature
# width, default first fine-tuned layer, minimum image size, width multiplier.
BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _spec("VGG16", "vgg16", "caffe", 224, 512, "block5_conv1"),
        _spec("VGG19", "vgg19", "caffe", 224, 512, "block5_conv1"),
        _spec("ResNet50", "resnet", "caffe", 224, 2048, "conv5_block1_1_conv"),
        _spec("ResNet101", "resnet", "caffe", 224, 2048, "conv5_block1_1_conv"),
        _spec("ResNet152", "resnet", "caffe", 224, 2048, "conv5_block1_1_conv"),
        _spec("ResNet50V2", "resnet_v2", "tf", 224, 2048, "conv5_block1_preact_bn"),
        _spec("ResNet101V2", "resnet_v2", "tf", 224, 2048, "conv5_block1_preact_bn"),
        _spec("ResNet152V2", "resnet_v2", "tf", 224, 2048, "conv5_block1_preact_bn"),
        _spec("InceptionV3", "inception_v3", "tf", 299, 2048, "mixed8", 75),
        _spec("InceptionResNetV2", "inception_resnet_v2", "tf", 299, 1536, "mixed_7a", 75),
        _spec("Xception", "xception", "tf", 299, 2048, "block14_sepconv1", 71),
        _spec("MobileNet", "mobilenet", "tf", 224, 1024, "conv_dw_12", alpha=True),
        _spec("MobileNetV2", "mobilenet_v2", "tf", 224, 1280, "block_13_expand", alpha=True),
        _spec("MobileNetV3Small", "mobilenet_v3", "inside_model", 224, 576,
              "expanded_conv_8_expand", alpha=True),
        _spec("MobileNetV3Large", "mobilenet_v3", "inside_model", 224, 960,
              "expanded_conv_12_expand", alpha=True),
        _spec("DenseNet121", "densenet", "torch", 224, 1024, "conv5_block1_0_bn"),
        _spec("DenseNet169", "densenet", "torch", 224, 1664, "conv5_block1_0_bn"),
        _spec("DenseNet201", "densenet", "torch", 224, 1920, "conv5_block1_0_bn"),
        _spec("NASNetMobile", "nasnet", "tf", 224, 1056, "reduction_conv_1_reduce_8"),
        _spec("NASNetLarge", "nasnet", "tf", 331, 4032, "reduction_conv_1_reduce_12"),
        _spec("EfficientNetB0", "efficientnet", "inside_model", 224, 1280, "block6a_expand_conv"),
        _spec("EfficientNetB1", "efficientnet", "inside_model", 240, 1280, "block6a_expand_conv"),
        _spec("EfficientNetB2", "efficientnet", "inside_model", 260, 1408, "block6a_expand_conv"),
        _spec("EfficientNetB3", "efficientnet", "inside_model", 300, 1536, "block6a_expand_conv"),
        _spec("EfficientNetB4", "efficientnet", "inside_model", 380, 1792, "block6a_expand_conv"),
        _spec("EfficientNetB5", "efficientnet", "inside_model", 456, 2048, "block6a_expand_conv"),
        _spec("EfficientNetB6", "efficientnet", "inside_model", 528, 2304, "block6a_expand_conv"),
        _spec("EfficientNetB7", "efficientnet", "inside_model", 600, 2560, "block6a_expand_conv"),
        _spec("EfficientNetV2B0", "efficientnet_v2", "inside_model", 224, 1280,
              "block6a_expand_conv"),
        _spec("EfficientNetV2B1", "efficientnet_v2", "inside_model", 240, 1280,
              "block6a_expand_conv"),
        _spec("EfficientNetV2B2", "efficientnet_v2", "inside_model", 260, 1408,
              "block6a_expand_conv"),
        _spec("EfficientNetV2B3", "efficientnet_v2", "inside_model", 300, 1536,
              "block6a_expand_conv"),
        _spec("EfficientNetV2S", "efficientnet_v2", "inside_model", 384, 1280,
              "block6a_expand_conv"),
        _spec("EfficientNetV2M", "efficientnet_v2", "inside_model", 480, 1280,
              "block7a_expand_conv"),
        _spec("EfficientNetV2L", "efficientnet_v2", "inside_model", 480, 1280,
              "block7a_expand_conv"),
        _spec("ConvNeXtTiny", "convnext", "inside_model", 224, 768,
              "convnext_tiny_stage_3_block_0_depthwise_conv"),
        _spec("ConvNeXtSmall", "convnext", "inside_model", 224, 768,
              "convnext_small_stage_3_block_0_depthwise_conv"),
        _spec("ConvNeXtBase", "convnext", "inside_model", 224, 1024,
              "convnext_base_stage_3_block_0_depthwise_conv"),
        _spec("ConvNeXtLarge", "convnext", "inside_model", 224, 1536,
              "convnext_large_stage_3_block_0_depthwise_conv"),
        _spec("ConvNeXtXLarge", "convnext", "inside_model", 224, 2048,
              "convnext_xlarge_stage_3_block_0_depthwise_conv"),
    )
}


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look a backbone up by its constructor name, case-insensitively.

    Raises:
        ValueError: if no registry row has that name (the message suggests close names).
    """
    if isinstance(name, BackboneSpec):
        return name
    by_lower = {key.lower(): spec for key, spec in BACKBONES.items()}
    spec = by_lower.get(str(name).lower().replace("-", "").replace("_", ""))
    if spec is None:
        close = difflib.get_close_matches(str(name), list(BACKBONES), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise CookbookError(
            f"Unknown backbone {name!r}.{hint} Known backbones: {', '.join(BACKBONES)}."
        )
    return spec


def build_backbone(
    name: str | BackboneSpec,
    weights: str | os.PathLike | None = "imagenet",
    image_size: int | None = None,
    alpha: float | None = None,
) -> keras.Model:
    """Build a registry backbone without its classification top.

    Args:
        name: Registry name (case-insensitive) or a `BackboneSpec`.
        weights: ``"imagenet"`` (downloaded by Keras into ``$KERAS_HOME/models`` or read
            from there), a path to a local weights file, or ``None`` for random weights.
        image_size: Side of the square input; the family's default when omitted.
        alpha: Width multiplier for MobileNet families.

    Returns:
        A functional `keras.Model` taking preprocessed images (see
        `templates.models.preprocessing.BackbonePreprocessing`) and returning a feature map.
    """
    spec = get_backbone_spec(name)
    image_size = int(image_size or spec.default_image_size)
    if image_size < spec.minimum_image_size:
        raise CookbookError(
            f"{spec.name} needs images of at least {spec.minimum_image_size} pixels a side; "
            f"got image_size={image_size}."
        )
    options: dict[str, Any] = {
        "include_top": False,
        "input_shape": (image_size, image_size, 3),
    }
    if alpha is not None:
        if not spec.has_alpha:
            raise CookbookError(
                f"{spec.name} has no width multiplier; alpha={alpha} applies only to "
                "MobileNet, MobileNetV2, MobileNetV3Small and MobileNetV3Large."
            )
        options["alpha"] = alpha

    if weights is None:
        return spec.constructor(weights=None, **options)
    if isinstance(weights, str) and weights == "imagenet":
        try:
            return spec.constructor(weights="imagenet", **options)
        except Exception as error:  # Keras raises plain Exception on fetch failures.
            if "fetch failure" not in str(error).lower() and "urlopen" not in str(error).lower():
                raise
            keras_home = os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))
            raise WeightsUnavailableError(
                f"Could not download the ImageNet weights of {spec.name}"
                f"{'' if alpha is None else f' (alpha={alpha})'}: {error}\n"
                f"Offline? Put Keras's weights file in {keras_home}/models/ (set KERAS_HOME "
                "to use another folder), pass a local weights file as weights=PATH "
                "(--weights PATH in the recipes), or use weights=None for random weights."
            ) from None

    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise CookbookError(
            f"weights must be 'imagenet', None or a path to a weights file; {path!r} is "
            "not a file."
        )
    model = spec.constructor(weights=None, **options)
    try:
        model.load_weights(path)
    except Exception as error:
        raise CookbookError(
            f"Could not load weights file {path!r} into {spec.name} "
            f"(image_size={image_size}, alpha={alpha}): {error}"
        ) from error
    return model


class WeightsUnavailableError(CookbookError, RuntimeError):
    """Pretrained weights could not be downloaded and no local copy was found."""


def cut_backbone(backbone: keras.Model, cut_at: str | int | None) -> keras.Model:
    """Keep only part of a backbone: everything up to a named layer or a depth.

    Early layers compute generic features (edges, textures); later ones are specific to
    the source task. Cutting lets a user reuse only the generic part.

    Args:
        backbone: A functional backbone from `build_backbone`.
        cut_at: ``None`` keeps everything; a layer name keeps the graph up to and
            including that layer; an integer ``n`` keeps ``backbone.layers[:n]`` (the
            output is that of ``backbone.layers[n - 1]``; negative values count from the
            end, as in Python slices).

    Returns:
        A functional model from the backbone's input to the chosen layer's output; it
        shares weights with ``backbone``.
    """
    if cut_at is None:
        return backbone
    layers = backbone.layers
    if isinstance(cut_at, bool) or not isinstance(cut_at, (str, int)):
        raise CookbookError(
            f"cut_at must be a layer name, an integer depth or None; got {cut_at!r}.")
    if isinstance(cut_at, str):
        names = [layer.name for layer in layers]
        if cut_at not in names:
            close = difflib.get_close_matches(cut_at, names, n=3)
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise CookbookError(f"{backbone.name} has no layer named {cut_at!r}.{hint}")
        output_layer = backbone.get_layer(cut_at)
    else:
        kept = len(layers[:cut_at])
        if kept < 2:
            raise CookbookError(
                f"cut_at={cut_at} keeps {kept} of {backbone.name}'s {len(layers)} layers; "
                "keep at least one layer after the input."
            )
        output_layer = layers[kept - 1]
    output = output_layer.output
    if len(output.shape) not in (2, 4):
        raise CookbookError(
            f"Cutting {backbone.name} at {output_layer.name!r} gives an output of shape "
            f"{tuple(output.shape)}; the head needs a feature map (batch, height, width, "
            "channels) or a feature vector (batch, units)."
        )
    return keras.Model(backbone.input, output, name=f"{backbone.name}_to_{output_layer.name}")


_BLOCK_PATTERNS = (
    re.compile(r"(stage_\d+_block_\d+)"),       # ConvNeXt
    re.compile(r"^(conv\d+_block\d+)"),         # ResNet, DenseNet
    re.compile(r"^(stack\d+_block\d+)"),        # keras-hub ResNet
    re.compile(r"^(block_?\d+[a-z]?)"),         # VGG, Xception, MobileNetV2, EfficientNet
    re.compile(r"^conv_(?:dw|pw|pad)_(\d+)"),   # MobileNet
    re.compile(r"^(mixed\d+)"),                 # InceptionV3, InceptionResNetV2
)


def block_name(layer_name: str) -> str | None:
    """The block a `keras.applications` layer belongs to (``None`` if not in one)."""
    for pattern in _BLOCK_PATTERNS:
        match = pattern.search(layer_name)
        if match:
            return match.group(1) if not match.group(1).isdigit() else f"block_{match.group(1)}"
    return None


def block_boundaries(backbone: keras.Model) -> list[tuple[str, int]]:
    """``(block, index of its first layer)`` for each block of ``backbone``, in order.

    Layers before the first block form ``"stem"``; a layer outside any block (a pooling
    or activation between blocks) belongs to the block before it.
    """
    boundaries: list[tuple[str, int]] = []
    current = "stem"
    for index, layer in enumerate(backbone.layers):
        block = block_name(layer.name)
        if index == 0:
            boundaries.append((current, 0))
        if block is not None and block != current and all(block != name for name, _ in boundaries):
            boundaries.append((block, index))
            current = block
    return boundaries


def block_cut_points(backbone: keras.Model, count: int = 4) -> list[str]:
    """Names of layers that end a block, for reuse-depth sweeps: ``count`` block ends
    spread evenly from the first block to the last (the last layer of ``backbone``).
    """
    if count < 1:
        raise CookbookError(f"count must be at least 1; got {count}.")
    starts = [index for _, index in block_boundaries(backbone)][1:]  # skip the stem
    ends = [start - 1 for start in starts[1:]] + [len(backbone.layers) - 1]
    if not starts:
        return [backbone.layers[-1].name]
    picks = sorted({ends[round(position * (len(ends) - 1) / max(count - 1, 1))]
                    for position in range(count)})
    return [backbone.layers[index].name for index in picks]
