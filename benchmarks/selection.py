"""Does ranking sources from frozen features pick the source that trains best?

    python -m benchmarks.selection --output-dir runs/selection        # every pool
    python -m benchmarks.selection --pools digits sst2_1k --seeds 11 12 13
    python -m benchmarks.selection --write-docs docs/results.md       # the table

For every pool of candidate sources that can be built offline, and every seed, this
trains every candidate with its recipe's defaults (the ground truth: test accuracy of
the fine-tuned model, and the wall time of its process) and ranks the same candidates with the recipe's
``--select-from ... --select-only`` (estimates on frozen features only). Each run is a
process of its own, as a user would start it; a run whose output already exists is
read, not run again, so an interrupted benchmark resumes.

Printed as JSON and written to ``OUTPUT_DIR/selection_benchmark.json``: per pool and
estimate, Kendall's tau between the estimate and the fine-tuned test accuracy (mean over
seeds), how often the estimate's top candidate is the true best or within 1 point of it,
and the seconds of ranking against the seconds of training every candidate. Seeds 11-13
are the selection seeds (tunable settings were chosen there, docs/results.md), 1-3 the
seeds reported. ``--write-docs FILE`` replaces the block between the
``<!-- selection-benchmark -->`` markers in FILE with the table (the rows of pools and
seed groups not measured in this run stay as they are).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import combinations

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("TRANSFER_COOKBOOK_SHARED", REPOSITORY.parent / "shared"))
CATS = SHARED / "data" / "cats_vs_dogs"
SST2 = SHARED / "data" / "text" / "sst2"
LITE0 = f"keras_hub:{SHARED / 'presets' / 'efficientnet_lite0'}"
MINILM = SHARED / "presets" / "all-MiniLM-L6-v2"
MARKER = "<!-- selection-benchmark -->"
ESTIMATES = ("final", "linear_probe", "knn", "logme", "leep", "h_score", "mean_rank")


@dataclasses.dataclass(frozen=True)
class Pool:
    """Candidates of one recipe, the flag that trains one, and the recipe's data flags."""

    name: str
    recipe: str
    candidates: tuple[str, ...]
    flag: str                      # how a training run names its candidate
    arguments: tuple[str, ...]     # data and fixed options, shared by every run
    selection_arguments: tuple[str, ...] = ()
    keras_home: str = "shared"     # "shared", or "derived_128" (see _derived_keras_home)
    # Candidates another recipe trains: {candidate: (recipe, its flags before the data)}.
    trained_elsewhere: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def training_command(self, candidate: str) -> list[str]:
        """The recipe run that trains ``candidate`` (data flags included, not the seed
        or output folder)."""
        elsewhere = dict(self.trained_elsewhere)
        if candidate in elsewhere:
            recipe, *flags = elsewhere[candidate]
            return [recipe, *flags, *self.arguments]
        return [self.recipe, *self.arguments, self.flag, candidate]


MOBILENET = "MobileNet,alpha=0.25"
CATS_DATA = ("--data-dir", str(CATS / "train"), "--test-dir", str(CATS / "test"))
SST2_DATA = ("--train", str(SST2 / "stsa.binary.train"), "--validation",
             str(SST2 / "stsa.binary.dev"), "--test", str(SST2 / "stsa.binary.test"))
POOLS = {
    # MobileNet 0.25 (ImageNet) cut at block ends spread from the first block to the
    # last (the reuse sweep's block_cut_points(backbone, 6)), and the same network with
    # random weights.
    "cats_cuts": Pool("cats_cuts", "recipes.cats_vs_dogs", (
        f"{MOBILENET}@conv_pw_1_relu", f"{MOBILENET}@conv_pw_3_relu",
        f"{MOBILENET}@conv_pw_6_relu", f"{MOBILENET}@conv_pw_8_relu",
        f"{MOBILENET}@conv_pw_11_relu", MOBILENET, f"{MOBILENET},weights=none"),
        "--backbone", CATS_DATA),
    # At 128 px Keras's ImageNet classifier head is available, so LEEP applies.
    "cats_128": Pool("cats_128", "recipes.cats_vs_dogs", (
        f"{MOBILENET},image_size=128", f"{MOBILENET},image_size=128@-30",
        f"{MOBILENET},image_size=128@-60", f"{MOBILENET},image_size=128,weights=none"),
        "--backbone", CATS_DATA, keras_home="derived_128"),
    "digits": Pool("digits", "recipes.develop_model_digits",
                   ("parity", "low_digits", "loops", "unrelated"), "--source-task",
                   ("--seeds", "1", "--skip-sweep")),
    "sst2_1k": Pool("sst2_1k", "recipes.glove_text_classification",
                    ("glove", "word2vec", "glove+word2vec", "random"), "--vector-source",
                    (*SST2_DATA, "--train-size", "1000")),
    "sst2_full": Pool("sst2_full", "recipes.glove_text_classification",
                      ("glove", "word2vec", "glove+word2vec", "random"), "--vector-source",
                      SST2_DATA),
    # Issue 36: real models beside the small ones. EfficientNet-Lite0 whole and cut at
    # its sixth stage, MobileNet 0.25, and Lite0 with random weights.
    "cats_mixed": Pool("cats_mixed", "recipes.cats_vs_dogs", (
        LITE0, f"{LITE0}@block6a_expand_conv", MOBILENET, f"{LITE0},weights=none"),
        "--backbone", CATS_DATA),
    # MiniLM (mean-pooled, ranked by the GloVe recipe's --select-from and trained by the
    # text-encoder recipe) beside GloVe, in-domain word2vec and random vectors.
    "sst2_mixed": Pool("sst2_mixed", "recipes.glove_text_classification", (
        "glove", "word2vec", "random", f"encoder:{MINILM}"), "--vector-source",
        (*SST2_DATA, "--train-size", "1000"), trained_elsewhere=(
            (f"encoder:{MINILM}", ("recipes.text_encoder_classification", "--preset",
                                   str(MINILM))),)),
}


