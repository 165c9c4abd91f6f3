"""transfer-cookbook: Keras 3 templates for transfer learning.

The common case is one call:

    from templates import TransferPlan, pretrained_model, run_transfer
    run = run_transfer(pretrained_model("MobileNet", 2, alpha=0.25), train, validation,
                       TransferPlan(seed=1), checkpoints="runs/x/checkpoints")

The names below are the user-facing surface: every name a recipe or the README imports
comes from here. Each is imported from its module the first time it is used (PEP 562), so
``import templates`` loads neither TensorFlow-only parts nor gensim and pyarrow until
something needs them. The modules live in floors that import only from the floors below
(`data` < `models` < `reports` < `training` < `selection` < `export` < `cli`,
docs/design.md). Model building and training are plain Keras 3; `data.images`,
`data.texts`, `models.text_encoders`, `models.tfhub`, `export.formats` and
`training.multi_worker` need TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    # data
    "array_batches": "data.batches",
    "load_digits_by_task": "data.digits", "SOURCE_TASKS": "data.digits",
    "TARGET_DIGITS": "data.digits",
    "download_dataset": "data.downloads",
    "CookbookError": "data.errors",
    "write_json": "data.files",
    "image_dataset": "data.images", "image_batches_by_size": "data.images",
    "MAX_IMAGE_SIZE": "data.images", "DEFAULT_CACHE_MEMORY_GB": "data.decoded_images",
    "IMAGE_EXTENSIONS": "data.images", "load_image_splits": "data.images",
    "download_sst2": "data.texts", "load_text_splits": "data.texts",
    "count_cut_texts": "data.texts", "describe_cut_texts": "data.texts",
    "string_model": "models.tokenized_text",
    # models
    "BackboneChoice": "models.backbone_spelling",
    "parse_backbone": "models.backbone_spelling",
    "BACKBONES": "models.backbones",
    "build_backbone": "models.backbones", "cut_backbone": "models.backbones",
    "get_backbone_spec": "models.backbones", "block_cut_points": "models.backbones",
    "embedding_matrix": "models.embeddings",
    "PretrainedEmbedding": "models.embeddings",
    "image_augmentation": "models.augmentation", "flip_averaged": "models.flip_averaging",
    "freeze_batch_normalization": "models.freezing", "unfreeze_from": "models.freezing",
    "classification_head": "models.heads",
    "BackbonePreprocessing": "models.preprocessing",
    "pretrained_model": "models.pretrained",
    "pretrained_text_classifier": "models.text_classifiers",
    "scratch_text_classifier": "models.text_classifiers",
    "TextClassifierSettings": "models.text_classifiers",
    "text_classifier": "models.text_classifiers",
    "EncoderTransfer": "models.text_encoders",
    "pretrained_text_encoder": "models.text_encoders", "POOLINGS": "models.text_encoders",
    "tokenize_for_vectors": "models.tokenized_text",
    "TokenizedText": "models.tokenized_text",
    "TransferModel": "models.transfer_model", "unfreeze": "models.transfer_model",
    "head_on_features": "models.transfer_model",
    "load_word_vectors": "models.word_vectors",
    "nearest_class_mean_head": "models.nearest_class_mean",
    "imprint_class_means": "models.nearest_class_mean",
    "batch_predictor": "models.prediction", "frozen_predictor": "models.inference_graph",
    # training
    "TrainingState": "training.checkpoints",
    "quiet_retracing_warnings": "training.compilation",
    "develop_model": "training.develop", "develop_source_model": "training.develop",
    "reuse_model": "training.develop", "UnskilledSourceModelError": "training.develop",
    "require_tensorflow": "training.hardware",
    "finish_multi_worker": "training.workers", "is_chief": "training.workers",
    "learning_rate_multi_worker": "training.multi_worker",
    "local_predict": "training.workers", "task_index": "training.workers",
    "train_multi_worker": "training.multi_worker",
    "weights_digest": "training.workers",
    "extract_features": "training.phases", "fine_tune": "training.phases",
    "train_head": "training.phases", "head_training_features": "training.phases",
    "TransferPlan": "training.plan", "tensorboard_logs": "training.plan",
    "label_curve": "training.label_curve", "LabelCurve": "training.label_curve",
    "stratified_subset": "training.label_curve", "seeds_for": "training.label_curve",
    "scratch_point": "training.label_curve",
    "ContrastiveSettings": "training.contrastive", "contrastive_tune": "training.contrastive",
    "contrastive_pairs": "training.contrastive",
    "run_transfer": "training.run", "TransferRun": "training.run",
    "load_model": "training.saving", "read_labels": "training.saving",
    "save_model": "training.saving", "write_labels": "training.saving",
    "scheduled": "training.schedules", "SCHEDULES": "training.schedules",
    "develop_word_vectors": "training.word2vec",
    "WordVectorSettings": "training.word_vector_sources",
    "WordVectorSources": "training.word_vector_sources",
    # reports
    "image_candidates": "selection.candidates",
    "compare_with_scratch": "training.comparison",
    "reuse_depth_sweep": "training.comparison",
    "report_against_scratch": "training.comparison",
    "run_metadata": "reports.environment",
    "evaluation_report": "reports.evaluation", "evaluate_run": "reports.evaluation",
    "image_evaluation_report": "reports.evaluation",
    "scan_evaluation_report": "reports.evaluation",
    "flip_scores": "training.flip_scores",
    "Candidate": "selection.ranking", "rank_cuts": "selection.ranking",
    "rank_sources": "selection.ranking", "Selection": "selection.ranking",
    "SelectionBudget": "selection.ranking", "source_model_candidate": "selection.ranking",
    "select_source": "selection.ranking", "cut_candidates": "selection.ranking",
    "text_source_candidates": "selection.ranking", "ENCODER_PREFIX": "selection.ranking",
    "TransferReport": "reports.transfer_report",
    # export
    "write_model_outputs": "export.outputs",
    "Predictor": "export.predictor",
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
