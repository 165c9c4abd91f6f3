"""Head training on cached features versus the tutorial style (backbone in the graph).

Same data, backbone, head, epochs, learning rate and seed; the only difference is
whether the frozen backbone runs once (features cached) or on every batch of every
epoch. Prints one JSON object.

    KERAS_HOME=$PWD/../shared/keras_home python -m benchmarks.cached_head_training \
        --data-dir ../shared/data/cats_vs_dogs --backbone MobileNet --alpha 0.25
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from templates.data.images import image_dataset, load_image_splits  # noqa: E402
from templates.models.backbones import get_backbone_spec  # noqa: E402
from templates.models.pretrained import pretrained_model  # noqa: E402
from templates.training.phases import train_head  # noqa: E402


def run_mode(cache_features: bool, splits, args, image_size: int) -> dict:
    keras.utils.set_random_seed(args.seed)
    train = image_dataset(splits.train, image_size, args.batch_size, shuffle=True,
                          seed=args.seed)
    validation = image_dataset(splits.validation, image_size, args.batch_size)
    test = image_dataset(splits.test or splits.validation, image_size, args.batch_size)
    # Decode and cache the images first, so both modes start from cached pixels and
    # the timing compares the training itself.
    for dataset in (train, validation, test):
        for _ in dataset:
            pass
    transfer = pretrained_model(args.backbone, len(splits.class_names), image_size=image_size,
                                alpha=args.alpha)
    started = time.perf_counter()
    train_head(transfer, train, validation, epochs=args.epochs,
               learning_rate=args.learning_rate, cache_features=cache_features,
               batch_size=args.batch_size, seed=args.seed, verbose=0)
    seconds = time.perf_counter() - started
    accuracy = transfer.model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    keras.backend.clear_session()
    return {"seconds": round(seconds, 2), "test_accuracy": round(float(accuracy), 4)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--backbone", default="MobileNet")
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)
    image_size = args.image_size or get_backbone_spec(args.backbone).default_image_size
    splits = load_image_splits(args.data_dir, seed=args.seed)

    cached = run_mode(True, splits, args, image_size)
    in_graph = run_mode(False, splits, args, image_size)
    print(json.dumps({
        "benchmark": "cached_head_training",
        "backbone": args.backbone, "alpha": args.alpha, "image_size": image_size,
        "epochs": args.epochs, "train_images": len(splits.train.files),
        "test_images": len(splits.test.files) if splits.test else None,
        "cached_features": cached, "in_graph_backbone": in_graph,
        "speedup": round(in_graph["seconds"] / cached["seconds"], 2),
        "accuracy_difference_points": round(
            100 * (cached["test_accuracy"] - in_graph["test_accuracy"]), 2),
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "keras": keras.__version__,
                    "backend": keras.backend.backend()},
    }, indent=2))


if __name__ == "__main__":
    main()
