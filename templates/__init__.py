"""transfer-cookbook: Keras 3 templates for transfer learning.

The common case is one call:

    from templates import TransferPlan, pretrained_model, run_transfer
    run = run_transfer(pretrained_model("MobileNet", 2, alpha=0.25), train, validation,
                       TransferPlan(seed=1), checkpoints="runs/x/checkpoints")

The names below are the user-facing surface; each is imported from its module the first
time it is used (PEP 562), so ``import templates`` loads neither TensorFlow-only parts
nor gensim and pyarrow until something needs them. Model building (`backbones`,
`pretrained`, `text_classifiers`, `phases`, `transfer`...) is plain Keras 3 and runs on
any backend; `image_data`, `text_data`, `text_encoders`, `hub`, `export`, `hardware`
and `multi_worker` need TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "BACKBONES": "backbones", "BackboneSpec": "backbones",
    "WeightsUnavailableError": "backbones", "build_backbone": "backbones",
    "cut_backbone": "backbones", "get_backbone_spec": "backbones",
    "TrainingBudget": "comparison", "compare_with_scratch": "comparison",
    "report_against_scratch": "comparison", "reuse_depth_sweep": "comparison",
    "UnskilledSourceModelError": "develop", "develop_model": "develop",
    "develop_source_model": "develop", "reuse_model": "develop",
    "EmbeddingMatrix": "embeddings", "PretrainedEmbedding": "embeddings",
    "embedding_matrix": "embeddings",
    "evaluation_report": "evaluation", "image_evaluation_report": "evaluation",
    "multi_label_evaluation": "evaluation", "multi_label_report": "evaluation",
    "classification_loss": "losses",
    "choose_thresholds": "multi_label", "is_multi_label": "multi_label",
    "classification_head": "heads",
    "load_image_splits": "image_data", "image_dataset": "image_data",
    "extract_features": "phases", "fine_tune": "phases",
    "freeze_batch_normalization": "phases", "train_head": "phases",
    "unfreeze": "phases", "unfreeze_from": "phases",
    "BackbonePreprocessing": "preprocessing",
    "TransferModel": "pretrained", "pretrained_model": "pretrained",
    "Predictor": "predictor",
    "load_model": "saving", "read_labels": "saving", "save_model": "saving",
    "write_labels": "saving",
    "load_text_splits": "text_data",
    "TokenizedText": "tokenized_text", "tokenize_for_vectors": "tokenized_text",
    "ARCHITECTURES": "text_classifiers", "pretrained_text_classifier": "text_classifiers",
    "scratch_text_classifier": "text_classifiers", "text_head": "text_classifiers",
    "EncoderTransfer": "text_encoders", "pretrained_text_encoder": "text_encoders",
    "TransferPlan": "transfer", "TransferRun": "transfer", "run_transfer": "transfer",
    "TransferReport": "transfer_report", "summarize_curve": "transfer_report",
    "develop_word_vectors": "word2vec", "word_vector_source": "word2vec",
    "Candidate": "selection", "Selection": "selection", "SelectionBudget": "selection",
    "rank_cuts": "selection", "rank_sources": "selection",
    "BackboneChoice": "candidates", "image_candidates": "candidates",
    "parse_backbone": "candidates",
    "VectorFileError": "word_vectors", "load_word_vectors": "word_vectors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'templates' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"templates.{module}"), name)
    globals()[name] = value  # the next access is a plain attribute read
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
