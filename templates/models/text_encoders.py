"""Sentence encoders as the reused part: keras-hub text backbones and TF-Hub text modules.

    transfer = pretrained_text_encoder("bert_tiny_en_uncased", num_classes=2)
    transfer = pretrained_text_encoder("/path/to/preset_dir", 2, lora_rank=4)
    transfer = pretrained_text_encoder("tfhub:https://tfhub.dev/google/nnlm-en-dim50/2", 2)
    train = transfer.batches(texts, labels, batch_size=32, shuffle=True, seed=1)
    run = run_transfer(transfer, train, validation, TransferPlan(...))
    save_model(transfer.string_classifier(), "model.keras")   # raw strings in

The pretrained-model template for transformers (BERT, DistilBERT, RoBERTa, DeBERTa,
sentence transformers such as all-MiniLM-L6-v2... from keras-hub presets: a name
keras-hub downloads, an ``hf://`` handle, a Hugging Face folder its converters read, or a
folder written by ``Backbone.save_to_preset`` and ``preprocessor.save_to_preset``) and for TF-Hub
sentence-embedding modules (NNLM, Universal Sentence Encoder: a handle or a local
SavedModel folder, ``"tfhub:..."``). The result trains with the same phases as every
other template (`templates.training.run.run_transfer`):

1. the head (dropout and a dense softmax) learns on the encoder's pooled outputs
   (pooled as the model says: `TokenPooling`, `resolve_pooling`), computed once with the
   encoder frozen;
2. the encoder is unfrozen and everything trains at a lower rate, or, with
   ``lora_rank=R`` (keras-hub), only rank-R adapters on the attention's query and value
   projections train (``Backbone.enable_lora``): the released weights stay as they were.

The tokeniser runs once over the texts, before training, so the model trains on token
ids, each batch padded to its own longest text (`templates.data.batches.LengthBucketedBatches`).
On TensorFlow it is keras-hub's preprocessor, which `EncoderTransfer.string_classifier`
puts back in front for saving, so the saved model takes raw strings and loads in safe
mode. On JAX and PyTorch, where keras-hub's tokenizers (TensorFlow Text ops) cannot run,
it is the folder's ``tokenizer.json`` read by Hugging Face's ``tokenizers``
(`templates.data.tokenizer_file.TokenizerFile`): the saved model takes token ids and the
file travels beside it. A TF-Hub module reads strings itself and needs TensorFlow; a
model holding one loads with ``safe_mode=False`` only (`templates.models.tfhub`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.batches import LengthBucketedBatches, shuffle_each_epoch
from templates.data.multi_label import is_multi_label
from templates.data.texts import TextSplits, count_cut_texts
from templates.data.tokenizer_file import TOKENIZER_FILE, TokenizerFile
from templates.models.freezing import unfreeze_from
from templates.models.heads import classification_head
from templates.models.keras_hub_presets import PREFIX as KERAS_HUB_PREFIX
from templates.models.keras_hub_presets import import_keras_hub, load_from_preset
from templates.models.layers import iterate_layers

TFHUB_PREFIX = "tfhub:"  # templates.models.tfhub's (TensorFlow), kept here for JAX and torch


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class TextPipelineClassifier(keras.Model):
    """A classifier on token ids behind the preprocessor that makes them: raw strings in.

    keras-hub tokenizers get their vocabulary after the model is rebuilt from its config
    (as a saved asset), so they cannot sit inside a functional graph that is rebuilt by
    calling them; this model holds the preprocessor beside the classifier instead, as
    keras-hub's own tasks do, and saves and loads (safe mode) as one ``.keras`` file.

    Args:
        preprocessor: Strings to the classifier's inputs (a keras-hub preprocessor).
        classifier: The trained model on those inputs.
    """

    def __init__(self, preprocessor: keras.layers.Layer, classifier: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.preprocessor = preprocessor
        self.classifier = classifier
        self.built = True  # both parts are built
        import tensorflow as tf

        #: What `templates.export.formats.export_saved_model` serves: a batch of strings.
        self.serving_signature = [tf.TensorSpec((None,), tf.string, name="texts")]

    def call(self, texts, training=False):
        return self.classifier(self.preprocessor(texts), training=training)

    def get_config(self):
        return {**super().get_config(),
                "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
                "classifier": keras.saving.serialize_keras_object(self.classifier)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("preprocessor", "classifier"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects)
        return cls(**config)

    def build_from_config(self, config):
        # Both parts are built by their own configs; calling the preprocessor now would
        # find its vocabulary not yet loaded.
        self.built = True


class EncoderTransfer:
    """A sentence encoder (frozen) and a new head: a `templates.models.transfer_model.Transferable`.

    Attributes:
        backbone: The encoder: the model's inputs to one vector per text.
        head: Dropout and a softmax layer on that vector.
        feature_extractor: ``backbone`` (its outputs are cached for head training).
        model: Inputs to class probabilities: what trains.
        preprocessor: Strings to the model's inputs (keras-hub), or ``None`` (a TF-Hub
            module reads strings itself).
        encoder: The keras-hub backbone or the `templates.models.tfhub.HubLayer` inside.
        source: What was loaded (``"keras_hub:..."`` or ``"tfhub:..."``).
        lora_rank: Rank of the LoRA adapters fine-tuning trains (``None``: every weight).
        class_names: Class names in label order, or ``None``.
        pooling: How the token outputs become one vector (``"mean"``, ``"cls"``,
            ``"pooler"``; ``"module"`` for a TF-Hub module, which pools itself).
        pooling_choice: How ``pooling`` was chosen, for metrics.json: ``{"pooling",
            "normalize", "chosen_by"}`` (``"given"``, ``"sentence-transformers config"``,
            ``"validation"`` with each candidate's ``"validation_accuracy"``, or
            ``"default"``).
    """

    fine_tune_from = None  # the whole encoder (or its adapters)

    def __init__(self, backbone: keras.Model, head: keras.Model, encoder,
                 preprocessor: keras.layers.Layer | None, source: str,
                 lora_rank: int | None = None, class_names: Sequence[str] | None = None,
                 pooling_choice: dict | None = None):
        self.backbone, self.head, self.encoder = backbone, head, encoder
        self.preprocessor, self.source, self.lora_rank = preprocessor, source, lora_rank
        self.class_names = list(class_names) if class_names is not None else None
        self.pooling_choice = dict(pooling_choice or {"pooling": "module", "normalize": False,
                                                      "chosen_by": "module"})
        self.pooling = self.pooling_choice["pooling"]
        self.feature_extractor = backbone
        self.model = keras.Model(backbone.inputs, head(backbone.outputs[0]),
                                 name="text_encoder_classifier")

    def unfreeze(self, from_layer: str | int | None = None) -> int:
        """Make the encoder trainable for fine-tuning (`templates.training.phases.fine_tune` calls
        this); with ``lora_rank``, only its LoRA adapters. Returns the number of
        trainable weight tensors."""
        unfreeze_from(self.backbone, from_layer)
        if self.pooling in ("mean", "cls"):  # BERT's pooler is not read: leave it be
            for layer in iterate_layers(self.encoder):
                if layer.name == "pooled_dense":
                    layer.trainable = False
        if self.lora_rank:
            for variable in self.encoder.weights:
                variable.trainable = "lora_kernel" in variable.path
        return len(self.backbone.trainable_weights)

    def encode(self, texts: Sequence[str], batch_size: int = 256):
        """The model's inputs for ``texts`` (`encode_texts`)."""
        names = list(self.backbone.input) if isinstance(self.backbone.input, dict) else None
        return encode_texts(self.preprocessor, texts, names, batch_size)

    def batches(self, texts: Sequence[str], labels, batch_size: int = 32,
                shuffle: bool = False, seed: int | None = None):
        """Batches of ``(model inputs, labels)``; with ``shuffle`` and ``seed``, epoch
        ``e``'s order depends only on ``(seed, e)`` (`templates.data.batches`). A
        transformer's batches are each padded to their own longest text
        (`templates.data.batches.LengthBucketedBatches`); a TF-Hub module's are
        `tf.data` batches of strings."""
        labels = np.asarray(labels)
        if len(labels) != len(texts):
            raise CookbookError(f"{len(texts)} texts but {len(labels)} labels.")
        if self.preprocessor is not None:
            batches = LengthBucketedBatches(self.encode(texts), labels, batch_size, seed=seed,
                                            shuffle=shuffle)
            return (batches.as_tf_dataset() if keras.backend.backend() == "tensorflow"
                    else batches)
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((self.encode(texts), labels))
        if shuffle:
            dataset = shuffle_each_epoch(dataset, len(labels), seed)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def string_classifier(self) -> keras.Model:
        """The trained model taking raw strings (shape ``(batch,)``), for saving; on JAX
        and PyTorch the model on token ids (the tokeniser travels as `tokenizer_file`)."""
        if self.preprocessor is None or isinstance(self.preprocessor, TokenizerFile):
            return self.model
        return TextPipelineClassifier(self.preprocessor, self.model, name="text_classifier")

    @property
    def tokenizer_file(self) -> TokenizerFile | None:
        """The ``tokenizer.json`` tokeniser that must travel beside a token-id model
        (JAX and PyTorch), else ``None``."""
        return self.preprocessor if isinstance(self.preprocessor, TokenizerFile) else None

    def scratch_model(self, seed: int = 0) -> keras.Model:
        """The same architecture with the encoder's weights drawn at random, for
        `templates.training.comparison.report_against_scratch`: keras-hub's own initialisers
        (the preset loaded without weights); a TF-Hub module's variables redrawn from a
        normal distribution at each variable's own spread."""
        keras.utils.set_random_seed(seed)
        if self.source.startswith(TFHUB_PREFIX):
            backbone, encoder = hub_text_backbone(self.source[len(TFHUB_PREFIX):])
            rng = np.random.default_rng(seed)
            for variable in encoder.weights:
                value = keras.ops.convert_to_numpy(variable)
                spread = float(value.std()) or 0.05
                variable.assign(rng.normal(0.0, spread, value.shape).astype(value.dtype))
        else:
            preset = self.source[len(KERAS_HUB_PREFIX):]
            encoder = import_keras_hub().models.Backbone.from_preset(preset, load_weights=False)
            backbone = keras_hub_text_backbone(encoder, self.sequence_length, self.pooling,
                                               self.pooling_choice["normalize"])
        width = int(backbone.output_shape[-1])
        head = classification_head((width,), int(self.model.output_shape[-1]),
                                   dropout=self.head_dropout, name="scratch_head",
                                   multi_label=is_multi_label(self.head))
        backbone.trainable = True
        return keras.Model(backbone.inputs, head(backbone.outputs[0]),
                           name="text_encoder_classifier_scratch")

    @property
    def sequence_length(self) -> int | None:
        """Tokens per text (keras-hub), ``None`` for a TF-Hub module."""
        return None if self.preprocessor is None else int(self.preprocessor.sequence_length)

    def texts_cut(self, splits: TextSplits) -> dict[str, int] | None:
        """Texts of each split longer than `sequence_length` tokens
        (`templates.data.texts.count_cut_texts`); ``None`` for a TF-Hub module, which
        cuts (or not) inside itself."""
        if self.preprocessor is None:
            return None
        return count_cut_texts(splits, self.sequence_length,
                               functools.partial(token_lengths, self.preprocessor))

    @property
    def head_dropout(self) -> float:
        rates = [layer.rate for layer in self.head.layers
                 if isinstance(layer, keras.layers.Dropout)]
        return float(rates[0]) if rates else 0.0


