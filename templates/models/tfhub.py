"""TF-Hub modules as Keras 3 layers that can be frozen or fine-tuned (TensorFlow only).

`hub.KerasLayer` is built on tf.keras (Keras 2) and fails inside Keras 3 models
(tensorflow/hub#903). `keras.layers.TFSMLayer` runs in Keras 3, but it tracks *copies*
of the SavedModel's variables while its function keeps reading the originals, so
training changes nothing the model computes. `HubLayer` loads the module with
`tensorflow_hub.load` (a tfhub.dev / Kaggle handle, or a local SavedModel folder) and
wraps each of the module's own variables in a Keras variable that *is* that variable,
so Keras optimisers update what the module reads, and Keras saving stores it.

    layer = HubLayer("https://tfhub.dev/google/nnlm-en-dim50/2", trainable=True)
    texts = keras.Input(shape=(), dtype="string")
    model = keras.Model(texts, keras.layers.Dense(2, activation="softmax")(layer(texts)))

Saving: `.keras` files store the handle and the (fine-tuned) weights; loading
rebuilds the module from the handle and assigns the saved weights. A SavedModel is a
TensorFlow graph that runs whatever ops it holds, so, like Keras's own `TFSMLayer`,
a model with a `HubLayer` only loads with ``safe_mode=False``.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import keras
import tensorflow as tf
from keras.src.saving import serialization_lib

from templates.data.errors import CookbookError
from templates.data.downloads import DownloadError


def load_hub_module(handle: str | os.PathLike):
    """Load a TF-Hub handle or a local SavedModel folder with `tensorflow_hub.load`.

    Raises:
        DownloadError: the handle could not be fetched (offline), naming the local
            alternative (a SavedModel folder, or ``TFHUB_CACHE_DIR``).
        FileNotFoundError: a local path that does not exist.
    """
    import tensorflow_hub as hub

    handle = os.fspath(handle)
    is_remote = handle.startswith(("http://", "https://", "gs://"))
    if not is_remote and not os.path.exists(handle):
        raise FileNotFoundError(f"TF-Hub module {handle!r}: no such SavedModel folder.")
    try:
        return hub.load(handle)
    except (OSError, ValueError, tf.errors.OpError) as error:
        if not is_remote:
            raise CookbookError(f"{handle}: not a loadable SavedModel ({error}).") from None
        cache = os.environ.get("TFHUB_CACHE_DIR", "the TF-Hub cache (TFHUB_CACHE_DIR)")
        raise DownloadError(
            f"Could not fetch the TF-Hub module {handle}: {error}\nWithout internet, "
            f"download it elsewhere and pass the extracted SavedModel folder as the "
            f"handle, or copy the cached module into {cache}."
        ) from None


@keras.saving.register_keras_serializable(package="transfer_cookbook")
class HubLayer(keras.layers.Layer):
    """A TF-Hub module (or any SavedModel with a callable) as a Keras 3 layer.

    Args:
        handle: A TF-Hub handle (URL) or a local SavedModel folder.
        trainable: Whether the module's trainable variables are trained (fine-tuning).
        signature: Call this named signature instead of the object itself (TF1-style
            hub modules); outputs are then a dict.
        output_key: Which output to return when the module returns a dict.
        arguments: Extra keyword arguments for every call of the module.
        inference_mode: Always call the module with ``training=False``, even while its
            weights train: its BatchNormalization statistics stay those it was
            released with (the care `templates.models.freezing.unfreeze_from` gives Keras
            backbones) and its dropout stays off.
        **kwargs: `keras.layers.Layer` arguments (``name``, ``dtype``).
    """

    def __init__(
        self,
        handle: str,
        trainable: bool = False,
        signature: str | None = None,
        output_key: str | None = None,
        arguments: dict[str, Any] | None = None,
        inference_mode: bool = False,
        **kwargs,
    ):
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError(
                "HubLayer runs TensorFlow SavedModels, so it needs the TensorFlow backend "
                f"(KERAS_BACKEND=tensorflow); this Keras uses {keras.backend.backend()!r}.")
        super().__init__(trainable=trainable, **kwargs)
        self.handle = os.fspath(handle)
        self.signature = signature
        self.output_key = output_key
        self.arguments = dict(arguments or {})
        self.inference_mode = bool(inference_mode)
        self._module = load_hub_module(self.handle)
        if signature is not None:
            signatures = getattr(self._module, "signatures", {})
            if signature not in signatures:
                raise CookbookError(
                    f"{self.handle} has no signature {signature!r}; it has "
                    f"{sorted(signatures)}.")
            self._function = signatures[signature]
        elif callable(self._module):
            self._function = self._module.__call__
        else:
            raise CookbookError(
                f"{self.handle} is not callable; pass one of its signatures "
                f"{sorted(getattr(self._module, 'signatures', {}))} as signature=.")
        self._accepts_training = _accepts_training(self._function)
        for variable in module_variables(self._module, self._function):
            self._track_variable(_share(variable, variable.trainable))
        self.built = True

    def call(self, inputs, training=None):
        kwargs = dict(self.arguments)
        if self._accepts_training and self.signature is None:
            kwargs["training"] = bool(training) and self.trainable and not self.inference_mode
        outputs = self._function(inputs, **kwargs)
        if isinstance(outputs, dict):
            if self.output_key is None:
                if len(outputs) != 1:
                    raise CookbookError(
                        f"{self.handle} returns several outputs {sorted(outputs)}; pick one "
                        "with output_key=.")
                return next(iter(outputs.values()))
            return outputs[self.output_key]
        return outputs

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(handle=self.handle, signature=self.signature,
                      output_key=self.output_key, arguments=self.arguments,
                      inference_mode=self.inference_mode)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None, safe_mode=None):
        safe = safe_mode if safe_mode is not None else serialization_lib.in_safe_mode()
        if safe is not False:
            raise CookbookError(
                f"This model holds the TF-Hub/SavedModel module {config.get('handle')!r}; "
                "a SavedModel is a TensorFlow graph that runs whatever ops it contains, so "
                "it is not loaded in safe mode. If you trust the module, load the model "
                "with safe_mode=False (templates.training.saving.load_model(path, safe_mode=False)).")
        return cls(**config)


TFHUB_PREFIX = "tfhub:"


def hub_image_backbone(handle: str | os.PathLike, image_size: int = 224) -> keras.Model:
    """A TF-Hub image feature-vector module as a backbone: ``(size, size, 3)`` images
    in 0..1 (the TF-Hub convention) to a feature vector.

    The module is one opaque layer: it cannot be cut at a block, fine-tuning unfreezes
    all of it, and it runs in inference mode (``inference_mode=True``) so its
    BatchNormalization statistics never drift.
    """
    inputs = keras.Input((int(image_size), int(image_size), 3), name="pixels")
    features = HubLayer(handle, trainable=True, inference_mode=True, name="hub_module")(inputs)
    if len(features.shape) != 2:
        raise CookbookError(f"TF-Hub module {os.fspath(handle)!r} returns shape "
                            f"{tuple(features.shape)}; an image feature-vector module returns "
                            "(batch, features).")
    return keras.Model(inputs, features, name="tfhub_backbone")


def module_variables(module, function) -> list[tf.Variable]:
    """The variables a module computes with, each once.

    Reusable SavedModels (the TF-Hub convention) list them as ``module.variables``;
    for other SavedModels they are collected from the call function's traces.
    """
    found = list(getattr(module, "variables", ()) or ())
    if not found:
        traces = list(getattr(function, "concrete_functions", ()) or ())
        if not traces and hasattr(function, "variables"):
            traces = [function]
        for trace in traces:
            found.extend(trace.variables)
    unique, seen = [], set()
    for variable in found:
        if id(variable) not in seen:
            seen.add(id(variable))
            unique.append(variable)
    return unique


def _share(variable: tf.Variable, trainable: bool) -> keras.Variable:
    """A Keras variable backed by ``variable`` itself (not a copy).

    Keras 3 copies a `tf.Variable` passed as an initializer; the module's functions
    would keep reading the original, and training would change nothing. The
    TensorFlow backend keeps the real storage in ``_value``, so pointing it at the
    module's variable makes reads, optimiser updates and weight loading all act on
    what the module computes with. (Tested in tests/test_hub.py.)
    """
    shared = keras.Variable(
        initializer=tf.zeros(variable.shape, variable.dtype), trainable=trainable,
        dtype=variable.dtype.name, name=variable.name.split(":")[0].replace("/", "_"))
    shared._value = variable
    return shared


def _accepts_training(function) -> bool:
    """Whether a restored function takes a ``training`` argument (reusable SavedModels)."""
    try:
        return "training" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
