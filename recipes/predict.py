"""
Title: Classify new images or texts with a trained recipe's output
Description: Load `model.keras` and `labels.txt` from a recipe's output folder (safe
mode, preprocessing included) and print the predicted class of each input.

How to run:

    python -m recipes.predict runs/cats_vs_dogs photo1.jpg photo2.png
    python -m recipes.predict runs/glove_text --text "a gripping, funny film" --text "dull"
    python -m recipes.predict runs/glove_text reviews.txt     # one text per line
    python -m recipes.predict --help

Image models take image files (or folders, searched for images); text models take
`--text` strings or text files with one example per line. `--output FILE.json` writes
every class's probability. A multi-label model (a `thresholds.json` beside it) prints
each input followed by every label over its threshold, with its probability.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from templates import IMAGE_EXTENSIONS, CookbookError, Predictor, cli, write_json  # noqa: E402


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("How to run")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="A recipe output folder (model.keras + labels.txt).")
    parser.add_argument("inputs", nargs="*",
                        help="Image files or folders (image models); text files with one "
                             "example per line (text models).")
    parser.add_argument("--text", action="append", default=[],
                        help="A text to classify (text models; repeatable).")
    parser.add_argument("--output", help="Write the predictions as JSON to this file.")
    parser.add_argument("--unsafe", action="store_true",
                        help="Load with Keras safe_mode=False: allows models that embed "
                             "Python code (Lambda layers). Only for files you trust.")
    return parser.parse_args(argv)


def _image_paths(inputs: list[str]) -> list[str]:

    paths = []
    for item in inputs:
        if os.path.isdir(item):
            for root, _, files in sorted(os.walk(item)):
                paths += [os.path.join(root, name) for name in sorted(files)
                          if name.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise CookbookError(f"{item!r} is not a file or folder.")
    return paths


def _texts(inputs: list[str], texts: list[str]) -> tuple[list[str], list[str]]:
    """The texts to classify (each line of each file, then each --text), and one line
    for each file that could not be read: it is named and counted, the others still
    classified."""
    collected, unreadable = list(texts), []
    for item in inputs:
        if not os.path.isfile(item):
            raise CookbookError(f"{item!r} is not a file (use --text for a literal text).")
        try:
            with open(item, encoding="utf-8") as handle:
                collected += [line.rstrip("\n") for line in handle if line.strip()]
        except UnicodeDecodeError as error:
            unreadable.append(f"{item}: bytes that are not valid UTF-8 at byte "
                              f"{error.start} ({error.reason}); save it as UTF-8")
    return collected, unreadable


def main(argv=None) -> int:
    args = parse_arguments(argv)
    predictor = Predictor(args.model_dir, safe_mode=not args.unsafe)
    if predictor.kind == "image":
        if args.text:
            raise CookbookError("This is an image model: pass image files, not --text.")
        items, unreadable = _image_paths(args.inputs), []
    else:
        items, unreadable = _texts(args.inputs, args.text)
    for problem in unreadable:
        print(f"{'skipped':>12}  {'':6}  {problem}")
    if not items:
        raise CookbookError("Nothing to classify: give image files, text files or --text"
                            + (f" ({len(unreadable)} unreadable)." if unreadable else "."))
    predictions = predictor.predict(items)
    for prediction in predictions:
        shown = prediction.input if len(prediction.input) <= 70 else prediction.input[:67] + "..."
        if prediction.problem is not None:  # named and counted; the others still run
            print(f"{'skipped':>12}  {'':6}  {shown}: {prediction.problem}")
        elif prediction.labels is None:
            print(f"{prediction.label:>12}  {prediction.confidence:6.1%}  {shown}")
        else:  # multi-label: the input, then each label over its threshold
            print("  ".join([shown] + [f"{name} {probability:.1%}" for name, probability
                                       in prediction.labels.items()]))
    skipped = sum(prediction.problem is not None for prediction in predictions)
    if skipped or unreadable:
        print(f"Classified {len(predictions) - skipped} of {len(predictions)} inputs; "
              f"skipped {skipped + len(unreadable)} that could not be read (named above).")
    cut = [prediction for prediction in predictions if prediction.cut_at]
    if cut:  # the model read these texts only to its sequence length: said, not silent
        print(f"{len(cut)} of {len(predictions)} texts are longer than the model's "
              f"{cut[0].cut_at} tokens and were read only that far (cut_at in --output).")
    if args.output:
        write_json(args.output, [dataclasses.asdict(p) for p in predictions])
    return 1 if skipped == len(predictions) else 0


if __name__ == "__main__":
    cli.run_main(main)