POOLINGS = ("auto", "mean", "cls", "pooler")


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class TokenPooling(keras.layers.Layer):
    """One vector per text from a transformer's token outputs, inside the saved model so
    that every reloaded copy pools the same way.

    Args:
        mode: ``"mean"`` (the average over real tokens: padding is left out, as
            sentence-transformers pools) or ``"cls"`` (the first token's output).
        normalize: Scale each vector to unit length (sentence-transformers' ``Normalize``
            module).
    """

    def __init__(self, mode: str = "mean", normalize: bool = False, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("mean", "cls"):
            raise CookbookError(f"TokenPooling mode must be 'mean' or 'cls'; got {mode!r}.")
        self.mode, self.normalize = mode, bool(normalize)

    def call(self, sequence, padding_mask):
        if self.mode == "cls":
            pooled = sequence[:, 0, :]
        else:
            mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, sequence.dtype), -1)
            total = keras.ops.sum(sequence * mask, axis=1)
            pooled = total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1e-9)
        if self.normalize:
            pooled = pooled / keras.ops.maximum(
                keras.ops.sqrt(keras.ops.sum(pooled * pooled, axis=-1, keepdims=True)), 1e-12)
        return pooled

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "normalize": self.normalize}


def encode_texts(preprocessor, texts: Sequence[str], names: Sequence[str] | None = None,
                 batch_size: int = 256):
    """A text encoder's inputs for ``texts``: ``{name: (texts, length) array}`` from
    keras-hub's preprocessor (TensorFlow) or a `templates.data.tokenizer_file.TokenizerFile`
    (every backend), kept to ``names`` (the backbone's inputs); or the strings themselves
    when ``preprocessor`` is ``None`` (a TF-Hub module reads them)."""
    texts = np.asarray([str(text) for text in texts], dtype=object)
    if preprocessor is None:
        return texts
    if isinstance(preprocessor, TokenizerFile):
        packed = preprocessor(list(texts))
        return {name: packed[name] for name in (names or packed)}
    import tensorflow as tf

    parts = [preprocessor(tf.constant(texts[start:start + batch_size]))
             for start in range(0, len(texts), batch_size)]
    return {key: np.concatenate([keras.ops.convert_to_numpy(part[key]) for part in parts])
            for key in parts[0]} if parts else {}


