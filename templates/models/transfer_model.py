"""The one contract every template returns: `TransferModel` (and the `Transferable` protocol).

``backbone`` is the reused part, ``head`` the new part, ``feature_extractor`` what the
head reads (the backbone with its preprocessing), ``model`` the whole classifier, and
``fine_tune_from`` the first layer the fine-tuning phase unfreezes (`unfreeze`).
`head_on_features` is a head alone as that contract, for features computed already.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import keras

from templates.models.freezing import unfreeze_from


class Transferable(Protocol):
    """What the phases need from a template's model (see `templates.models.pretrained`)."""

    backbone: keras.Model
    head: keras.Model
    feature_extractor: keras.Model
    model: keras.Model
    fine_tune_from: str | int | None


def unfreeze(transfer: Transferable, from_layer: str | int | None) -> int:
    """Unfreeze ``transfer`` for fine-tuning: its own ``unfreeze(from_layer)`` where it
    has one (`templates.models.text_encoders.EncoderTransfer`: LoRA adapters only), else
    `unfreeze_from` on its backbone. Returns the number of trainable weight tensors."""
    custom = getattr(transfer, "unfreeze", None)
    if callable(custom):
        return custom(from_layer)
    return unfreeze_from(transfer.backbone, from_layer)


class TransferModel:
    """A reused feature extractor plus a new head, and the full model joining them.

    Args:
        backbone: The reused part (a functional model taking preprocessed inputs).
        head: The new part, from the backbone's output to class probabilities.
        preprocessing: Optional layer applied to raw inputs before the backbone.
        fine_tune_from: Default first layer to unfreeze when fine-tuning (a name, an
            index into ``backbone.layers``, or ``None`` for all of it).
        class_names: Optional names of the classes, in label order.
        name: Name of the full model.
        input_name: Name of the full model's input (``"images"``, ``"token_ids"``...);
            its shape and dtype are the backbone's.
        input_shape: The full model's input shape (without the batch), when the
            backbone's leaves sizes open (keras-hub backbones take any image size).

    Attributes:
        feature_extractor: Model from raw inputs to the backbone's features (shares
            weights with ``model``); used to cache features for head training.
        model: Model from raw inputs to class probabilities: what gets trained,
            saved and exported.
    """

    def __init__(
        self,
        backbone: keras.Model,
        head: keras.Model,
        preprocessing: keras.layers.Layer | None = None,
        fine_tune_from: str | int | None = None,
        class_names: Sequence[str] | None = None,
        name: str = "transfer_model",
        input_name: str = "images",
        input_shape: Sequence[int | None] | None = None,
    ):
        self.backbone = backbone
        self.head = head
        self.preprocessing = preprocessing
        self.fine_tune_from = fine_tune_from
        self.class_names = list(class_names) if class_names is not None else None
        self.name = name
        self.input_name = input_name

        inputs = keras.Input(shape=tuple(input_shape or backbone.input_shape[1:]),
                             dtype=backbone.inputs[0].dtype, name=input_name)
        x = preprocessing(inputs) if preprocessing is not None else inputs
        features = backbone(x)
        self.feature_extractor = keras.Model(inputs, features, name=f"{name}_features")
        self.model = keras.Model(inputs, head(features), name=name)


def head_on_features(head: keras.Model) -> TransferModel:
    """``head`` as a `TransferModel` whose inputs are the frozen part's features (its
    backbone passes them through), so `templates.training.run.run_transfer` trains,
    validates and scores the head on features extracted once
    (`templates.training.phases.extract_features`), as it would the whole model with
    that part frozen."""
    inputs = keras.Input(tuple(head.input_shape[1:]), name="features")
    passthrough = keras.Model(inputs, keras.layers.Identity()(inputs), name="passthrough")
    return TransferModel(passthrough, head, input_name="features",
                         name=f"{head.name}_on_features")