def _derived_keras_home(folder: pathlib.Path) -> pathlib.Path:
    """A Keras home holding the shared weights plus MobileNet 0.25's no-top 128 px
    file, made from Keras's official 128 px classifier file (the same weights without
    the top), so ``weights="imagenet"`` works offline at 128 px."""
    home = folder / "keras_home_128"
    target = home / "models" / "mobilenet_2_5_128_tf_no_top.h5"
    if target.is_file():
        return home
    (home / "models").mkdir(parents=True, exist_ok=True)
    for source in (SHARED / "keras_home" / "models").iterdir():
        link = home / "models" / source.name
        if not link.exists():
            link.symlink_to(source)
    script = (
        "import sys, h5py, keras\n"
        "from keras.src.legacy.saving import legacy_h5_format\n"
        "top = keras.applications.MobileNet(input_shape=(128, 128, 3), alpha=0.25, "
        "include_top=True, weights='imagenet')\n"
        "bare = keras.applications.MobileNet(input_shape=(128, 128, 3), alpha=0.25, "
        "include_top=False, weights=None)\n"
        "for layer in bare.layers:\n"
        "    if layer.weights:\n"
        "        layer.set_weights(top.get_layer(layer.name).get_weights())\n"
        "with h5py.File(sys.argv[1], 'w') as handle:\n"  # Keras's own (legacy h5) layout
        "    legacy_h5_format.save_weights_to_hdf5_group(handle, bare)\n")
    with tempfile.TemporaryDirectory() as scratch:
        temporary = os.path.join(scratch, "no_top.h5")
        subprocess.run([sys.executable, "-c", script, temporary], check=True,
                       env=dict(os.environ, KERAS_HOME=str(home)))
        shutil.copyfile(temporary, target)
    return home


def _environment(pool: Pool, output_dir: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    if pool.keras_home == "derived_128":
        env["KERAS_HOME"] = str(_derived_keras_home(output_dir))
    else:
        home = output_dir / "keras_home"
        if not (home / "models").exists():
            home.mkdir(parents=True, exist_ok=True)
            (home / "models").symlink_to(SHARED / "keras_home" / "models",
                                         target_is_directory=True)
        env["KERAS_HOME"] = str(home)
    return env


def _run(command: list[str], env: dict[str, str], folder: pathlib.Path, done: str) -> float:
    """Run ``command`` unless ``folder/done`` exists; return its wall seconds (kept in
    ``folder/wall_seconds.json``, so a resumed benchmark reads them)."""
    timing = folder / "wall_seconds.json"
    if (folder / done).is_file() and timing.is_file():
        return float(json.loads(timing.read_text())["seconds"])
    folder.mkdir(parents=True, exist_ok=True)
    print("running:", " ".join(command), file=sys.stderr, flush=True)
    started = time.perf_counter()
    with open(folder / "log.txt", "w", encoding="utf-8") as log:
        result = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=REPOSITORY)
    seconds = round(time.perf_counter() - started, 2)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {result.returncode}); see "
                         f"{folder / 'log.txt'}. Finished runs are kept.")
    timing.write_text(json.dumps({"seconds": seconds}))
    return seconds


def _safe(name: str) -> str:
    return "".join(character if character.isalnum() else "_" for character in name)