def pooled_output(outputs, padding_mask=None, pooling: str = "pooler",
                  normalize: bool = False):
    """One vector per text from a keras-hub backbone's outputs.

    ``pooling``: ``"pooler"``, BERT's ``pooled_output`` (a dense layer on ``[CLS]``
    trained for next-sentence prediction, where the backbone has one; else ``"cls"``);
    ``"cls"``, the first token of the sequence output (the ``[CLS]`` / ``<s>`` token
    DistilBERT, RoBERTa and DeBERTa classify from); ``"mean"``, the average over the real
    tokens (`TokenPooling`, needs ``padding_mask``), as sentence-transformers models are
    trained to be read. ``normalize``: unit-length vectors (mean and cls only).
    """
    if pooling == "pooler" and isinstance(outputs, dict) and "pooled_output" in outputs:
        return outputs["pooled_output"]
    sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
    if pooling == "mean" and padding_mask is None:
        raise CookbookError("Mean pooling needs the padding mask (which tokens are real).")
    return TokenPooling("mean" if pooling == "mean" else "cls", normalize,
                        name=f"{pooling}_pooling")(sequence, padding_mask)


def keras_hub_text_backbone(encoder: keras.Model, sequence_length: int,
                            pooling: str = "pooler", normalize: bool = False) -> keras.Model:
    """``encoder`` (a keras-hub text backbone) from its packed inputs, of any length up
    to ``sequence_length`` (each batch is padded to its own longest text), to one vector
    per text (`pooled_output` with ``pooling``)."""
    inputs = {name: keras.Input(shape=(None,), dtype=spec.dtype, name=name)
              for name, spec in encoder.input.items()}
    vectors = pooled_output(encoder(inputs), inputs.get("padding_mask"), pooling, normalize)
    return keras.Model(inputs, vectors, name="text_encoder")


