"""Benchmark: where the bytes of a TFLite file go.

For each ``.tflite`` file given (or each one in a folder), reads the flatbuffer with
TensorFlow's own schema and splits its size into:

* ``weight_bytes``: the constant buffers (weights and biases, in their stored type);
* ``quantization_bytes``: each tensor's quantisation parameters, as the file stores
  them (a float32 scale and an int64 zero point per tensor, or per output channel for
  per-channel weights and their biases);
* ``name_bytes``: tensor names;
* ``other_bytes``: the rest (operators, shapes, signatures, metadata).

It explains why a full-integer file can be larger than a third of a float32 one on a
small model (docs/results.md, "Models for devices"). Prints one JSON object. Run:

    python -m benchmarks.tflite_sizes runs/cats/tflite
"""

from __future__ import annotations

import argparse
import json
import os


def size_breakdown(path: str | os.PathLike) -> dict[str, int]:
    """The byte counts of one ``.tflite`` file (see the module docstring)."""
    from tensorflow.lite.python import schema_py_generated as schema

    with open(path, "rb") as handle:
        content = handle.read()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    weights = sum(0 if buffer.data is None else len(buffer.data) for buffer in model.buffers)
    names = quantization = channels = 0
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            names += len(tensor.name or b"")
            parameters = tensor.quantization
            if parameters is None:
                continue
            for values, width in ((parameters.scale, 4), (parameters.zeroPoint, 8),
                                  (parameters.min, 4), (parameters.max, 4)):
                quantization += 0 if values is None else len(values) * width
            channels += 0 if parameters.scale is None else len(parameters.scale)
    return {"file_bytes": len(content), "weight_bytes": weights,
            "quantization_bytes": quantization, "quantized_channels": channels,
            "name_bytes": names,
            "other_bytes": len(content) - weights - quantization - names}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help=".tflite files or folders holding them")
    args = parser.parse_args(argv)
    files = []
    for path in args.paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, name) for name in os.listdir(path)
                            if name.endswith(".tflite"))
        else:
            files.append(path)
    if not files:
        parser.error(f"no .tflite files in {', '.join(args.paths)}")
    print(json.dumps({os.path.basename(path): size_breakdown(path) for path in files},
                     indent=2))


if __name__ == "__main__":
    main()
