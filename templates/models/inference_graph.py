"""A long inference pass of an image network through ONNX Runtime, or through its
frozen, optimised TensorFlow graph.

On TensorFlow, ``predict_on_batch`` runs a network with its weights as variables, so
TensorFlow's graph optimiser (grappler) cannot fold a BatchNormalization into the
convolution before it: every one stays a multiply and an add over the whole feature
map. An inference runtime folds them, fuses each convolution with its activation and
picks its own kernels. Here, for a pass long enough to pay for it:

* **ONNX Runtime**, where the ``onnx`` extra is installed (tf2onnx and onnxruntime; in
  the test extra): the model exported by Keras's own ``model.export(format="onnx")``.
  EfficientNet-Lite0 extracts about 1.9 times faster than ``predict_on_batch`` on 2
  CPU cores (docs/benchmarks.md); exporting takes a few seconds (about 7 s, from the
  benchmark's first pass).
* Else **the frozen TensorFlow graph**: the weights made constants, so grappler folds
  what it can, and two rewrites here do the rest: a depthwise convolution's
  BatchNormalization scale goes into its filter (grappler folds it into plain
  convolutions only), and an add of a per-channel constant becomes a ``BiasAdd``, which
  TensorFlow fuses with the convolution and its activation. Lite0: about 1.3 times
  faster; freezing takes a few seconds.

Outputs stay within about 3e-5 of ``predict_on_batch`` for Lite0's features.

    predict = frozen_predictor(feature_extractor)   # None where it does not apply
    features = predict(images)

A pass with fewer than `FREEZE_FOR_AT_LEAST` examples predicts as usual, unless the
model's graph is already built; a graph is kept for the model and rebuilt only when its
weights change (fine-tuning). It applies to a model with one image input (height,
width, channels) and one output, on TensorFlow, outside a distribution strategy, with
at most `WEIGHTS_BYTES_AT_MOST` of weights (a graph is a protocol buffer, at most 2 GB);
elsewhere the caller predicts as usual.
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from collections.abc import Callable

import keras
import numpy as np

WEIGHTS_BYTES_AT_MOST = 512 * 2**20
# The frozen graph's outputs against predict_on_batch's, on the first batch: a larger
# difference than this (relative to the outputs' scale) means the rewrite is wrong.
TOLERANCE = 1e-3
# Building costs a few seconds (exporting Lite0 to ONNX: about 7 s on 2 cores) and saves
# about 7 ms a Lite0 photo (docs/benchmarks.md): a pass over fewer photos than this
# predicts as usual, unless the model's graph is already built. Set by that break-even
# (about 1,000 photos for Lite0), with a margin for smaller networks; not tuned further.
FREEZE_FOR_AT_LEAST = 2_000

_graphs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def applies_to(model: keras.Model) -> bool:
    """Whether `frozen_predictor` can run ``model``: TensorFlow, no distribution
    strategy, one input of rank 4, one output, weights of at most `WEIGHTS_BYTES_AT_MOST`."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    if tf.distribute.has_strategy() or getattr(model, "distribute_strategy", None) not in (
            None, tf.distribute.get_strategy()):
        return False
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or len(inputs) != 1 or len(inputs[0].shape) != 4:
        return False
    weight_bytes = sum(np.prod(weight.shape) * np.dtype(weight.dtype).itemsize
                       for weight in model.weights)
    return bool(outputs) and len(outputs) == 1 and weight_bytes <= WEIGHTS_BYTES_AT_MOST


def frozen_predictor(model: keras.Model, batches: int | None = None):
    """A function returning ``model``'s inference outputs (a NumPy array) for one batch,
    through ONNX Runtime where installed, else its frozen, optimised TensorFlow graph;
    ``None`` where neither applies (`applies_to`).

    Args:
        batches: How many batches the pass has. With fewer than `FREEZE_FOR_AT_LEAST`
            examples in all (counted from the first batch), the pass predicts with
            ``predict_on_batch`` unless the model's graph is built already; ``None``:
            build it whatever the size.

    The graph is built on the first batch and kept (for as long as the model lives)
    until the model's weights change; that batch is checked against
    ``predict_on_batch``. If the check fails, a warning gives the difference and
    ``predict_on_batch`` is used instead. A model ONNX Runtime cannot take goes to the
    frozen graph, with a warning; one TensorFlow cannot freeze either is predicted with
    ``predict_on_batch``.
    """
    if not applies_to(model):
        return None
    chosen = []

    def predict(inputs):
        kept = chosen[0] if chosen else None
        if kept is not None and kept.checked:
            return kept.graph(inputs)
        expected = np.asarray(model.predict_on_batch(inputs))
        if not chosen:  # the first batch (Keras exports to ONNX only a model that was called)
            kept = _kept_graph(model, batches is None
                               or batches * len(inputs) >= FREEZE_FOR_AT_LEAST)
            chosen.append(kept)
        if kept is None or kept.graph is None:
            return expected
        frozen = kept.graph(inputs)
        difference = float(np.max(np.abs(frozen - expected))) if expected.size else 0.0
        scale = 1.0 + float(np.max(np.abs(expected))) if expected.size else 1.0
        if difference > TOLERANCE * scale:
            warnings.warn(f"{model.name} run through ONNX Runtime or its frozen graph "
                          f"differs from the model by "
                          f"{difference:.3g} (outputs up to {scale - 1:.3g}); predicting "
                          "with predict_on_batch instead.", stacklevel=2)
            kept.graph = None
            return expected
        kept.checked = True
        return frozen

    return predict


