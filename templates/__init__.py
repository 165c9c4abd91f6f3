"""transfer-cookbook: Keras 3 templates for transfer learning.

The common case is one call:

    from templates import TransferPlan, pretrained_model, run_transfer
    run = run_transfer(pretrained_model("MobileNet", 2, alpha=0.25), train, validation,
                       TransferPlan(seed=1), checkpoints="runs/x/checkpoints")

The names below are the user-facing surface: every name a recipe or the README imports
comes from here. Each is imported from its module the first time it is used (PEP 562), so
``import templates`` loads neither TensorFlow-only parts nor gensim and pyarrow until
something needs them. The modules live in floors that import only from the floors below
(`data` < `models` < `training` < `reports` < `export` < `cli`, docs/design.md). Model
building and training are plain Keras 3; `data.images`, `data.texts`,
`models.text_encoders`, `models.tfhub`, `export.formats`, `training.hardware` and
`training.multi_worker` need TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "BACKBONES": "models.backbones", "BackboneSpec": "models.backbones",
    "WeightsUnavailableError": "models.backbones", "build_backbone": "models.backbones",
    "cut_backbone": "models.backbones", "get_backbone_spec": "models.backbones",
    "TrainingBudget": "reports.comparison", "compare_with_scratch": "reports.comparison",
    "report_against_scratch": "reports.comparison", "reuse_depth_sweep": "reports.comparison",
    "UnskilledSourceModelError": "training.develop", "develop_model": "training.develop",
    "develop_source_model": "training.develop", "reuse_model": "training.develop",
    "EmbeddingMatrix": "models.embeddings", "PretrainedEmbedding": "models.embeddings",
    "embedding_matrix": "models.embeddings",
    "evaluation_report": "reports.evaluation", "image_evaluation_report": "reports.evaluation",
    "multi_label_evaluation": "reports.evaluation", "multi_label_report": "reports.evaluation",
    "classification_loss": "training.losses",
    "choose_thresholds": "data.multi_label", "is_multi_label": "data.multi_label",
    "classification_head": "models.heads",
    "load_image_splits": "data.images", "image_dataset": "data.images",
    "extract_features": "training.phases", "fine_tune": "training.phases",
    "freeze_batch_normalization": "models.freezing", "train_head": "training.phases",
    "unfreeze": "models.transfer_model", "unfreeze_from": "models.freezing",
    "BackbonePreprocessing": "models.preprocessing",
    "TransferModel": "models.transfer_model", "pretrained_model": "models.pretrained",
    "Predictor": "export.predictor",
    "load_model": "training.saving", "read_labels": "training.saving", "save_model": "training.saving",
    "write_labels": "training.saving",
    "load_text_splits": "data.texts",
    "TokenizedText": "models.tokenized_text", "tokenize_for_vectors": "models.tokenized_text",
    "ARCHITECTURES": "models.text_classifiers", "pretrained_text_classifier": "models.text_classifiers",
    "scratch_text_classifier": "models.text_classifiers", "text_head": "models.text_classifiers",
    "EncoderTransfer": "models.text_encoders", "pretrained_text_encoder": "models.text_encoders",
    "TransferPlan": "training.plan", "TransferRun": "training.run", "run_transfer": "training.run",
    "TransferReport": "reports.transfer_report", "summarize_curve": "reports.transfer_report",
    "develop_word_vectors": "training.word2vec", "word_vector_source": "training.word2vec",
    "Candidate": "reports.selection", "Selection": "reports.selection", "SelectionBudget": "reports.selection",
    "rank_cuts": "reports.selection", "rank_sources": "reports.selection",
    "BackboneChoice": "models.backbone_spelling", "image_candidates": "reports.candidates",
    "parse_backbone": "models.backbone_spelling",
    "download_dataset": "data.downloads", "image_batches_by_size": "data.images",
    "flip_averaged": "models.flip_averaging", "flip_scores": "reports.flip_scores",
    "run_metadata": "reports.environment", "write_model_outputs": "export.outputs",
    "image_augmentation": "models.augmentation", "TrainingState": "training.checkpoints",
    "download_sst2": "data.texts", "string_model": "data.texts",
    "SOURCE_TASKS": "data.digits", "TARGET_DIGITS": "data.digits",
    "load_digits_by_task": "data.digits", "array_batches": "data.batches",
    "scan_evaluation_report": "reports.evaluation",
    "source_model_candidate": "reports.selection",
    "is_chief": "training.multi_worker", "learning_rate_multi_worker": "training.multi_worker",
    "local_predict": "training.multi_worker", "task_index": "training.multi_worker",
    "train_multi_worker": "training.multi_worker", "weights_digest": "training.multi_worker",
    "scheduled": "training.schedules", "SCHEDULES": "training.schedules", "write_json": "data.files",
    "IMAGE_EXTENSIONS": "data.images",
    "VectorFileError": "models.word_vectors", "load_word_vectors": "models.word_vectors",
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
