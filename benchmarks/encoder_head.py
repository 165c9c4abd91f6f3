"""Benchmark: the head on a frozen sentence encoder: pooling and the head's rate.

The text-encoder recipe trains a new head (dropout and a softmax layer) on the frozen
encoder's pooled outputs, cached once. all-MiniLM-L6-v2 is read as its
sentence-transformers folder says (mean over the real tokens, then unit length), which
makes its vectors small (each of 384 dimensions about 0.05): the question here is which
head rate and how many epochs such vectors need, and how the poolings compare, all on
SST-2's validation sentences (the test sentences are not read).

For each seed, a seeded subset of ``--train-size`` training sentences is encoded once per
pooling; the head then trains for ``--epochs`` epochs at each rate of ``--rates``, and the
best validation accuracy over the epochs and the last epoch's are printed as one JSON
object. Run (about 2 minutes per seed for 1,000 sentences on 2 CPU cores):

    python -m benchmarks.encoder_head --preset ../shared/presets/all-MiniLM-L6-v2 \
        --data ../shared/data/text/sst2 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from templates.data.texts import load_text_splits  # noqa: E402
from templates.models.heads import classification_head  # noqa: E402
from templates.models.text_encoders import pretrained_text_encoder  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.encoder_head")
    parser.add_argument("--preset", required=True)
    parser.add_argument("--data", required=True, help="Folder of stsa.binary.{train,dev,test}.")
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--poolings", nargs="+", default=["auto", "mean", "cls", "pooler"])
    parser.add_argument("--rates", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    results = {"preset": args.preset, "train_size": args.train_size, "epochs": args.epochs,
               "runs": []}
    for seed in args.seeds:
        splits = load_text_splits(os.path.join(args.data, "stsa.binary.train"),
                                  os.path.join(args.data, "stsa.binary.dev"),
                                  os.path.join(args.data, "stsa.binary.test"),
                                  0.1, seed, args.train_size)
        for pooling in args.poolings:
            transfer = pretrained_text_encoder(args.preset, 2, fit_texts=splits.train.texts,
                                               pooling=pooling)
            started = time.perf_counter()
            features = {name: transfer.backbone.predict(
                transfer.encode(getattr(splits, name).texts), batch_size=64, verbose=0)
                for name in ("train", "validation")}
            seconds = time.perf_counter() - started
            for rate in args.rates:
                keras.utils.set_random_seed(seed)
                head = classification_head((features["train"].shape[1],), 2, dropout=0.1)
                head.compile(optimizer=keras.optimizers.Adam(rate),
                             loss="sparse_categorical_crossentropy", metrics=["accuracy"])
                history = head.fit(features["train"], splits.labels["train"], batch_size=32,
                                   epochs=args.epochs, verbose=0,
                                   validation_data=(features["validation"],
                                                    splits.labels["validation"]))
                curve = history.history["val_accuracy"]
                results["runs"].append({
                    "seed": seed, "pooling": transfer.pooling, "asked": pooling, "normalize":
                    transfer.pooling_choice["normalize"], "learning_rate": rate,
                    "best_val_accuracy": round(max(curve), 4),
                    "last_val_accuracy": round(curve[-1], 4),
                    "feature_norm": round(float(np.linalg.norm(features["train"],
                                                               axis=1).mean()), 3),
                    "encode_seconds": round(seconds, 1)})
                print(json.dumps(results["runs"][-1]), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