def sentence_transformers_pooling(preset: str) -> tuple[str, bool] | None:
    """The pooling a sentence-transformers folder says it is read with: ``(mode,
    normalize)`` from its ``modules.json`` (a ``Pooling`` module, and a ``Normalize``
    module after it) and that module's ``config.json`` (``pooling_mode_mean_tokens``,
    ``pooling_mode_cls_token``); ``None`` for other presets. ``hf://`` handles are read
    through keras-hub's file cache (downloaded with the weights)."""
    def read(name):
        if os.path.isdir(preset):
            path = os.path.join(preset, name)
            if not os.path.isfile(path):
                return None
        elif preset.startswith("hf://"):
            try:
                from keras_hub.src.utils.preset_utils import get_file

                path = get_file(preset, name)
            except Exception:  # no such file in the repository, or offline
                return None
        else:
            return None
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    modules = read("modules.json")
    if not isinstance(modules, list):
        return None
    types = {str(module.get("type", "")).rsplit(".", 1)[-1]: module for module in modules
             if isinstance(module, dict)}
    if "Pooling" not in types:
        return None
    folder = str(types["Pooling"].get("path") or "1_Pooling")
    config = read(f"{folder}/config.json") or {}
    if config.get("pooling_mode_cls_token"):
        mode = "cls"
    elif config.get("pooling_mode_mean_tokens", True):
        mode = "mean"
    else:
        raise CookbookError(f"{preset}: the sentence-transformers pooling in {folder}/config.json "
                            f"({config}) is neither mean nor [CLS]; pass --pooling mean or cls.")
    return mode, "Normalize" in types


