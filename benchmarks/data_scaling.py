"""Peak memory and wall time of the cats recipe as the photo count grows (issue 27).

    python -m benchmarks.data_scaling --source ../shared/data/cats_vs_dogs \
        --sizes 1000 2000 4000 8000 --low-limit-sizes 1000 4000 > data_scaling.json

Each size N is a training folder of N photos (N/2 per class): the source's training
photos linked under new names, round and round, so the decoder sees N files; the test
set is the source's, the same for every size. Each run is the recipe in its own process
(MobileNet alpha=0.25 with ImageNet weights from KERAS_HOME, 224 px, 2 head epochs and
1 fine-tuning epoch, fixed rates, seed 1) with the default ``--cache-memory-gb``, and
again at ``--low-limit-gb`` (0.2) for ``--low-limit-sizes``, where the decoded images
are memory-mapped from the output folder.

Two memories per run: ``peak_rss_mb`` (the kernel's high-water mark of resident
memory, ``ru_maxrss``), which also counts the pages of a memory-mapped file the process
has read (page cache, which the kernel takes back under pressure), and
``peak_private_mb`` (anonymous and shared-memory pages, ``RssAnon + RssShmem`` sampled
from ``/proc/PID/status`` every 50 ms), what the run cannot give back. The slopes are
least-squares fits over the in-memory runs: MB and ms per photo. JSON out.

``--baseline-repository DIR`` times an older checkout of the project too (a git worktree
of the commit to compare with), with the same command at the same sizes, each old run
right before the new one of its size, so the time ratio comes from one sitting of a
shared, noisy machine (``baseline_runs``, ``baseline_ms_per_photo``,
``seconds_ratio_to_baseline``: new over old, per size and overall).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_scaling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True,
                        help="A folder with train/ and test/ class folders (../shared/data/"
                        "cats_vs_dogs).")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    parser.add_argument("--low-limit-sizes", type=int, nargs="*", default=[1000, 4000])
    parser.add_argument("--low-limit-gb", type=float, default=0.2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--work-dir", help="Where the photo folders and runs go (a "
                        "temporary folder by default).")
    parser.add_argument("--baseline-repository", help="A checkout of an older commit to "
                        "time with the same command at --sizes (in-memory runs only).")
    return parser.parse_args(argv)


def photo_folder(source: str, count: int, destination: str) -> str:
    """``count`` photos, half per class, linked from ``source/train`` under new names."""
    classes = sorted(name for name in os.listdir(os.path.join(source, "train"))
                     if os.path.isdir(os.path.join(source, "train", name)))
    for label in classes:
        folder = os.path.join(source, "train", label)
        photos = sorted(os.listdir(folder))
        target = os.path.join(destination, label)
        os.makedirs(target, exist_ok=True)
        for index in range(count // len(classes)):
            name = photos[index % len(photos)]
            stem, extension = os.path.splitext(name)
            os.symlink(os.path.join(folder, name),
                       os.path.join(target, f"{stem}_copy{index // len(photos)}{extension}"))
    return destination


def private_kilobytes(pid: int) -> int:
    """``RssAnon + RssShmem`` of ``pid`` in kB (0 once it has ended)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
    except OSError:
        return 0
    return sum(int(fields.get(key, "0 kB").split()[0]) for key in ("RssAnon", "RssShmem"))


def measure(arguments: list[str], repository: str = REPOSITORY) -> dict:
    """Run ``arguments`` in ``repository``; its wall seconds, peak RSS and sampled peak
    private memory."""
    started = time.perf_counter()
    process = subprocess.Popen(arguments, cwd=repository, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": repository})
    peak = [0]

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], private_kilobytes(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    return {"returncode": process.returncode, "seconds": round(seconds, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "peak_private_mb": round(peak[0] / 1024, 1),
            "output_tail": output[-1500:] if process.returncode else None}


def slope(xs, ys) -> float | None:
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def main(argv=None) -> int:
    args = parse_arguments(argv)
    work = args.work_dir or tempfile.mkdtemp(prefix="data-scaling-")
    runs, baseline_runs = [], []
    plan = [(size, None) for size in args.sizes] + [(size, args.low_limit_gb)
                                                     for size in args.low_limit_sizes]

    def run_recipe(size, limit, repository=REPOSITORY, name="run"):
        photos = os.path.join(work, f"photos_{size}")
        if not os.path.isdir(photos):
            photo_folder(args.source, size, photos)
        out = os.path.join(work, f"{name}_{size}_{limit or 'default'}")
        command = [sys.executable, "-m", "recipes.cats_vs_dogs", "--data-dir", photos,
                   "--test-dir", os.path.join(args.source, "test"), "--backbone", "MobileNet",
                   "--alpha", "0.25", "--image-size", str(args.image_size), "--head-epochs", "2",
                   "--fine-tune-epochs", "1", "--patience", "0", "--no-find-learning-rates",
                   "--seed", "1", "--output-dir", out]
        if limit is not None:
            command += ["--cache-memory-gb", str(limit)]
        result = {"photos": size, "cache_memory_gb": limit, **measure(command, repository)}
        if result["returncode"] == 0:
            with open(os.path.join(out, "metrics.json"), encoding="utf-8") as handle:
                result["test_accuracy"] = json.load(handle)["test_accuracy"]
        print(json.dumps({name: result}), file=sys.stderr, flush=True)
        return result

    for size, limit in plan:
        if args.baseline_repository and limit is None:
            baseline_runs.append(run_recipe(size, None, args.baseline_repository, "baseline"))
        runs.append(run_recipe(size, limit))
    default = [run for run in runs if run["cache_memory_gb"] is None and run["returncode"] == 0]
    sizes = [run["photos"] for run in default]
    report = {
        "benchmark": "data_scaling", "machine": platform.machine(),
        "cores": os.cpu_count(), "image_size": args.image_size, "runs": runs,
        "mb_per_photo_rss": slope(sizes, [run["peak_rss_mb"] for run in default]),
        "mb_per_photo_private": slope(sizes, [run["peak_private_mb"] for run in default]),
        "ms_per_photo": (None if len(sizes) < 2 else
                         1000 * slope(sizes, [run["seconds"] for run in default])),
    }
    if baseline_runs:
        finished = [(old, new) for old, new in zip(baseline_runs, runs)
                    if old["returncode"] == 0 and new["returncode"] == 0]
        report["baseline_repository"] = args.baseline_repository
        report["baseline_runs"] = baseline_runs
        report["baseline_ms_per_photo"] = (
            None if len(finished) < 2 else 1000 * slope(
                [old["photos"] for old, _ in finished], [old["seconds"] for old, _ in finished]))
        report["seconds_ratio_to_baseline"] = {
            "per_size": {str(new["photos"]): round(new["seconds"] / old["seconds"], 3)
                         for old, new in finished},
            "overall": (None if not finished else round(
                sum(new["seconds"] for _, new in finished)
                / sum(old["seconds"] for old, _ in finished), 3)),
        }
    print(json.dumps(report, indent=2))
    return 0 if all(run["returncode"] == 0 for run in runs + baseline_runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