def train_candidates(pool: Pool, seed: int, output_dir: pathlib.Path) -> dict[str, dict]:
    """Train every candidate of ``pool`` with ``seed``: ``{candidate: {test_accuracy,
    seconds}}``, read from each run's metrics.json."""
    env = _environment(pool, output_dir)
    results = {}
    for candidate in pool.candidates:
        folder = output_dir / pool.name / f"seed{seed}" / "train" / _safe(candidate)
        command = [sys.executable, "-m", *pool.training_command(candidate),
                   "--seed", str(seed), "--output-dir", str(folder)]
        seconds = _run(command, env, folder, "metrics.json")
        metrics = json.loads((folder / "metrics.json").read_text())
        accuracy = metrics.get("transfer_test_accuracy", metrics.get("test_accuracy"))
        results[candidate] = {"test_accuracy": float(accuracy), "seconds": seconds}
    return results


def rank_candidates(pool: Pool, seed: int, output_dir: pathlib.Path) -> dict:
    """The recipe's ``--select-from ... --select-only`` for ``pool``: its selection.json."""
    env = _environment(pool, output_dir)
    folder = output_dir / pool.name / f"seed{seed}" / "select"
    command = [sys.executable, "-m", pool.recipe, *pool.arguments, *pool.selection_arguments,
               "--select-from", *pool.candidates, "--select-only", "--seed", str(seed),
               "--output-dir", str(folder)]
    seconds = _run(command, env, folder, "selection.json")
    return {**json.loads((folder / "selection.json").read_text()), "seconds": seconds}


def finished(pool: Pool, seed: int, output_dir: pathlib.Path) -> bool:
    """Whether every training run and the ranking of ``pool`` at ``seed`` are there."""
    folder = output_dir / pool.name / f"seed{seed}"
    runs = [folder / "train" / _safe(candidate) for candidate in pool.candidates]
    return all((run / "metrics.json").is_file() for run in runs) and (
        folder / "select" / "selection.json").is_file()


def kendall_tau(first: list[float], second: list[float]) -> float | None:
    """Kendall's tau-b of two lists (ties counted as neither order); ``None`` when one
    list is constant."""
    concordant = discordant = first_ties = second_ties = 0
    for i, j in combinations(range(len(first)), 2):
        a, b = first[i] - first[j], second[i] - second[j]
        if a == 0 and b == 0:
            continue
        if a == 0:
            first_ties += 1
        elif b == 0:
            second_ties += 1
        elif (a > 0) == (b > 0):
            concordant += 1
        else:
            discordant += 1
    denominator = ((concordant + discordant + first_ties)
                   * (concordant + discordant + second_ties)) ** 0.5
    return None if denominator == 0 else (concordant - discordant) / denominator


def score_pool_seed(truth: dict[str, dict], selection: dict) -> dict:
    """Per estimate: tau against the test accuracies, whether its top pick is the best
    or within 1 point; and the pick's verdict."""
    rows = {row["candidate"]: row for row in selection["candidates"]}
    names = list(truth)
    accuracies = [truth[name]["test_accuracy"] for name in names]
    best = max(accuracies)
    scored = {}
    for estimate in ESTIMATES:
        if estimate == "final":
            values = [-rows[name]["rank"] for name in names]
        elif estimate == "mean_rank":  # lower is better
            values = [-rows[name]["mean_rank"] for name in names]
        else:
            values = [rows[name].get(estimate) for name in names]
        if any(value is None for value in values):
            continue
        top = names[max(range(len(names)), key=lambda index: values[index])]
        scored[estimate] = {
            "tau": kendall_tau(values, accuracies),
            "top": top, "top_is_best": truth[top]["test_accuracy"] == best,
            "top_within_1_point": truth[top]["test_accuracy"] >= best - 0.01,
        }
    training_seconds = sum(entry["seconds"] for entry in truth.values())
    return {"estimates": scored, "verdict": selection.get("verdict"),
            "pick": selection.get("pick"), "best": names[accuracies.index(best)],
            "ranking_seconds": selection.get("seconds"),
            "training_seconds": training_seconds,
            "test_accuracy": {name: truth[name]["test_accuracy"] for name in names}}


def summarise(per_seed: dict[int, dict]) -> dict:
    """Means over seeds of each estimate's tau, top-pick rates and the time ratio."""
    summary = {}
    for estimate in ESTIMATES:
        entries = [seed_result["estimates"][estimate] for seed_result in per_seed.values()
                   if estimate in seed_result["estimates"]]
        if not entries:
            continue
        taus = [entry["tau"] for entry in entries if entry["tau"] is not None]
        summary[estimate] = {
            "tau_mean": round(statistics.fmean(taus), 3) if taus else None,
            "tau_std": round(statistics.stdev(taus), 3) if len(taus) > 1 else 0.0,
            "top_is_best": sum(entry["top_is_best"] for entry in entries),
            "top_within_1_point": sum(entry["top_within_1_point"] for entry in entries),
            "cases": len(entries)}
    ranking = sum(result["ranking_seconds"] or 0.0 for result in per_seed.values())
    training = sum(result["training_seconds"] for result in per_seed.values())
    summary["time_ratio"] = round(ranking / training, 4) if training else None
    summary["close_calls"] = sum(result["verdict"] != "clear" for result in per_seed.values())
    return summary