def hub_text_backbone(handle: str | os.PathLike):
    """A TF-Hub text-embedding module (a batch of strings to a batch of vectors) as a
    backbone, and the `templates.models.tfhub.HubLayer` inside it (TensorFlow)."""
    from templates.models.tfhub import HubLayer

    texts = keras.Input(shape=(), dtype="string", name="texts")
    layer = HubLayer(handle, trainable=True, name="hub_module")
    vectors = layer(texts)
    if len(vectors.shape) != 2:
        raise CookbookError(f"TF-Hub module {os.fspath(handle)!r} returns shape "
                            f"{tuple(vectors.shape)}; a text-embedding module returns "
                            "(batch, features).")
    return keras.Model(texts, vectors, name="text_encoder"), layer


def load_text_preset(preset: str, load_weights: bool = True):
    """The backbone and preprocessor of a keras-hub text preset (a name keras-hub
    downloads, or a local preset folder).

    Raises:
        WeightsUnavailableError: a name that cannot be downloaded (offline), with the
            sentence that a local preset folder works.
        ValueError: a folder that is missing or is not a keras-hub text preset.
    """
    keras_hub = import_keras_hub()
    on_tensorflow = keras.backend.backend() == "tensorflow"

    def load(name):
        backbone = keras_hub.models.Backbone.from_preset(name, load_weights=load_weights)
        if not on_tensorflow:
            return backbone, TokenizerFile(preset_file(name, TOKENIZER_FILE))
        try:
            preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(name)
        except Exception as error:
            if "vocab.txt" not in str(error) or not os.path.isdir(name):
                raise
            preprocessor = wordpiece_preprocessor(name, error)
        return backbone, follow_tokenizer_json(preprocessor, name)

    return load_from_preset(preset, load, "text", "--preset ")


def follow_tokenizer_json(preprocessor, preset: str):
    """Make keras-hub's WordPiece tokenizer strip accents where the folder's
    ``tokenizer.json`` says the model's own does (Hugging Face's ``BertNormalizer``
    strips them when it lower-cases, unless told not to): keras-hub's BERT converter
    leaves them, so "naïve" became ``[UNK]`` instead of "naive"."""
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "strip_accents"):
        return preprocessor
    try:
        with open(preset_file(preset, TOKENIZER_FILE), encoding="utf-8") as handle:
            normalizer = json.load(handle).get("normalizer") or {}
    except Exception:  # no tokenizer.json (a keras-hub preset): keep keras-hub's settings
        return preprocessor
    if normalizer.get("type") == "BertNormalizer":
        strip = normalizer.get("strip_accents")
        tokenizer.strip_accents = bool(normalizer.get("lowercase") if strip is None else strip)
    return preprocessor


def wordpiece_preprocessor(folder: str, missing: Exception):
    """keras-hub's BERT preprocessor for a Hugging Face folder that carries its WordPiece
    vocabulary only inside ``tokenizer.json`` (keras-hub's converter reads ``vocab.txt``):
    the tokens in id order and the lower-casing, taken from that file."""
    import keras_hub

    path = os.path.join(folder, TOKENIZER_FILE)
    if not os.path.isfile(path):
        raise CookbookError(f"{folder} has neither vocab.txt nor {TOKENIZER_FILE}: keras-hub "
                            f"cannot build its tokenizer ({missing}).") from None
    with open(path, encoding="utf-8") as handle:
        spec = json.load(handle)
    model = spec.get("model") or {}
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise CookbookError(f"{path}: no vocab.txt beside it, and its tokenizer is "
                            f"{model.get('type')!r}, not a WordPiece vocabulary keras-hub's "
                            "BERT tokenizer can take; on JAX or PyTorch it is read as it is.")
    vocabulary = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    lowercase = bool((spec.get("normalizer") or {}).get("lowercase", False))
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=lowercase)
    return keras_hub.models.BertTextClassifierPreprocessor(tokenizer)


