"""Benchmark: the real models' speed on this CPU, beside the fastest way measured and the
arithmetic bound.

EfficientNet-Lite0 (photos/s at 224 px) and all-MiniLM-L6-v2 (sentences/s on SST-2's
validation sentences, each batch padded to its longest sentence) are timed four ways,
each in its own process so every Keras backend starts clean:

* ``forward``: ``predict_on_batch`` on batches of 32 (the frozen extraction's step);
* ``recipe_extraction``: the recipes' own path (`templates.training.phases.extract_features`
  over the batches the recipes build; for Lite0 a pass of 2,016 photos, long enough for
  TensorFlow to extract through `templates.models.inference_graph` (ONNX Runtime with the
  ``onnx`` extra; ``recipe_extraction_tensorflow_graph``: the frozen TensorFlow graph, as
  without it), and ``recipe_extraction_first_pass`` the first such pass, the export
  included);
* ``fine_tune_step``: ``train_on_batch`` with the whole reused part trainable
  (BatchNormalization frozen, as the recipes fine-tune);

on TensorFlow (as the recipes run by default), TensorFlow with XLA (``jit_compile``) and
JAX (jitted); and the forward pass alone in ONNX Runtime (``onnxruntime``: the same
networks exported by Keras's own ``model.export(format="onnx")``, which needs the
``tf2onnx`` and ``onnxruntime`` packages; the largest difference from Keras's outputs is
reported beside it). The arithmetic bound is the multiply-adds per example (Lite0's published
407 M at 224 px; MiniLM's from its configuration at the sentences' mean length) against
the cores' peak: ``cores x GHz x FLOPs per cycle`` (``--flops-per-cycle``, 32 for a Zen 4
core: two 256-bit FMA pipes). Prints one JSON object: every figure, and the ratios of the
recipes' extraction to the fastest forward measured and to the bound, all from one run.

    python -m benchmarks.real_model_speed --presets ../shared/presets --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAYS = {"tensorflow": ("tensorflow", False), "tensorflow_xla": ("tensorflow", True),
        "jax": ("jax", False), "onnxruntime": ("tensorflow", False)}
ONNX_TYPES = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(bool)": "bool"}


def per_second(step, examples: int, repeats: int) -> float:
    step()  # compile / trace, and the first call's allocations
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return round(examples * repeats / (time.perf_counter() - started), 2)


# EfficientNet-Lite0's multiply-adds per 224 px photo, as its release reports them
# (../shared/presets/efficientnet_lite0/SOURCE.md): keras-hub's backbone takes any size,
# so its layers carry no spatial shapes to count from.
LITE0_MACS = 407_000_000


def bert_macs(encoder, tokens: float) -> int:
    """Multiply-adds of one text of ``tokens`` tokens through a BERT encoder."""
    hidden, layers = encoder.hidden_dim, encoder.num_layers
    per_token = layers * (4 * hidden * hidden + 2 * hidden * encoder.intermediate_dim
                          + 2 * tokens * hidden)
    return int(per_token * tokens)


def onnx_runtime(model, sample, folder: str):
    """``model`` exported to ONNX by Keras and loaded in ONNX Runtime: a function that
    runs one batch (an array, or a dict of arrays named as the model's inputs) and
    returns the first output."""
    import numpy as np
    import onnxruntime

    model.predict_on_batch(sample)  # Keras's exporter needs a model that was called
    path = os.path.join(folder, f"{model.name}.onnx")
    model.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()

    def run(batch):
        named = batch if isinstance(batch, dict) else {inputs[0].name: batch}
        return session.run(None, {entry.name: np.asarray(named[entry.name]).astype(
            ONNX_TYPES[entry.type]) for entry in inputs})[0]
    return run


def largest_difference(first, second) -> float:
    import numpy as np
    return float(np.max(np.abs(np.asarray(first) - np.asarray(second))))


def onnx_lite0(args, transfer, images) -> dict:
    """Lite0's forward pass in ONNX Runtime (an inference runtime: no training step)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        lite0 = onnx_runtime(transfer.feature_extractor, images, folder)
        return {"lite0_largest_difference": largest_difference(
                    lite0(images), transfer.feature_extractor.predict_on_batch(images)),
                "lite0_forward": per_second(lambda: lite0(images), len(images), args.repeats)}


def onnx_minilm(args, encoder, batches) -> dict:
    """MiniLM's forward pass in ONNX Runtime."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        minilm = onnx_runtime(encoder.backbone, batches[0][0], folder)
        return {"minilm_largest_difference": max(
                    largest_difference(minilm(batches[index][0]),
                                       encoder.backbone.predict_on_batch(batches[index][0]))
                    for index in range(len(batches))),
                "minilm_forward": per_second(
                    lambda: [minilm(batches[index][0]) for index in range(len(batches))],
                    sum(len(batches[index][1]) for index in range(len(batches))),
                    max(1, args.repeats // 4))}


def keras_lite0(args, transfer, images, labels, xla: bool) -> dict:
    """Lite0's forward pass, the recipes' extraction and a fine-tuning step in Keras."""
    import keras
    import numpy as np

    from templates.data.batches import array_batches
    from templates.models import inference_graph
    from templates.models.inference_graph import FREEZE_FOR_AT_LEAST
    from templates.models.transfer_model import unfreeze
    from templates.training.phases import extract_features

    batch, results = len(images), {}
    extractor = transfer.feature_extractor
    if xla:
        extractor.jit_compile = True
    results["lite0_forward"] = per_second(lambda: extractor.predict_on_batch(images), batch,
                                          args.repeats)
    # On TensorFlow a pass long enough for the recipes to freeze the graph
    # (templates.models.inference_graph.FREEZE_FOR_AT_LEAST photos); its first pass,
    # freezing included, is timed apart.
    passes = -(-FREEZE_FOR_AT_LEAST // batch) if keras.backend.backend() == "tensorflow" else 4
    many = np.concatenate([images] * passes)
    data = array_batches(many, np.arange(len(many)) % 2, batch, shuffle=False)
    started = time.perf_counter()
    extract_features(extractor, data)
    results["lite0_recipe_extraction_first_pass"] = round(
        len(many) / (time.perf_counter() - started), 2)
    ways = {"lite0_recipe_extraction": None}  # what the recipes use (batch_predictor)
    if keras.backend.backend() == "tensorflow":
        # Beside it, in turns (the machine is shared): the frozen TensorFlow graph (the
        # recipes' way without the onnx extra) and predict_on_batch over the same batches.
        ways.update(lite0_recipe_extraction_tensorflow_graph=inference_graph._frozen_graph(
            extractor), lite0_recipe_extraction_predict_on_batch=extractor.predict_on_batch)
    rates = {name: [] for name in ways}
    for _ in range(3):
        for name, predict in ways.items():
            started = time.perf_counter()
            extract_features(extractor, data, predict=predict)
            rates[name].append(len(many) / (time.perf_counter() - started))
    results.update({name: round(float(np.median(values)), 2) for name, values in rates.items()})
    unfreeze(transfer, None)
    transfer.model.compile(optimizer=keras.optimizers.Adam(1e-5),
                           loss="sparse_categorical_crossentropy", jit_compile=xla)
    results["lite0_fine_tune_step"] = per_second(
        lambda: transfer.model.train_on_batch(images, labels), batch, max(2, args.repeats // 2))
    return results


def child(args) -> dict:
    """The measurements of one way (run in a fresh process)."""
    import keras
    import numpy as np

    from templates.data.batches import LengthBucketedBatches
    from templates.data.texts import load_text_splits
    from templates.models.pretrained import pretrained_model
    from templates.models.text_encoders import pretrained_text_encoder
    from templates.models.transfer_model import unfreeze
    from templates.training.phases import extract_features

    xla = WAYS[args.child][1]
    results = {"way": args.child, "backend": keras.backend.backend()}
    batch = 32
    # EfficientNet-Lite0 at 224 px, and all-MiniLM-L6-v2 on SST-2's validation sentences.
    transfer = pretrained_model(f"keras_hub:{os.path.join(args.presets, 'efficientnet_lite0')}",
                                2)
    images = np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
    labels = np.arange(batch) % 2
    results["lite0_macs"] = LITE0_MACS
    if args.child == "onnxruntime":
        results.update(onnx_lite0(args, transfer, images))
    else:
        results.update(keras_lite0(args, transfer, images, labels, xla))
    # MiniLM is loaded once Lite0 is timed, so each model is timed with only itself loaded.
    data_dir = os.path.join(args.data, "text", "sst2")
    splits = load_text_splits(os.path.join(data_dir, "stsa.binary.train"),
                              os.path.join(data_dir, "stsa.binary.dev"),
                              os.path.join(data_dir, "stsa.binary.test"), seed=1,
                              train_size=batch * 4)
    encoder = pretrained_text_encoder(os.path.join(args.presets, "all-MiniLM-L6-v2"), 2,
                                      fit_texts=splits.train.texts)
    texts = splits.validation.texts[:batch * 8]
    batches = LengthBucketedBatches(encoder.encode(texts),
                                    splits.labels["validation"][:len(texts)], batch, seed=1)
    tokens = float(np.mean([batches.lengths]))
    results.update(minilm_mean_tokens=round(tokens, 1),
                   minilm_macs=bert_macs(encoder.encoder, tokens))
    if args.child == "onnxruntime":
        return {**results, **onnx_minilm(args, encoder, batches)}

    backbone = encoder.backbone
    if xla:
        backbone.jit_compile = True
    first = batches[0][0]
    for index in range(len(batches)):  # every padded width compiled before timing
        backbone.predict_on_batch(batches[index][0])
    results["minilm_forward"] = per_second(
        lambda: [backbone.predict_on_batch(batches[index][0]) for index in range(len(batches))],
        len(texts), max(1, args.repeats // 4))
    results["minilm_recipe_extraction"] = per_second(
        lambda: extract_features(encoder.feature_extractor, batches), len(texts),
        max(1, args.repeats // 4))
    unfreeze(encoder, None)
    encoder.model.compile(optimizer=keras.optimizers.Adam(1e-5),
                          loss="sparse_categorical_crossentropy", jit_compile=xla)
    labels = batches[0][1]
    results["minilm_fine_tune_step"] = per_second(
        lambda: encoder.model.train_on_batch(first, labels), batch, max(2, args.repeats // 2))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_model_speed")
    parser.add_argument("--presets", default=os.path.join(REPOSITORY, "..", "shared", "presets"))
    parser.add_argument("--data", default=os.path.join(REPOSITORY, "..", "shared", "data"))
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS))
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--flops-per-cycle", type=float, default=32.0,
                        help="Peak fp32 FLOPs per cycle and core (Zen 4: 32).")
    parser.add_argument("--child", choices=list(WAYS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    ways = {}
    for way in args.ways:
        env = dict(os.environ, KERAS_BACKEND=WAYS[way][0], TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=REPOSITORY)
        result = subprocess.run([sys.executable, "-m", "benchmarks.real_model_speed",
                                 "--child", way, "--presets", args.presets, "--data", args.data,
                                 "--repeats", str(args.repeats)], env=env, capture_output=True,
                                text=True, cwd=REPOSITORY)
        if result.returncode != 0:
            ways[way] = {"error": result.stderr[-1500:]}
            continue
        ways[way] = json.loads(result.stdout.strip().splitlines()[-1])
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        megahertz = max(float(line.split(":")[1]) for line in handle
                        if line.startswith("cpu MHz"))
    cores = os.cpu_count() or 1
    peak = cores * megahertz * 1e6 * args.flops_per_cycle
    report = {"date": time.strftime("%Y-%m-%d"), "cores": cores, "megahertz": megahertz,
              "peak_gflops": round(peak / 1e9, 1), "ways": ways, "ratios": {}}
    measured = [result for result in ways.values() if "error" not in result]
    for model in ("lite0", "minilm"):
        if not measured:
            break
        macs = measured[0][f"{model}_macs"]
        bound = peak / (2 * macs)
        fastest = max(result[f"{model}_forward"] for result in measured)
        recipe = ways.get("tensorflow", {}).get(f"{model}_recipe_extraction")
        report["ratios"][model] = {
            "arithmetic_bound_per_second": round(bound, 1),
            "fastest_forward_per_second": fastest,
            "fastest_way": max(measured, key=lambda result: result[f"{model}_forward"])["way"],
            "recipe_extraction_per_second": recipe,
            "fastest_over_recipe": round(fastest / recipe, 2) if recipe else None,
            "bound_over_recipe": round(bound / recipe, 1) if recipe else None,
            "fine_tune_step_over_forward_tensorflow": round(
                ways["tensorflow"][f"{model}_forward"]
                / ways["tensorflow"][f"{model}_fine_tune_step"], 2)
            if "tensorflow" in ways and "error" not in ways["tensorflow"] else None}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
