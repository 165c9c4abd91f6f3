"""The pretrained-model template: reuse a released backbone, add a head, tune it.

transfer = pretrained_model("MobileNet", num_classes=2, alpha=0.25)
train_head(transfer, train_ds, validation_ds, epochs=5)       # backbone frozen
fine_tune(transfer, train_ds, validation_ds, epochs=3)        # top unfrozen, BN frozen
transfer.model.save("model.keras")                            # takes 0..255 RGB images
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import keras

from templates.data.errors import CookbookError
from templates.models.backbones import (
    BackboneSpec,
    build_backbone,
    cut_backbone,
    get_backbone_spec,
)
from templates.models.heads import classification_head
from templates.models.keras_hub_presets import is_keras_hub
from templates.models.preprocessing import BackbonePreprocessing
from templates.models.transfer_model import TransferModel


def pretrained_model(
    backbone: str | BackboneSpec,
    num_classes: int,
    weights: str | os.PathLike | None = "imagenet",
    image_size: int | None = None,
    alpha: float | None = None,
    cut_at: str | int | None = None,
    pooling: str = "avg",
    dropout: float = 0.2,
    hidden_units: Sequence[int] = (),
    fine_tune_from: str | int | None = "default",
    class_names: Sequence[str] | None = None,
    multi_label: bool = False,
) -> TransferModel:
    """Build a classifier from a registry backbone, frozen, with a new head.

    Args:
        backbone: Registry name, case-insensitive (``"MobileNet"``, ``"resnet50"``...),
            a keras-hub image preset: ``"keras_hub:NAME"`` (downloaded) or
            ``"keras_hub:/path/to/preset_dir"`` (`templates.models.keras_hub_presets`), or a
            TF-Hub image feature-vector module: ``"tfhub:HANDLE_OR_SAVEDMODEL_DIR"``
            (`templates.models.tfhub.hub_image_backbone`; TensorFlow backend).
        num_classes: Number of target classes.
        weights: ``"imagenet"`` (for a keras-hub preset: the preset's weights), a local
            weights file (registry backbones), or ``None`` (random).
        image_size: Square input side; the family's default when omitted.
        alpha: Width multiplier for MobileNet families.
        cut_at: Reuse only part of the backbone: a layer name or a depth (see
            `templates.models.backbones.cut_backbone`). ``None`` reuses all of it.
        pooling: Head pooling, ``"avg"``, ``"max"`` or ``"flatten"``.
        dropout: Head dropout rate.
        hidden_units: Optional hidden dense layers in the head.
        fine_tune_from: First layer to unfreeze when fine-tuning. ``"default"`` takes
            the registry's layer, or the whole kept part when ``cut_at`` removed it.
        class_names: Optional class names, in label order.
        multi_label: One sigmoid per class, for examples with any number of labels
            (`templates.data.multi_label`), instead of a softmax.

    Returns:
        A `TransferModel` whose ``model`` takes float 0..255 RGB images of shape
        ``(image_size, image_size, 3)``; the backbone is frozen.
    """
    if class_names is not None and len(class_names) != int(num_classes):
        raise CookbookError(
            f"class_names has {len(class_names)} names but num_classes={num_classes}."
        )
    if isinstance(backbone, str) and backbone.startswith("tfhub:"):
        return _tfhub_model(backbone[len("tfhub:"):], num_classes, weights, image_size,
                            alpha, cut_at, fine_tune_from, class_names,
                            dict(dropout=dropout, hidden_units=hidden_units,
                                 multi_label=multi_label))
    if is_keras_hub(backbone):
        return _keras_hub_model(backbone, num_classes, weights, image_size, alpha, cut_at,
                                fine_tune_from, class_names,
                                dict(pooling=pooling, dropout=dropout,
                                     hidden_units=hidden_units, multi_label=multi_label))
    spec = get_backbone_spec(backbone)
    full = build_backbone(spec, weights=weights, image_size=image_size, alpha=alpha)
    reused = cut_backbone(full, cut_at)
    reused.trainable = False
    if fine_tune_from == "default":
        names = {layer.name for layer in reused.layers}
        fine_tune_from = spec.fine_tune_from if spec.fine_tune_from in names else None
    head = classification_head(
        reused.output_shape[1:], num_classes, pooling=pooling, dropout=dropout,
        hidden_units=hidden_units, multi_label=multi_label,
    )
    return TransferModel(
        backbone=reused,
        head=head,
        preprocessing=BackbonePreprocessing(spec.preprocessing, name="preprocessing"),
        fine_tune_from=fine_tune_from,
        class_names=class_names,
        name=f"{spec.name.lower()}_classifier",
    )


def _keras_hub_model(backbone, num_classes, weights, image_size, alpha, cut_at,
                     fine_tune_from, class_names, head_options) -> TransferModel:
    """`pretrained_model` for a ``keras_hub:`` preset: the preset's image converter as
    the preprocessing, its backbone (optionally cut), a new head."""
    from templates.models.keras_hub_presets import (
        last_stage_start,
        load_image_preset,
        preset_of,
    )

    preset = preset_of(backbone)
    if alpha is not None:
        raise CookbookError(f"alpha={alpha} is a keras.applications width multiplier; the "
                            f"keras-hub preset {preset!r} fixes its own width.")
    if weights not in ("imagenet", None):
        raise CookbookError(f"A keras-hub preset carries its own weights: use weights="
                            f"'imagenet' (the preset's) or None (random), not {weights!r}.")
    full, converter, size = load_image_preset(preset, load_weights=weights is not None,
                                              image_size=image_size)
    reused = cut_backbone(full, cut_at)
    reused.trainable = False
    if fine_tune_from == "default":
        fine_tune_from = last_stage_start(reused)
    shape = (size, size, 3)
    head = classification_head(reused.compute_output_shape((None, *shape))[1:], num_classes,
                               **head_options)
    name = re.sub(r"\W+", "_", os.path.basename(os.path.normpath(preset))).strip("_").lower()
    return TransferModel(backbone=reused, head=head, preprocessing=converter,
                         fine_tune_from=fine_tune_from, class_names=class_names,
                         name=f"{name or 'keras_hub'}_classifier", input_shape=shape)


def _tfhub_model(handle, num_classes, weights, image_size, alpha, cut_at, fine_tune_from,
                 class_names, head_options) -> TransferModel:
    """`pretrained_model` for a ``tfhub:`` image feature-vector module (scaled to 0..1
    inside the model, the TF-Hub convention)."""
    from templates.models.tfhub import hub_image_backbone

    refused = [message for used, message in (
        (alpha is not None, f"alpha={alpha} (a keras.applications width multiplier)"),
        (cut_at is not None, f"cut_at={cut_at!r} (the module is one opaque layer)"),
        (weights != "imagenet", f"weights={weights!r} (the module carries its own)"),
        (fine_tune_from not in ("default", None),
         f"fine_tune_from={fine_tune_from!r} (the module is fine-tuned whole)"),
    ) if used]
    if refused:
        raise CookbookError(f"TF-Hub module {handle!r}: {'; '.join(refused)} cannot apply.")
    backbone = hub_image_backbone(handle, image_size or 224)
    backbone.trainable = False
    head = classification_head(backbone.output_shape[1:], num_classes, **head_options)
    return TransferModel(backbone=backbone, head=head,
                         preprocessing=keras.layers.Rescaling(1 / 255.0, name="to_unit_range"),
                         fine_tune_from=None, class_names=class_names,
                         name="tfhub_classifier")