def preset_file(preset: str, name: str) -> str:
    """The local path of file ``name`` of a preset folder or ``hf://`` handle (fetched
    through keras-hub's cache)."""
    if os.path.isdir(preset):
        return os.path.join(preset, name)
    from keras_hub.src.utils.preset_utils import get_file

    return get_file(preset, name)


def enable_lora(encoder: keras.Model, rank: int) -> int:
    """Add rank-``rank`` LoRA adapters to ``encoder``'s default targets (the attention's
    query and value projections, ``encoder.default_lora_layer_names()``).

    Unlike ``Backbone.enable_lora``, every trainable flag is left as it was: that method
    freezes the layers one by one, and Keras's ``trainable`` setter later skips layers
    already frozen, so freezing the whole encoder no longer reached the adapters (they
    trained with the head). `EncoderTransfer.unfreeze` makes only the adapters
    trainable. Returns the number of layers adapted.
    """
    names = set(encoder.default_lora_layer_names())
    # The attention's dense layers sit inside custom layers that no public walk reaches;
    # keras-hub's own `Backbone.enable_lora` walks `_flatten_layers` the same way.
    targets = [layer for layer in encoder._flatten_layers(include_self=False)
               if layer.name in names and hasattr(layer, "enable_lora")]
    if not targets:
        raise CookbookError(f"{encoder.name} has no layers LoRA can adapt (looked for "
                            f"{sorted(names)}).")
    for layer in targets:
        layer.enable_lora(rank)
    return len(targets)


def token_lengths(preprocessor, texts: Sequence[str]) -> np.ndarray:
    """Tokens of each text as ``preprocessor`` (keras-hub's, or a `TokenizerFile`) packs
    it, special tokens included, before any cut to its sequence length."""
    texts = [str(text) for text in texts]
    if isinstance(preprocessor, TokenizerFile):
        return preprocessor.lengths(texts)
    import tensorflow as tf

    # The tokeniser's pieces, plus what the packer adds around them ([CLS] and [SEP]
    # for BERT): the real tokens of an empty text.
    special = int(np.sum(keras.ops.convert_to_numpy(
        preprocessor(tf.constant([""]))["padding_mask"])))
    batches = (preprocessor.tokenizer(tf.constant(texts[start:start + 256]))
               for start in range(0, len(texts), 256))
    return np.asarray([len(pieces) for batch in batches for pieces in batch],
                      dtype="int64") + special


def fitted_sequence_length(preprocessor, texts: Sequence[str], percentile: float = 99,
                           multiple: int = 8) -> int:
    """Tokens per text that fit ``percentile`` % of ``texts`` whole (special tokens
    included), rounded up to a multiple of ``multiple`` and at most the preprocessor's
    own length: shorter sequences make every step cheaper (attention is quadratic)."""
    longest = int(preprocessor.sequence_length)
    if not len(texts):
        return longest
    needed = float(np.percentile(token_lengths(preprocessor, texts[:5000]), percentile))
    return int(min(longest, max(multiple, multiple * np.ceil(needed / multiple))))


