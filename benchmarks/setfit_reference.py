"""SetFit itself on the recipe's own few-shot draws: the reference for ``--contrastive``.

The public SetFit figure for all-MiniLM-L6-v2 (0.751 at 32 SST-2 sentences per class) is
one run of the SetFit library on a draw of its own. This runs the SetFit library
(PyTorch) on the very draws the text-encoder recipe's ``--label-curve`` and
``benchmarks.few_shot_text`` train on (`templates.training.label_curve.stratified_subset`,
seeds 0-4 for the reported figures), read by the same loader, scored on the same 872
validation and 1,821 test sentences, so the two implementations differ in nothing but
their code:

* ``paper``: SetFit's ``TrainingArguments`` with the paper's 20 positive and 20 negative
  pairs per sentence (``num_iterations=20``), one epoch, 16 pairs a batch, 2e-5: the
  settings of the recipe's ``--contrastive``; SetFit's head (scikit-learn's logistic
  regression) on the tuned, pooled, unit-length embeddings;
* ``library`` (``--ways library``): SetFit's own defaults, ``TrainingArguments``
  untouched but for the seed (SetFit 1.x's oversampled pairs).

It needs the ``setfit`` package (and so PyTorch) beside this project, which it imports
for the draws and the data only (the PyTorch backend is enough):

    pip install setfit
    KERAS_BACKEND=torch python -m benchmarks.setfit_reference \\
        --preset ../shared/presets/all-MiniLM-L6-v2 --data ../shared/data/text/sst2

Ends with one JSON object on stdout (each way's mean, spread and scores per seed, on test
and on validation); each finished draw is kept in ``--output`` and skipped when the
command is run again.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks.seeds import summary
from templates.data.files import write_json
from templates.data.texts import load_text_splits
from templates.training.label_curve import seeds_for, stratified_subset

WAYS = ("paper", "library")


def training_arguments(way: str, seed: int, output: str):
    """SetFit's ``TrainingArguments`` for ``way`` (`WAYS`), its checkpoints (none kept)
    under ``output``."""
    from setfit import TrainingArguments

    common = {"seed": seed, "report_to": "none", "show_progress_bar": False,
              "output_dir": os.path.join(output, "checkpoints"),
              "save_strategy": "no"}
    if way == "paper":
        return TrainingArguments(num_iterations=20, num_epochs=1, batch_size=16,
                                 body_learning_rate=2e-5, **common)
    return TrainingArguments(**common)


def one_draw(preset: str, way: str, texts, labels, rows, seed: int, scored,
             output: str) -> dict:
    """Train SetFit on ``rows`` of the training texts and score it on ``scored``
    (``{name: (texts, labels)}``)."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer

    started = time.perf_counter()
    model = SetFitModel.from_pretrained(preset)
    train = Dataset.from_dict({"text": [texts[row] for row in rows],
                               "label": [int(labels[row]) for row in rows]})
    Trainer(model=model, args=training_arguments(way, seed, output), train_dataset=train).train()
    point = {"seed": seed, "examples": len(rows)}
    for name, (sentences, answers) in scored.items():
        predicted = np.asarray(model.predict(sentences, batch_size=256, as_numpy=True))
        point[f"{name}_accuracy"] = float(np.mean(predicted == np.asarray(answers)))
    point["seconds"] = round(time.perf_counter() - started, 1)
    return point


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.setfit_reference",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, help="A sentence-transformers folder "
                        "(or Hugging Face name) SetFit loads.")
    parser.add_argument("--data", required=True, help="A folder with SST-2's "
                        "stsa.binary.{train,dev,test}.")
    parser.add_argument("--counts", type=int, nargs="+", default=[32], help="Labels per class.")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=["paper"])
    parser.add_argument("--seed", type=int, default=0, help="The first draw's seed (0: the "
                        "reported figures' draws).")
    parser.add_argument("--output", default="runs/setfit_reference")
    parser.add_argument("--embeddings", metavar="FILE", help="Instead: write the untuned "
                        "model's unit-length sentence-transformers embeddings of the test "
                        "sentences to FILE (.npy), for benchmarks.setfit_numerics "
                        "--reference-embeddings.")
    args = parser.parse_args(argv)

    splits = load_text_splits(*(os.path.join(args.data, f"stsa.binary.{name}")
                                for name in ("train", "dev", "test")))
    texts, labels = splits.train.texts, splits.labels["train"]
    scored = {name: (list(getattr(splits, name).texts), splits.labels[name])
              for name in ("validation", "test")}
    if args.embeddings:
        from sentence_transformers import SentenceTransformer

        vectors = SentenceTransformer(args.preset, device="cpu").encode(
            scored["test"][0], batch_size=64, normalize_embeddings=True)
        np.save(args.embeddings, vectors)
        report = {"embeddings": args.embeddings, "shape": list(vectors.shape)}
        print(json.dumps(report))
        return report
    os.makedirs(args.output, exist_ok=True)
    report = {"preset": args.preset, "ways": {}}
    for way in args.ways:
        for count in args.counts:
            points = []
            for seed in seeds_for(count, args.seed):
                path = os.path.join(args.output, f"{way}_{count}_{seed}.json")
                if os.path.exists(path):
                    with open(path) as file:
                        points.append(json.load(file))
                    continue
                rows = stratified_subset(labels, count, seed)
                points.append(one_draw(args.preset, way, texts, labels, rows, seed, scored,
                                       args.output))
                write_json(path, points[-1])
                print(json.dumps({"way": way, "per_class": count, **points[-1]}), flush=True)
            report["ways"].setdefault(way, {})[str(count)] = {
                name: summary([point[f"{name}_accuracy"] for point in points])
                for name in ("test", "validation")}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
