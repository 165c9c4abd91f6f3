"""The device check (issue 26): what the recipes get out of a GPU, in one command, JSON out.

    # On a lent GPU machine (JAX, no TensorFlow): docs/benchmarks.md, "On a GPU"
    KERAS_BACKEND=jax python -m benchmarks.accelerator --photos benchmarks/photos \
        --keras-home benchmarks/keras_home --output accelerator.json

    # Here, on the CPU, in about two minutes (the test runs this):
    python -m benchmarks.accelerator --quick --photos PHOTOS

Measures, for MobileNet alpha=0.25 and MobileNetV2 at 224 px (random weights: speed
does not depend on them), float32 against the mixed precision ``--mixed-precision auto``
picks for the device (bfloat16 on Ampere, Hopper and newer, float16 on Volta/Turing;
bfloat16 on the CPU here so the path runs): images per second of the forward pass
(``predict_on_batch``), of Keras ``fit`` on the whole network unfrozen, and of a
hand-written JAX step (``jax.jit`` over ``stateless_call`` and the same Adam,
`benchmarks.training_throughput`), the limit Keras's training machinery should come
close to. Then the cats recipe end to end on ``--photos`` (a few hundred photos in
``train/`` and ``test/`` class folders, brought along: `prepare_photos`), timed, with
its test accuracy. Nothing here imports TensorFlow (a test checks it), so it runs on a
machine that has JAX and no TensorFlow.

Goals (issue 26): mixed precision at least 2x float32 in ``fit`` on the GPU, and ``fit``
within 25% of the hand-written step. Anchors: NVIDIA's EfficientNet-B0 with AMP on an
A100, about 3,454 images/s training; keras.io's applications table, MobileNetV2 3.8 ms
per inference step on an A100.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
if "--keras-home" in sys.argv[:-1]:  # Keras reads KERAS_HOME once, when it is imported
    os.environ["KERAS_HOME"] = os.path.abspath(sys.argv[sys.argv.index("--keras-home") + 1])

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.training_throughput import _manual_loop_step  # noqa: E402
from templates.models.freezing import unfreeze_from  # noqa: E402
from templates.models.pretrained import pretrained_model  # noqa: E402
from templates.training.compilation import compile_classifier  # noqa: E402
from templates.training.hardware import gpu_compute_capability, mixed_precision_policy  # noqa: E402

MODELS = (("MobileNet", 0.25), ("MobileNetV2", None))


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accelerator",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CPU-sized: MobileNet 0.25 only, 96 px, a few small steps, and "
                        "a one-epoch recipe run.")
    parser.add_argument("--photos", help="train/ and test/ class folders for the recipe run "
                        "(prepare them with --prepare-photos); without it the run is skipped.")
    parser.add_argument("--keras-home", help="A KERAS_HOME whose models/ holds the ImageNet "
                        "weights for the recipe run (the lent machine cannot download them).")
    parser.add_argument("--prepare-photos", nargs=2, metavar=("SOURCE", "DESTINATION"),
                        help="Copy --photos-per-class photos of each class of SOURCE/train "
                        "and SOURCE/test into DESTINATION, then stop.")
    parser.add_argument("--photos-per-class", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--output", help="Also write the JSON here.")
    return parser.parse_args(argv)


def prepare_photos(source: str, destination: str, per_class: int) -> dict[str, int]:
    """Copy the first ``per_class`` photos of each class of ``source``'s ``train/`` and
    ``test/`` into ``destination`` (the set the lent machine brings along)."""
    copied = {}
    for split in ("train", "test"):
        count = per_class if split == "train" else max(1, per_class // 2)
        for label in sorted(os.listdir(os.path.join(source, split))):
            folder = os.path.join(source, split, label)
            if not os.path.isdir(folder):
                continue
            target = os.path.join(destination, split, label)
            os.makedirs(target, exist_ok=True)
            for name in sorted(os.listdir(folder))[:count]:
                shutil.copyfile(os.path.join(folder, name), os.path.join(target, name))
            copied[f"{split}/{label}"] = min(count, len(os.listdir(folder)))
    return copied


def device_and_policy() -> tuple[str, str, tuple[int, int] | None]:
    """The device Keras trains on, the mixed policy ``auto`` gives it, its capability."""
    backend = keras.backend.backend()
    device = "cpu"
    if backend == "jax":
        import jax

        platform_name = jax.devices()[0].platform
        device = "gpu" if platform_name in ("gpu", "cuda", "rocm") else platform_name
    elif backend == "torch":
        import torch

        device = "gpu" if torch.cuda.is_available() else "cpu"
    capability = gpu_compute_capability() if device == "gpu" else None
    policy = mixed_precision_policy("auto", device, capability)
    return device, policy if policy != "float32" else "mixed_bfloat16", capability


class RepeatedBatch(keras.utils.PyDataset):
    """One batch ``steps`` times: ``fit`` timed without reading data."""

    def __init__(self, images, labels, steps):
        super().__init__()
        self.images, self.labels, self.steps = images, labels, steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.images, self.labels


class EpochTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def measure_model(name: str, alpha: float | None, policy: str, image_size: int,
                  batch_size: int, steps: int) -> dict:
    """Forward, ``fit`` and hand-written-step images per second of one model and policy."""
    keras.mixed_precision.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    transfer = pretrained_model(name, num_classes=2, weights=None, image_size=image_size,
                                alpha=alpha)
    unfreeze_from(transfer.backbone, None)  # the whole network trains; BatchNorm frozen
    model = transfer.model
    compile_classifier(model, 1e-4)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = rng.integers(0, 2, batch_size).astype("int32")
    result = {"model": name if alpha is None else f"{name},alpha={alpha}", "policy": policy}

    model.predict_on_batch(images)  # compile
    started = time.perf_counter()
    for _ in range(steps):
        model.predict_on_batch(images)
    result["forward_images_per_second"] = round(batch_size * steps / (time.perf_counter()
                                                                      - started), 1)
    timer = EpochTimes()
    # Epoch 1 compiles and warms up; epoch 2 is timed.
    model.fit(RepeatedBatch(images, labels, steps), epochs=2, verbose=0, callbacks=[timer])
    result["fit_images_per_second"] = round(batch_size * steps / timer.seconds[-1], 1)
    if keras.backend.backend() == "jax":
        step = _manual_loop_step(model, images, labels)
        step(), step()  # compile, and make sure nothing is traced again
        started = time.perf_counter()
        for _ in range(steps):
            step()
        hand = batch_size * steps / (time.perf_counter() - started)
        result["hand_written_step_images_per_second"] = round(hand, 1)
        result["fit_vs_hand_written"] = round(result["fit_images_per_second"] / hand, 3)
    keras.backend.clear_session()
    return result


def recipe_run(photos: str, keras_home: str | None, quick: bool, output_dir: str) -> dict:
    """The cats recipe end to end on ``photos`` (ImageNet MobileNet 0.25), timed, in this
    process (``--keras-home`` must be set before Keras is imported: `main` does it)."""
    from recipes import cats_vs_dogs

    arguments = ["--data-dir", os.path.join(photos, "train"), "--test-dir",
                 os.path.join(photos, "test"), "--backbone", "MobileNet", "--alpha", "0.25",
                 "--seed", "1", "--output-dir", output_dir, "--mixed-precision", "auto"]
    if quick:
        arguments += ["--image-size", "96", "--head-epochs", "1", "--fine-tune-epochs", "1",
                      "--no-find-learning-rates"]
    keras.backend.clear_session()
    started = time.perf_counter()
    returncode = cats_vs_dogs.main(arguments)
    seconds = time.perf_counter() - started
    keras.mixed_precision.set_dtype_policy("float32")
    with open(os.path.join(output_dir, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    return {"returncode": returncode, "seconds": round(seconds, 1),
            "test_accuracy": metrics.get("test_accuracy"),
            "hardware": metrics.get("hardware")}


def main(argv=None) -> int:
    args = parse_arguments(argv)
    if args.prepare_photos:
        print(json.dumps(prepare_photos(*args.prepare_photos, args.photos_per_class)))
        return 0
    device, mixed, capability = device_and_policy()
    image_size = 96 if args.quick else 224
    batch_size = args.batch_size or (8 if args.quick else 128)
    steps = args.steps or (2 if args.quick else 30)
    models = MODELS[:1] if args.quick else MODELS
    started = time.perf_counter()
    results = [measure_model(name, alpha, policy, image_size, batch_size, steps)
               for name, alpha in models for policy in ("float32", mixed)]
    keras.mixed_precision.set_dtype_policy("float32")
    report = {"benchmark": "accelerator", "backend": keras.backend.backend(),
              "keras": keras.__version__, "device": device,
              "compute_capability": capability, "machine": platform.machine(),
              "quick": args.quick, "image_size": image_size, "batch_size": batch_size,
              "steps": steps, "results": results}
    if device == "gpu":
        import jax

        report["gpu"] = str(jax.devices()[0].device_kind)
    report["mixed_vs_float32_fit"] = {
        result["model"]: round(result["fit_images_per_second"] / float32["fit_images_per_second"], 3)
        for float32, result in zip(results[::2], results[1::2])}
    if args.photos:
        output_dir = os.path.join(os.path.dirname(os.path.abspath(args.output or "x")),
                                  "accelerator_recipe_run")
        report["recipe"] = recipe_run(args.photos, args.keras_home, args.quick, output_dir)
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 0 if report.get("recipe", {}).get("returncode", 0) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