def pretrained_text_encoder(
    source: str,
    num_classes: int,
    sequence_length: int | None = None,
    fit_texts: Sequence[str] | None = None,
    lora_rank: int | None = None,
    dropout: float = 0.1,
    class_names: Sequence[str] | None = None,
    load_weights: bool = True,
    multi_label: bool = False,
    pooling: str | dict = "auto",
    pooling_data: tuple | None = None,
) -> EncoderTransfer:
    """A text classifier reusing a pretrained sentence encoder, frozen, with a new head.

    Args:
        source: A keras-hub text preset (``"bert_tiny_en_uncased"``, a preset folder,
            optionally written ``"keras_hub:..."``) or a TF-Hub text-embedding module
            (``"tfhub:HANDLE_OR_SAVEDMODEL_DIR"``).
        num_classes: Number of classes (at least 2).
        sequence_length: Tokens per text (keras-hub); ``None``: fitted to
            ``fit_texts`` (`fitted_sequence_length`), or the preset's own.
        fit_texts: Training texts to fit the sequence length to.
        lora_rank: Fine-tune rank-``lora_rank`` LoRA adapters on the attention's query
            and value projections instead of every weight (keras-hub only).
        dropout: The head's dropout rate.
        class_names: Class names in label order.
        load_weights: ``False`` builds a keras-hub encoder with random weights.
        multi_label: One sigmoid per class instead of a softmax (`templates.data.multi_label`).
        pooling: How the token outputs become one vector (`POOLINGS`): ``"mean"`` over
            the real tokens, ``"cls"`` (the first token), ``"pooler"`` (BERT's pooler
            layer), or ``"auto"``: what a sentence-transformers folder's
            ``modules.json`` and ``1_Pooling/config.json`` say (normalised where it has
            a ``Normalize`` module), else the candidate that scores best on the
            validation data of ``pooling_data`` (`choose_pooling`), else ``"pooler"``
            (``"cls"`` for encoders without one). The pooling is a layer of the saved
            model, so a reloaded model pools the same way. An earlier encoder's
            `EncoderTransfer.pooling_choice` (a dict) builds the same pooling again,
            unit length included, without choosing anew.
        pooling_data: ``(train_texts, train_labels, validation_texts,
            validation_labels)`` for ``pooling="auto"`` to choose on.

    Returns:
        An `EncoderTransfer`, the encoder frozen.
    """
    chosen = pooling if isinstance(pooling, dict) else None  # an earlier encoder's choice
    if chosen is not None:
        pooling = "auto" if chosen.get("pooling") == "module" else chosen.get("pooling")
    if pooling not in POOLINGS:
        raise CookbookError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}.")
    if int(num_classes) < 2:
        raise CookbookError(f"num_classes must be at least 2; got {num_classes}.")
    if class_names is not None and len(class_names) != int(num_classes):
        raise CookbookError(f"class_names has {len(class_names)} names but "
                            f"num_classes={num_classes}.")
    if lora_rank is not None and int(lora_rank) < 1:
        raise CookbookError(f"lora_rank must be a positive integer; got {lora_rank}.")
    if source.startswith(TFHUB_PREFIX) and keras.backend.backend() != "tensorflow":
        raise NotImplementedError(
            "TF-Hub text modules need the TensorFlow backend; this Keras uses "
            f"{keras.backend.backend()!r} (keras-hub presets run on every backend).")
    if source.startswith(TFHUB_PREFIX):
        if lora_rank:
            raise CookbookError("lora_rank applies to keras-hub transformers; a TF-Hub module "
                                "is fine-tuned whole.")
        if pooling != "auto":
            raise CookbookError("pooling applies to keras-hub transformers; a TF-Hub module "
                                "returns one vector per text itself.")
        backbone, encoder = hub_text_backbone(source[len(TFHUB_PREFIX):])
        preprocessor, choice = None, None
    else:
        preset = source[len(KERAS_HUB_PREFIX):] if source.startswith(KERAS_HUB_PREFIX) else source
        encoder, preprocessor = load_text_preset(preset.strip(), load_weights=load_weights)
        if sequence_length is None and fit_texts is not None:
            sequence_length = fitted_sequence_length(preprocessor, fit_texts)
        if sequence_length is not None:
            preprocessor.sequence_length = int(sequence_length)
            if isinstance(preprocessor, TokenizerFile):
                preprocessor.tokenizer.enable_truncation(int(sequence_length))
        if lora_rank:
            enable_lora(encoder, int(lora_rank))
        choice = (dict(chosen) if chosen is not None else
                  resolve_pooling(pooling, preset.strip(), encoder, preprocessor, pooling_data))
        backbone = keras_hub_text_backbone(encoder, int(preprocessor.sequence_length),
                                           choice["pooling"], choice["normalize"])
        source = KERAS_HUB_PREFIX + preset.strip()
    backbone.trainable = False
    head = classification_head((int(backbone.output_shape[-1]),), int(num_classes),
                               dropout=dropout, name="head", multi_label=multi_label)
    return EncoderTransfer(backbone, head, encoder, preprocessor, source,
                           lora_rank=int(lora_rank) if lora_rank else None,
                           class_names=class_names, pooling_choice=choice)