def markdown(results: dict) -> str:
    """The docs table: one row per pool and seed group, one column group per estimate."""
    lines = ["| pool | seeds | estimate | Kendall tau (mean, sd) | top = best | top within 1 pt "
             "| ranking / training time | too close to call |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for pool, groups in results["pools"].items():
        for group, summary in groups.items():
            for estimate in ESTIMATES:
                if estimate not in summary:
                    continue
                entry = summary[estimate]
                tau = ("n/a" if entry["tau_mean"] is None
                       else f"{entry['tau_mean']:+.2f} ({entry['tau_std']:.2f})")
                lines.append(
                    f"| {pool} | {group} | {estimate} | {tau} | {entry['top_is_best']}/"
                    f"{entry['cases']} | {entry['top_within_1_point']}/{entry['cases']} | "
                    f"{summary['time_ratio']} | {summary['close_calls']}/{entry['cases']} |")
    return "\n".join(lines)


def write_docs(path: str, results: dict) -> None:
    """Put the table between the two markers in ``path``. The rows of (pool, seed group)
    pairs this run did not measure stay as they were (their runs may live elsewhere)."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    if text.count(MARKER) != 2:
        raise SystemExit(f"{path} needs two {MARKER} lines around the table's place.")
    before, block, after = text.split(MARKER)
    header, separator, *new_rows = markdown(results).splitlines()

    def key(row: str) -> tuple[str, str]:
        cells = row.split("|")
        return cells[1].strip(), cells[2].strip()

    rows: dict[tuple[str, str], list[str]] = {}
    for row in block.strip().splitlines()[2:]:
        rows.setdefault(key(row), []).append(row)
    for pool, groups in results["pools"].items():
        for group in groups:
            rows[(pool, group)] = []
    for row in new_rows:
        rows[key(row)].append(row)
    pools = [*POOLS, *sorted({pool for pool, _ in rows} - set(POOLS))]
    ordered = [row for pool in pools for group in ("selection", "reported")
               for row in rows.get((pool, group), [])]
    table = "\n".join([header, separator, *ordered])
    pathlib.Path(path).write_text(f"{before}{MARKER}\n{table}\n{MARKER}{after}",
                                  encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.selection",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", nargs="+", default=list(POOLS), choices=list(POOLS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[11, 12, 13, 1, 2, 3])
    parser.add_argument("--output-dir", default="runs/selection")
    parser.add_argument("--train-only", action="store_true",
                        help="Only the ground-truth training runs.")
    parser.add_argument("--finished-only", action="store_true",
                        help="Tabulate only the (pool, seed) pairs whose runs have all "
                        "finished; list the others under not_run instead of running them.")
    parser.add_argument("--write-docs", metavar="FILE",
                        help="Replace the rows of the pools (and seed groups) measured "
                        "here in the marked table of FILE; the other rows stay.")
    args = parser.parse_args(argv)
    output_dir = pathlib.Path(args.output_dir).resolve()
    results: dict = {"seeds": args.seeds, "pools": {}, "runs": {}}
    for name in args.pools:
        pool = POOLS[name]
        per_seed = {}
        for seed in args.seeds:
            if args.finished_only and not finished(pool, seed, output_dir):
                results.setdefault("not_run", []).append(f"{name} seed {seed}")
                continue
            truth = train_candidates(pool, seed, output_dir)
            if args.train_only:
                continue
            per_seed[seed] = score_pool_seed(truth, rank_candidates(pool, seed, output_dir))
        if args.train_only:
            continue
        results["runs"][name] = per_seed
        groups = {"selection": [s for s in args.seeds if s >= 10],
                  "reported": [s for s in args.seeds if s < 10]}
        results["pools"][name] = {group: summarise({s: per_seed[s] for s in seeds
                                                    if s in per_seed})
                                  for group, seeds in groups.items()
                                  if any(s in per_seed for s in seeds)}
    if args.train_only:
        return 0
    all_cases = [result for runs in results["runs"].values() for seed, result in runs.items()
                 if seed < 10]
    if all_cases:
        results["target"] = {
            "final_top_within_1_point": sum(case["estimates"]["final"]["top_within_1_point"]
                                            for case in all_cases),
            "cases": len(all_cases),
            "time_ratio": round(sum(case["ranking_seconds"] or 0 for case in all_cases)
                                / sum(case["training_seconds"] for case in all_cases), 4)}
    (output_dir / "selection_benchmark.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({key: results[key] for key in ("pools", "target", "not_run")
                      if key in results},
                     indent=2))
    if args.write_docs:
        write_docs(args.write_docs, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
