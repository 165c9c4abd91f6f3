"""Run a recipe over several seeds and print the table every published figure comes from.

    python -m benchmarks.seeds recipes.glove_text_classification --seeds 1 2 3 \
        --output-dir runs/seeds/sst2 -- --train ... --validation ... --test ... --compare-scratch

Each seed runs as its own process (``python -m RECIPE ... --seed S --output-dir
OUTPUT_DIR/seedS``); a seed whose ``metrics.json`` already exists is read, not run again,
so an interrupted table resumes. The figures are read from each run's ``metrics.json``:
``test_accuracy`` (or ``val_accuracy``), and with ``--compare-scratch`` the pretrained and
scratch test accuracies and their difference. Printed as JSON (mean, standard deviation,
min, max and every seed's value) and written to ``OUTPUT_DIR/seeds.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def summary(values: list[float]) -> dict:
    """Mean, sample standard deviation, min, max and the values themselves."""
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4),
            "values": [round(value, 4) for value in values]}


def figures(metrics: dict) -> dict[str, float]:
    """The headline figures of one run's metrics.json."""
    found = {}
    for key in ("test_accuracy", "val_accuracy"):
        if key in metrics:
            found[key] = float(metrics[key])
        if metrics.get("without_flips", {}).get(key) is not None:  # --test-time-flips
            found[f"{key}_without_flips"] = float(metrics["without_flips"][key])
    # The transfer report names its test score after its metric (test_accuracy, or
    # test_micro_f1 when the run monitored val_micro_f1).
    report = metrics.get("transfer_report", {})
    test_key = next((key for key in report if key.startswith("test_")), "test_accuracy")
    if "scratch" in metrics and "pretrained" in metrics:
        found[f"pretrained_{test_key}"] = float(metrics["pretrained"][test_key])
        found[f"scratch_{test_key}"] = float(metrics["scratch"][test_key])
        found["gain_over_scratch"] = (found[f"pretrained_{test_key}"]
                                      - found[f"scratch_{test_key}"])
    elif test_key in report:
        found["gain_over_scratch"] = float(report[test_key])
    for key in ("transfer_test_accuracy", "scratch_test_accuracy"):  # the digits recipe
        if key in metrics:
            found[key] = float(metrics[key])
    return found


def run_seeds(recipe: str, seeds: list[int], output_dir: str, arguments: list[str],
              timeout: float | None = None) -> dict:
    """Run ``recipe`` once per seed (skipping finished seeds); return the table."""
    runs = {}
    for seed in seeds:
        folder = os.path.join(output_dir, f"seed{seed}")
        metrics_path = os.path.join(folder, "metrics.json")
        if not os.path.isfile(metrics_path):
            command = [sys.executable, "-m", recipe, *arguments, "--seed", str(seed),
                       "--output-dir", folder]
            print("running:", " ".join(command), file=sys.stderr, flush=True)
            result = subprocess.run(command, timeout=timeout)
            if result.returncode != 0:
                raise SystemExit(f"{recipe} failed for seed {seed} (exit {result.returncode}); "
                                 f"finished seeds are kept in {output_dir}.")
        with open(metrics_path, encoding="utf-8") as handle:
            runs[seed] = figures(json.load(handle))
    keys = sorted(set.intersection(*(set(values) for values in runs.values())))
    return {"recipe": recipe, "arguments": arguments, "seeds": seeds,
            **{key: summary([runs[seed][key] for seed in seeds]) for key in keys}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.seeds",
        description="Run a recipe over seeds; print mean, spread and every seed's figures.")
    parser.add_argument("recipe", help="Module to run, e.g. recipes.cats_vs_dogs.")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--output-dir", required=True,
                        help="One folder per seed (seedS/) and seeds.json.")
    parser.epilog = ("After --: the recipe's own arguments (not --seed or --output-dir, "
                     "which are set per seed).")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, arguments = parser.parse_args(argv[:split]), argv[split + 1:]
    for flag in ("--seed", "--output-dir"):
        if flag in arguments:
            parser.error(f"{flag} is set per seed by this script; leave it out.")
    table = run_seeds(args.recipe, args.seeds, args.output_dir, arguments)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "seeds.json"), "w", encoding="utf-8") as handle:
        json.dump(table, handle, indent=2)
    print(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