def has_pooler(encoder: keras.Model) -> bool:
    """Whether a keras-hub text backbone has a pooler (BERT's ``pooled_output``)."""
    outputs = encoder.output
    return isinstance(outputs, dict) and "pooled_output" in outputs


def resolve_pooling(pooling: str, preset: str, encoder: keras.Model, preprocessor,
                    pooling_data: tuple | None = None) -> dict:
    """What ``pooling="auto"`` means for this encoder (see `pretrained_text_encoder`),
    as ``{"pooling", "normalize", "chosen_by", ...}``."""
    if pooling == "pooler" and not has_pooler(encoder):
        raise CookbookError(f"{preset}: this encoder has no pooler; use --pooling mean or cls.")
    if pooling != "auto":
        return {"pooling": pooling, "normalize": False, "chosen_by": "given"}
    configured = sentence_transformers_pooling(preset)
    if configured is not None:
        mode, normalize = configured
        return {"pooling": mode, "normalize": normalize,
                "chosen_by": "sentence-transformers config"}
    if pooling_data is not None and np.asarray(pooling_data[1]).ndim == 1:
        return choose_pooling(encoder, preprocessor, *pooling_data)
    return {"pooling": "pooler" if has_pooler(encoder) else "cls", "normalize": False,
            "chosen_by": "default"}


def choose_pooling(encoder: keras.Model, preprocessor, train_texts: Sequence[str], train_labels,
                   validation_texts: Sequence[str], validation_labels,
                   most_examples: int = 2000) -> dict:
    """Choose the pooling of an encoder without a pooling of its own on validation data.

    The frozen encoder reads at most ``most_examples`` training and validation texts
    once; each candidate (``"mean"``, ``"cls"``, and ``"pooler"`` where the encoder has
    one) pools those outputs, a logistic regression (scikit-learn, standardised
    features) learns on the training vectors, and the candidate with the best validation
    accuracy wins (ties: the earlier candidate). Returns ``{"pooling", "normalize":
    False, "chosen_by": "validation", "validation_accuracy": {candidate: accuracy}}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    candidates = ["mean", "cls"] + (["pooler"] if has_pooler(encoder) else [])
    inputs = {name: keras.Input(shape=(None,), dtype=spec.dtype, name=name)
              for name, spec in encoder.input.items()}
    outputs = encoder(inputs)
    pooled = {candidate: pooled_output(outputs, inputs.get("padding_mask"), candidate)
              for candidate in candidates}
    reader = keras.Model(inputs, pooled, name="pooling_candidates")

    def vectors(texts):
        texts = list(texts[:most_examples])
        batches = LengthBucketedBatches(encode_texts(preprocessor, texts, list(inputs)),
                                        np.zeros(len(texts), "int32"), 64, shuffle=False)
        parts = [reader.predict_on_batch(batches[index][0]) for index in range(len(batches))]
        return {candidate: np.concatenate([keras.ops.convert_to_numpy(part[candidate])
                                           for part in parts]) for candidate in candidates}

    train, validation = vectors(train_texts), vectors(validation_texts)
    train_labels = np.asarray(train_labels)[:most_examples]
    validation_labels = np.asarray(validation_labels)[:most_examples]
    scores = {}
    for candidate in candidates:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        probe.fit(train[candidate], train_labels)
        scores[candidate] = round(float(probe.score(validation[candidate],
                                                    validation_labels)), 4)
    best = max(candidates, key=lambda candidate: (scores[candidate],
                                                  -candidates.index(candidate)))
    print(f"Pooling chosen on validation: {best} (logistic regression on frozen outputs: "
          + ", ".join(f"{name} {score:.3f}" for name, score in scores.items()) + ").")
    return {"pooling": best, "normalize": False, "chosen_by": "validation",
            "validation_accuracy": scores}
