"""transfer-cookbook: Keras 3 templates for transfer learning.

Backend-agnostic model building lives in `backbones`, `preprocessing`, `heads`,
`pretrained` and `phases`; TensorFlow-only parts (`image_data`, `export`) are imported
from their own modules so that the rest runs on any Keras backend.
"""

from templates.backbones import (
    BACKBONES,
    BackboneSpec,
    WeightsUnavailableError,
    build_backbone,
    cut_backbone,
    get_backbone_spec,
)
from templates.heads import classification_head
from templates.phases import (
    extract_features,
    fine_tune,
    freeze_batch_normalization,
    train_head,
    unfreeze_from,
)
from templates.preprocessing import BackbonePreprocessing
from templates.pretrained import TransferModel, pretrained_model
from templates.saving import load_model, read_labels, save_model, write_labels

__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "BackbonePreprocessing",
    "TransferModel",
    "WeightsUnavailableError",
    "build_backbone",
    "classification_head",
    "cut_backbone",
    "extract_features",
    "fine_tune",
    "freeze_batch_normalization",
    "get_backbone_spec",
    "load_model",
    "pretrained_model",
    "read_labels",
    "save_model",
    "train_head",
    "unfreeze_from",
    "write_labels",
]
