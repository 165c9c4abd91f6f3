"""transfer-cookbook: Keras 3 templates for transfer learning.

Backend-agnostic model building lives in `backbones`, `preprocessing`, `heads`,
`pretrained`, `develop`, `phases`, `comparison`, `transfer_report`, `embeddings` and
`text_classifiers`; word vectors (`word_vectors`, `word2vec`) need gensim but not
TensorFlow. TensorFlow-only parts (`image_data`, `text_data`, `hub`, `export`) are
imported from their own modules so that the rest runs on any Keras backend.
"""

from templates.backbones import (
    BACKBONES,
    BackboneSpec,
    WeightsUnavailableError,
    build_backbone,
    cut_backbone,
    get_backbone_spec,
)
from templates.comparison import TrainingBudget, compare_with_scratch, reuse_depth_sweep
from templates.develop import (
    UnskilledSourceModelError,
    develop_model,
    develop_source_model,
    reuse_model,
)
from templates.embeddings import EmbeddingMatrix, PretrainedEmbedding, embedding_matrix
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
from templates.text_classifiers import (
    ARCHITECTURES,
    pretrained_text_classifier,
    scratch_text_classifier,
    text_head,
)
from templates.transfer import TransferPlan, TransferRun, run_transfer
from templates.transfer_report import TransferReport, summarize_curve
from templates.word2vec import develop_word_vectors
from templates.word_vectors import VectorFileError, load_word_vectors

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "BACKBONES",
    "EmbeddingMatrix",
    "PretrainedEmbedding",
    "VectorFileError",
    "BackboneSpec",
    "BackbonePreprocessing",
    "TrainingBudget",
    "TransferModel",
    "TransferPlan",
    "TransferRun",
    "TransferReport",
    "UnskilledSourceModelError",
    "WeightsUnavailableError",
    "build_backbone",
    "classification_head",
    "compare_with_scratch",
    "cut_backbone",
    "develop_model",
    "develop_source_model",
    "develop_word_vectors",
    "embedding_matrix",
    "extract_features",
    "fine_tune",
    "freeze_batch_normalization",
    "get_backbone_spec",
    "load_model",
    "load_word_vectors",
    "pretrained_model",
    "pretrained_text_classifier",
    "read_labels",
    "reuse_depth_sweep",
    "reuse_model",
    "run_transfer",
    "save_model",
    "scratch_text_classifier",
    "summarize_curve",
    "text_head",
    "train_head",
    "unfreeze_from",
    "write_labels",
]
