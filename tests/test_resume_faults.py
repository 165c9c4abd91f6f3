"""A run killed or out of disk anywhere resumes to the outputs of an uninterrupted run
(issues 14 and 37).

The cats recipe on a few real photos (decoded into OUTPUT_DIR/cache) is killed
(``os._exit``: nothing cleaned up) at seeded points in turn, and its disk fills at three
more (tests/inject_fault.py). Each ``--resume`` starts from what the previous fault left.
The last one must finish with every output, and with the metrics, learning curves and
weights of a run that was never interrupted.
"""

import json
import subprocess
import sys

import pytest
from conftest import REPOSITORY, linked_photos

INJECT = str(REPOSITORY / "tests" / "inject_fault.py")
OUTPUTS = ("metrics.json", "history.json", "learning_curves.png", "model.keras", "labels.txt",
           "saved_model", "evaluation")


@pytest.fixture
def few_photos(cats_vs_dogs_dir, tmp_path):
    """24 training and 8 test photos per class, linked from the shared set."""
    return linked_photos(cats_vs_dogs_dir, tmp_path / "photos", train=24, test=8)


def recipe_arguments(photos, out):
    return ["recipes.cats_vs_dogs", "--data-dir", str(photos / "train"),
            "--test-dir", str(photos / "test"), "--backbone", "mobilenet", "--alpha", "0.25",
            "--image-size", "96", "--head-epochs", "3", "--fine-tune-epochs", "2",
            "--batch-size", "8", "--seed", "1", "--cache-memory-gb", "0",
            "--output-dir", str(out)]


def run(arguments, env, point=None):
    command = ([sys.executable, INJECT, point] if point else [sys.executable, "-m"]) + arguments
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                          cwd=REPOSITORY)


# Kill points spread over decoding, extraction, the finder, both phases and the writing
# of outputs (tests/inject_fault.py's sites, in the order a run passes them).
KILL_POINTS = ("decoding@10", "decoding@40", "features@2", "finder@5", "head.batch@3",
               "head.epoch@1", "head.before_done@1", "between_phases@1", "fine_tune.batch@2",
               "fine_tune.epoch@1", "fine_tune.before_done@1", "outputs.model@1",
               "outputs.evaluation@1", "outputs.metrics@1")
# Where the disk fills: at an epoch's end (history and backup), as the fine-tuned weights
# are recorded, and as the model is saved.
FULL_POINTS = ("full:head.epoch@1", "full:fine_tune.before_done@1", "full:outputs.model@1")


def fault_sequence(seed: int) -> list[str]:
    """10 kill points chosen with ``seed`` and the 3 disk-full points, in run order."""
    import numpy as np

    chosen = sorted(np.random.default_rng(seed).choice(len(KILL_POINTS), 10, replace=False))
    order = [site for site in (point.split("@")[0] for point in KILL_POINTS)]
    sequence = [KILL_POINTS[index] for index in chosen] + list(FULL_POINTS)
    return sorted(sequence, key=lambda point: (order.index(point.split(":")[-1].split("@")[0]),
                                               point.startswith("full:")))


def test_the_fault_sequence_is_seeded_and_in_run_order():
    assert fault_sequence(1) == fault_sequence(1) and fault_sequence(1) != fault_sequence(2)
    for seed in range(20):
        sequence = fault_sequence(seed)
        assert len(sequence) == 13 and sum(point.startswith("full:") for point in sequence) == 3
        sites = [point.split(":")[-1].split("@")[0] for point in sequence]
        assert sites == sorted(sites, key=[point.split("@")[0] for point in KILL_POINTS].index)


def weights(path):
    import keras

    from templates.training.saving import load_model

    return [keras.ops.convert_to_numpy(weight) for weight in load_model(path).weights]


@pytest.mark.acceptance  # 15 recipe processes
def test_a_run_killed_or_out_of_disk_anywhere_resumes_to_the_uninterrupted_result(
        few_photos, subprocess_env, tmp_path):
    """Issue 37: a small cats run killed at 10 seeded points (decoding into the disk
    cache, feature extraction, the finder, both phases, the outputs) and out of disk at
    3, each time resumed from what the fault left: every fault ends the process (a kill,
    or one sentence for the full disk), nothing is ever written half, and the last
    resume ends with the metrics, history and weights of a run never interrupted."""
    import numpy as np

    reference = tmp_path / "reference"
    result = run(recipe_arguments(few_photos, reference), subprocess_env)
    assert result.returncode == 0, result.stderr[-3000:]

    out = tmp_path / "interrupted"
    arguments = recipe_arguments(few_photos, out)
    for number, point in enumerate(fault_sequence(seed=37)):
        result = run(arguments + (["--resume"] if number else []), subprocess_env, point)
        if point.startswith("full:"):
            assert result.returncode == 2, (point, result.stdout[-2000:], result.stderr[-3000:])
            last = result.stderr.strip().splitlines()[-1]
            assert last.startswith("error: ") and "No space left on device" in last, last
            assert "Traceback" not in result.stderr, (point, result.stderr[-3000:])
        else:
            assert result.returncode == 9, (point, result.stdout[-2000:], result.stderr[-3000:])
        assert not (out / "metrics.json").exists(), point
        assert not list(out.rglob(".tmp-*")) or point.startswith(("outputs", "full:")), point
    result = run(arguments + ["--resume"], subprocess_env)
    assert result.returncode == 0, result.stderr[-3000:]

    for name in OUTPUTS:
        assert (out / name).exists(), name
    expected = json.loads((reference / "metrics.json").read_text())
    resumed = json.loads((out / "metrics.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "head", "fine_tuned", "evaluation",
                "learning_rates", "fine_tuning_kept"):
        assert resumed[key] == expected[key], key
    assert resumed["resumed"]["finished_phases"] == ["head", "fine_tune"]
    assert (json.loads((out / "history.json").read_text())
            == json.loads((reference / "history.json").read_text()))
    for found, wanted in zip(weights(out / "model.keras"), weights(reference / "model.keras")):
        np.testing.assert_array_equal(found, wanted)
