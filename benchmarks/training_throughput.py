"""Training and inference throughput of a registry backbone: float32 vs mixed precision,
and `fit`-style Keras training vs a minimal hand-written loop. Prints JSON.

    python -m benchmarks.training_throughput --backbone MobileNetV2 --image-size 224
    KERAS_BACKEND=jax python -m benchmarks.training_throughput      # where only JAX is

Images per second are measured in steady state: ``--warmup`` steps (compilation, memory
allocation) are run and discarded, then ``--steps`` steps are timed. The whole model
trains (every layer unfrozen, BatchNormalization frozen as in fine-tuning). The
hand-written loop applies the same model, loss and Adam optimiser through the backend's
own primitives (`tf.GradientTape` under TensorFlow, `jax.value_and_grad` + `jax.jit`
over ``stateless_call`` under JAX), so the difference is Keras's training machinery.
Uses random weights and random pixels: throughput does not depend on either.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import keras
import numpy as np

from templates.models.freezing import unfreeze_from
from templates.models.pretrained import pretrained_model
from templates.training.compilation import compile_classifier


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="MobileNetV2")
    parser.add_argument("--alpha", type=float, default=None)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precisions", default="float32,mixed",
                        help="Comma-separated: float32, mixed (float16 on GPU, bfloat16 "
                             "elsewhere), mixed_float16, mixed_bfloat16.")
    parser.add_argument("--skip-manual-loop", action="store_true")
    return parser.parse_args(argv)


def _device() -> str:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].platform
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return "cpu"


def _build(args, policy: str):
    keras.mixed_precision.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    transfer = pretrained_model(args.backbone, num_classes=10, weights=None,
                                image_size=args.image_size, alpha=args.alpha)
    unfreeze_from(transfer.backbone, None)
    compile_classifier(transfer.model, 1e-4)
    return transfer.model


def _time(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - started


def _manual_loop_step(model, images, labels):
    """One hand-written training step function for the current backend."""
    backend = keras.backend.backend()
    loss_function = keras.losses.SparseCategoricalCrossentropy()
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    if backend == "tensorflow":
        import tensorflow as tf

        # XLA exactly when Keras's own train step uses it, so only the machinery differs.
        @tf.function(jit_compile=bool(model.jit_compile))
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_function(y, model(x, training=True))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss

        return lambda: float(step(images, labels))
    if backend == "jax":
        import jax

        def compute_loss(trainable, non_trainable, x, y):
            outputs, non_trainable = model.stateless_call(trainable, non_trainable, x,
                                                          training=True)
            return loss_function(y, outputs), non_trainable

        gradient_function = jax.value_and_grad(compute_loss, has_aux=True)

        @jax.jit
        def train_step(state, x, y):
            trainable, non_trainable, optimizer_variables = state
            (loss, non_trainable), gradients = gradient_function(trainable, non_trainable, x, y)
            trainable, optimizer_variables = optimizer.stateless_apply(
                optimizer_variables, gradients, trainable)
            return loss, (trainable, non_trainable, optimizer_variables)

        # A tuple, as train_step returns it: the same pytree on every call, one trace.
        state = ([v.value for v in model.trainable_variables],
                 [v.value for v in model.non_trainable_variables],
                 [v.value for v in optimizer.variables])

        def jax_step():
            nonlocal state
            loss, state = train_step(state, images, labels)
            return float(loss)

        return jax_step
    raise ValueError(f"No hand-written loop for the {backend} backend.")


def measure(args, policy: str) -> dict:
    model = _build(args, policy)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch_size, args.image_size, args.image_size, 3)
                         ).astype("float32")
    labels = rng.integers(0, 10, args.batch_size).astype("int32")
    seconds = _time(lambda: model.train_on_batch(images, labels), args.warmup, args.steps)
    result = {"policy": policy,
              "train_images_per_second": round(args.batch_size * args.steps / seconds, 2)}
    seconds = _time(lambda: model.predict_on_batch(images), args.warmup, args.steps)
    result["inference_images_per_second"] = round(args.batch_size * args.steps / seconds, 2)
    if not args.skip_manual_loop:
        step = _manual_loop_step(model, images, labels)
        seconds = _time(step, args.warmup, args.steps)
        manual = args.batch_size * args.steps / seconds
        result["manual_loop_train_images_per_second"] = round(manual, 2)
        result["keras_vs_manual_loop"] = round(result["train_images_per_second"] / manual, 3)
    keras.backend.clear_session()
    return result


def main(argv=None) -> int:
    args = parse_arguments(argv)
    device = _device()
    results = []
    for name in args.precisions.split(","):
        policy = {"float32": "float32",
                  "mixed": "mixed_float16" if device == "gpu" else "mixed_bfloat16"}.get(
                      name, name)
        results.append(measure(args, policy))
    keras.mixed_precision.set_dtype_policy("float32")
    report = {
        "benchmark": "training_throughput", "backend": keras.backend.backend(),
        "device": device, "machine": platform.processor() or platform.machine(),
        "backbone": args.backbone, "alpha": args.alpha, "image_size": args.image_size,
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
        "results": results,
    }
    if len(results) > 1 and results[0]["policy"] == "float32":
        report["mixed_vs_float32_training"] = round(
            results[1]["train_images_per_second"] / results[0]["train_images_per_second"], 3)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