def _kept_graph(model: keras.Model, build: bool):
    """The kept graph of ``model``'s current weights; else a new one if ``build``, else
    ``None``."""
    weights = model.get_weights()
    kept = _graphs.get(model)
    if kept is not None and _same(kept.weights, weights):
        return kept
    if not build:
        return None
    kept = _graphs[model] = _Kept(weights, _graph_or_none(model))
    return kept


@dataclasses.dataclass
class _Kept:
    """A model's frozen graph and the weights it was frozen from (never the model: the
    cache's values must not keep its keys alive)."""

    weights: list
    graph: Callable | None  # None: predict_on_batch (not freezable, or failed the check)
    checked: bool = False


def _graph_or_none(model: keras.Model):
    """ONNX Runtime's session where it is installed and takes the model, else the
    frozen TensorFlow graph, else ``None``."""
    import tensorflow as tf

    if _onnx_runtime_installed():
        try:
            return _onnx_session(model)
        except Exception as error:  # tf2onnx fails in many ways on what it cannot convert
            warnings.warn(f"ONNX Runtime could not take {model.name} ({type(error).__name__}: "
                          f"{str(error)[:200]}); extracting with TensorFlow.", stacklevel=3)
    try:
        return _frozen_graph(model)
    except (ValueError, tf.errors.InvalidArgumentError):
        # TensorFlow cannot freeze every graph (a TF-Hub SavedModel's stateful
        # operations, say): those are predicted as usual.
        return None


def _onnx_runtime_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None
               for name in ("onnxruntime", "tf2onnx"))


def _onnx_session(model: keras.Model):
    """A function running ``model`` in ONNX Runtime, exported by Keras's own
    ``model.export(format="onnx")`` (through tf2onnx), returning a NumPy array."""
    import os
    import tempfile

    import onnxruntime

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf2onnx's own deprecation warnings
        path = os.path.join(folder, "model.onnx")
        model.export(path, format="onnx", verbose=False)
        options = onnxruntime.SessionOptions()
        # Between two batches TensorFlow works (the input pipeline): ONNX Runtime's
        # threads spinning meanwhile fought it for the cores (seen in one-off timings of
        # Lite0 on 2 cores, not a benchmark: about a third slower spinning).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name, dtype = session.get_inputs()[0].name, model.inputs[0].dtype
    return lambda inputs: session.run(None, {name: np.asarray(inputs, dtype)})[0]


def _same(first: list, second: list) -> bool:
    return len(first) == len(second) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, second))


def optimised_graph_def(model: keras.Model):
    """``model``'s inference (``training=False``) as a frozen GraphDef, optimised by
    grappler and by this module's two rewrites.

    Returns:
        ``(graph_def, input_name, output_name)``: the tensors to feed and fetch.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)
    from tensorflow.python.grappler import tf_optimizer

    spec = model.inputs[0]
    function = tf.function(lambda images: model(images, training=False))
    concrete = function.get_concrete_function(
        tf.TensorSpec((None, *spec.shape[1:]), spec.dtype))
    frozen = convert_variables_to_constants_v2(concrete)
    input_name, output_name = frozen.inputs[0].name, frozen.outputs[0].name
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
        meta_graph = tf.compat.v1.train.export_meta_graph(graph=graph)
    meta_graph.collection_def["train_op"].node_list.value.append(output_name)
    graph_def = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta_graph)
    _fold_depthwise_scales(graph_def)
    _adds_to_bias_adds(graph_def)
    return graph_def, input_name, output_name


def _frozen_graph(model: keras.Model):
    """A function running `optimised_graph_def` on a batch, returning a NumPy array."""
    import tensorflow as tf

    graph_def, input_name, output_name = optimised_graph_def(model)

    def load():
        tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(load, [])
    pruned = wrapped.prune(wrapped.graph.get_tensor_by_name(input_name),
                           wrapped.graph.get_tensor_by_name(output_name))
    dtype = model.inputs[0].dtype
    return lambda inputs: pruned(tf.convert_to_tensor(inputs, dtype)).numpy()


class _Nodes:
    """A GraphDef's nodes by name, its constants' values and each node's readers."""

    def __init__(self, graph_def):
        self.by_name = {node.name: node for node in graph_def.node}
        self.readers: dict[str, list] = {}
        for node in graph_def.node:
            for name in node.input:
                self.readers.setdefault(_node_name(name), []).append(node)

    def node(self, name: str):
        return self.by_name.get(_node_name(name))

    def constant(self, name: str):
        import tensorflow as tf

        node = self.node(name)
        if node is None or node.op != "Const":
            return None
        return tf.make_ndarray(node.attr["value"].tensor)

    def only_reader(self, name: str, reader) -> bool:
        return [node.name for node in self.readers.get(_node_name(name), [])] == [reader.name]

    def set_constant(self, name: str, value: np.ndarray) -> None:
        """A new constant value, where no other node reads the old one."""
        import tensorflow as tf

        self.node(name).attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))


