"""Classify new images or texts with a recipe's saved output, nothing to rebuild.

A recipe's output folder holds ``model.keras`` (preprocessing inside: image
normalisation for the backbone, or the text vectoriser with its vocabulary) and
``labels.txt``. A text model trained off TensorFlow takes token ids instead of strings;
its folder carries ``vocabulary.txt``, and the texts are tokenised with it in NumPy
(`templates.data.vocabulary.Vocabulary`: the same ids the TensorFlow vectoriser gives). `Predictor` loads both, in Keras's safe mode, and takes image paths or
raw strings:

    predictor = Predictor("runs/cats_vs_dogs")
    predictor.predict(["photo.jpg"])   # [Prediction(label="dogs", confidence=0.97, ...)]
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence

import keras
import numpy as np

from templates.data.errors import CookbookError
from templates.data.multi_label import THRESHOLDS_FILE
from templates.data.tokenization import standard_token_counts
from templates.data.tokenizer_file import TOKENIZER_FILE, TokenizerFile
from templates.data.vocabulary import VOCABULARY_FILE, Vocabulary
from templates.models.layers import iterate_layers
from templates.training.saving import load_model, read_labels


@dataclasses.dataclass
class Prediction:
    """One input's result: the top class, its probability, and every class's.

    For a multi-label model, ``labels`` holds every label whose probability reaches its
    threshold (``{label: probability}``, most probable first), ``label`` joins them with
    ``|`` (empty when there is none) and ``confidence`` is the highest probability.
    An input that cannot be read (an empty or corrupt image) has ``problem`` set, an
    empty label and no probabilities; the other inputs are classified all the same.
    """

    input: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    labels: dict[str, float] | None = None
    problem: str | None = None  # why the input could not be classified (then no label)
    cut_at: int | None = None  # a text longer than the model reads: the tokens it read


class Predictor:
    """A saved recipe model and its labels, ready to classify.

    Args:
        model_dir: A recipe output folder (``model.keras`` + ``labels.txt``), or the
            path of a ``.keras`` file with ``labels.txt`` beside it.
        safe_mode: Keras safe mode when loading (refuses embedded Python code).
        batch_size: Inputs per forward pass.

    Attributes:
        kind: ``"image"`` (4-D float input) or ``"text"`` (string input).
        class_names: Names in label order, from ``labels.txt``.
        image_size: ``(height, width)`` the model takes, for image models.
    """

    def __init__(self, model_dir: str | os.PathLike, safe_mode: bool = True,
                 batch_size: int = 32):
        self.model_dir = os.fspath(model_dir)
        self.safe_mode = safe_mode
        self.batch_size = batch_size
        if os.path.isdir(self.model_dir):
            model_path = os.path.join(self.model_dir, "model.keras")
            folder = self.model_dir
        else:
            model_path, folder = self.model_dir, os.path.dirname(self.model_dir)
        labels_path = os.path.join(folder, "labels.txt")
        thresholds_path = os.path.join(folder, THRESHOLDS_FILE)
        if not os.path.isfile(model_path):
            raise CookbookError(f"No model at {model_path!r}: pass a recipe output folder "
                                "(holding model.keras and labels.txt) or a .keras file.")
        if not os.path.isfile(labels_path):
            raise CookbookError(f"No labels file at {labels_path!r}: the class names must "
                                "travel with the model (recipes write labels.txt).")
        self.model = load_model(model_path, safe_mode=safe_mode)
        self.class_names = read_labels(labels_path)
        #: Per-label decision thresholds of a multi-label model (``thresholds.json``
        #: beside it, chosen on validation data), else ``None``.
        self.thresholds = None
        if os.path.isfile(thresholds_path):
            with open(thresholds_path, encoding="utf-8") as handle:
                saved = json.load(handle)
            missing = [name for name in self.class_names if name not in saved]
            if missing:
                raise CookbookError(f"{thresholds_path!r} has no threshold for {missing}.")
            self.thresholds = [float(saved[name]) for name in self.class_names]
        outputs, dtype, shape = _signature(self.model)
        #: The `TokenizerFile` of a transformer on token ids (``tokenizer.json``), else
        #: ``None``.
        self.tokenizer = None
        tokenizer_path = os.path.join(folder, TOKENIZER_FILE)
        names = [getattr(tensor, "name", "") for tensor in getattr(self.model, "inputs", [])]
        if "token_ids" in names and os.path.isfile(tokenizer_path):
            self.tokenizer = TokenizerFile(tokenizer_path)
            self.input_names = names
        if outputs != len(self.class_names):
            raise CookbookError(f"{labels_path!r} names {len(self.class_names)} classes but the "
                                f"model predicts {outputs}.")
        #: Text models take ``(batch, 1)`` strings (a vectoriser) or ``(batch,)`` (a
        #: keras-hub tokenizer, a TF-Hub module).
        self.text_rank = len(shape)
        #: The `Vocabulary` of a token-id text model (``vocabulary.txt``), else ``None``.
        self.vocabulary = None
        vocabulary_path = os.path.join(folder, VOCABULARY_FILE)
        if self.tokenizer is not None:
            self.kind, self.image_size = "text", None
        elif "int" in str(dtype) and len(shape) == 2 and os.path.isfile(vocabulary_path):
            self.vocabulary = Vocabulary.load(vocabulary_path, sequence_length=shape[1])
            self.kind, self.image_size = "text", None
        elif "string" in str(dtype):
            self.kind, self.image_size = "text", None
        elif len(shape) == 4:
            self.kind = "image"
            self.image_size = tuple(int(side) for side in shape[1:3])
        else:
            raise CookbookError(f"{model_path!r} takes {shape} {dtype} "
                                "inputs; Predictor handles image and text models.")
        #: ``(sequence_length, lengths)`` of a text model whose tokeniser can be read
        #: (``lengths`` counts each text's tokens before the cut), else ``None``.
        self.text_cut = self._text_cut() if self.kind == "text" else None

    def _text_cut(self) -> tuple[int, Callable[[Sequence[str]], Sequence[int]]] | None:
        if self.tokenizer is not None:
            return self.tokenizer.sequence_length, self.tokenizer.lengths
        if self.vocabulary is not None:
            return self.vocabulary.sequence_length, standard_token_counts
        for layer in (self.model, *iterate_layers(self.model)):
            if isinstance(layer, keras.layers.TextVectorization):  # the GloVe recipe's
                length = layer.get_config().get("output_sequence_length")
                return (int(length), standard_token_counts) if length else None
            preprocessor = getattr(layer, "preprocessor", None)  # a keras-hub pipeline
            if preprocessor is not None and hasattr(preprocessor, "sequence_length"):
                from templates.models.text_encoders import token_lengths

                return (int(preprocessor.sequence_length),
                        functools.partial(token_lengths, preprocessor))
        return None  # a TF-Hub module cuts (or not) inside itself

    def _batch(self, items: Sequence[str]) -> np.ndarray:
        if self.tokenizer is not None:  # padded to the batch's longest text
            packed = self.tokenizer([str(item) for item in items])
            width = max(1, int(packed["padding_mask"].sum(axis=1).max()))
            return {name: packed[name][:, :width] for name in self.input_names}
        if self.vocabulary is not None:
            return self.vocabulary([str(item) for item in items])
        if self.kind == "text":
            texts = np.array([str(item) for item in items], dtype=object)
            return texts if self.text_rank == 1 else texts[:, None]
        from templates.data.decoded_images import load_image

        return np.stack([load_image(os.fspath(path), self.image_size).astype("float32")
                         for path in items])

    def problems(self, items: Sequence[str]) -> list[str | None]:
        """Why each input cannot be classified (an image that is empty, truncated or not
        an image), or ``None``; texts always can."""
        if self.kind != "image":
            return [None] * len(items)
        from templates.data.decoded_images import check_image

        return [check_image(os.fspath(path)) for path in items]

    def predict_probabilities(self, items: Sequence[str]) -> np.ndarray:
        """Class probabilities, one row per image path or text (every one readable:
        see `problems`)."""
        items = list(items)
        if not items:
            return np.zeros((0, len(self.class_names)), dtype="float32")
        rows = []
        for start in range(0, len(items), self.batch_size):
            batch = self._batch(items[start:start + self.batch_size])
            rows.append(np.asarray(self.model.predict_on_batch(batch)))
        return np.concatenate(rows)

    def predict(self, items: Sequence[str]) -> list[Prediction]:
        """The top class (multi-label: every label over its threshold) and all
        probabilities for each image path or text; an unreadable input gets a
        `Prediction` whose ``problem`` says why, and the others are still classified. A
        text longer than the model reads has ``cut_at``: the tokens it was read to."""
        items = list(items)
        problems = self.problems(items)
        readable = [item for item, problem in zip(items, problems) if problem is None]
        rows = iter(self.predict_probabilities(readable))
        cut = iter([None] * len(readable))
        if self.text_cut is not None and readable:  # a cut text is said, never silent
            length, lengths = self.text_cut
            cut = iter([length if count > length else None
                        for count in np.asarray(lengths(readable))])
        results = []
        for item, problem in zip(items, problems):
            if problem is not None:
                results.append(Prediction(str(item), "", 0.0, {}, problem=problem))
                continue
            row, cut_at = next(rows), next(cut)
            best = int(np.argmax(row))
            every = {name: float(value) for name, value in zip(self.class_names, row)}
            if self.thresholds is None:
                results.append(Prediction(str(item), self.class_names[best], float(row[best]),
                                          every, cut_at=cut_at))
                continue
            chosen = {self.class_names[index]: float(row[index])
                      for index in np.argsort(-row, kind="stable")
                      if row[index] >= self.thresholds[index]}
            results.append(Prediction(str(item), "|".join(chosen), float(row[best]), every,
                                      labels=chosen, cut_at=cut_at))
        return results


def _signature(model) -> tuple[int, str, tuple]:
    """``(classes, input dtype, input shape)`` of a saved model: a functional graph, or
    a `templates.models.text_encoders.TextPipelineClassifier` (strings into a preprocessor)."""
    if not getattr(model, "inputs", None) and hasattr(model, "classifier"):
        return int(model.classifier.output_shape[-1]), "string", (None,)
    spec = model.inputs[0]
    return int(model.output_shape[-1]), str(spec.dtype), tuple(spec.shape)