def _node_name(name: str) -> str:
    return name.lstrip("^").split(":")[0]


def _first_output(name: str) -> bool:
    return not name.startswith("^") and name.split(":")[1:] in ([], ["0"])


def _channels_last(node) -> bool:
    return "data_format" not in node.attr or node.attr["data_format"].s == b"NHWC"


def _fold_depthwise_scales(graph_def) -> None:
    """``Mul(DepthwiseConv2dNative(x, F), s)`` -> ``DepthwiseConv2dNative(x, F * s)``
    for a constant filter ``F`` and a per-output-channel constant ``s``, each read only
    there (the output channel ``c * multiplier + m`` comes from filter ``[:, :, c, m]``)."""
    nodes = _Nodes(graph_def)
    for node in graph_def.node:
        if node.op != "Mul" or len(node.input) != 2:
            continue
        for convolution_name, scale_name in (node.input, node.input[::-1]):
            convolution, scale = nodes.node(convolution_name), nodes.constant(scale_name)
            if (convolution is None or convolution.op != "DepthwiseConv2dNative"
                    or scale is None or not _first_output(convolution_name)
                    or not _channels_last(convolution)):
                continue
            kernel = nodes.constant(convolution.input[1])
            if (kernel is None or kernel.ndim != 4 or scale.size != kernel.shape[2] * kernel.shape[3]
                    or scale.size != scale.shape[-1]
                    or not nodes.only_reader(convolution.name, node)
                    or not nodes.only_reader(convolution.input[1], convolution)):
                continue
            nodes.set_constant(convolution.input[1], (kernel * scale.reshape(
                kernel.shape[2], kernel.shape[3])).astype(kernel.dtype))
            del node.input[:]
            node.input.append(convolution.name)
            node.op = "Identity"
            for attribute in [name for name in node.attr if name != "T"]:
                del node.attr[attribute]
            break


def _adds_to_bias_adds(graph_def) -> None:
    """``AddV2(x, b)`` -> ``BiasAdd(x, b)`` where ``x`` is a convolution's output and
    ``b`` a constant of one value per channel (shape ``(1, 1, 1, C)`` or ``(C,)``),
    read only there: TensorFlow fuses a convolution, its ``BiasAdd`` and activation."""
    nodes = _Nodes(graph_def)
    producers = {"Conv2D", "DepthwiseConv2dNative"}
    for node in graph_def.node:
        if node.op not in ("AddV2", "Add") or len(node.input) != 2:
            continue
        if nodes.constant(node.input[1]) is None and nodes.constant(node.input[0]) is not None:
            node.input[0], node.input[1] = node.input[1], node.input[0]
        source, bias = nodes.node(node.input[0]), nodes.constant(node.input[1])
        while source is not None and source.op == "Identity":  # a folded depthwise scale
            source = nodes.node(source.input[0])
        if (source is None or source.op not in producers or not _channels_last(source)
                or bias is None or bias.ndim == 0
                or bias.size != bias.shape[-1] or not nodes.only_reader(node.input[1], node)):
            continue
        kernel = nodes.constant(source.input[1])
        channels = (None if kernel is None else kernel.shape[3] if source.op == "Conv2D"
                    else kernel.shape[2] * kernel.shape[3])
        if channels != bias.size:
            continue
        nodes.set_constant(node.input[1], bias.reshape(-1))
        node.op = "BiasAdd"
        node.attr["data_format"].s = b"NHWC"
