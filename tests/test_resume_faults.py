"""A run killed at any boundary resumes to the outputs of an uninterrupted run (issue 14).

The cats recipe on a few real photos is killed (``os._exit``: nothing cleaned up) at each
boundary in turn: mid-epoch and after the last epoch of each phase (before the phase is
marked done), between the phases, and while the outputs are written. Each ``--resume``
starts from what the previous kill left. The last one must finish with every output,
and with the metrics and learning curves of a run that was never interrupted.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPOSITORY

INJECT = str(REPOSITORY / "tests" / "inject_fault.py")
OUTPUTS = ("metrics.json", "history.json", "learning_curves.png", "model.keras", "labels.txt",
           "saved_model", "evaluation")


@pytest.fixture
def few_photos(cats_vs_dogs_dir, tmp_path):
    """24 training and 8 test photos per class, linked from the shared set."""
    root = tmp_path / "photos"
    for split, count in (("train", 24), ("test", 8)):
        for label in ("cats", "dogs"):
            folder = root / split / label
            folder.mkdir(parents=True)
            source = cats_vs_dogs_dir / split / label
            for name in sorted(os.listdir(source))[:count]:
                os.symlink(source / name, folder / name)
    return root


def recipe_arguments(photos, out):
    return ["recipes.cats_vs_dogs", "--data-dir", str(photos / "train"),
            "--test-dir", str(photos / "test"), "--backbone", "mobilenet", "--alpha", "0.25",
            "--image-size", "96", "--epochs", "3", "--fine-tune-epochs", "2",
            "--batch-size", "8", "--seed", "1", "--output-dir", str(out)]


def run(arguments, env, point=None):
    command = ([sys.executable, INJECT, point] if point else [sys.executable, "-m"]) + arguments
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                          cwd=REPOSITORY)


@pytest.mark.acceptance  # eight recipe processes: the full run, not the fast tier
def test_a_run_killed_at_every_boundary_resumes_to_the_uninterrupted_result(
        few_photos, subprocess_env, tmp_path):
    reference = tmp_path / "reference"
    result = run(recipe_arguments(few_photos, reference), subprocess_env)
    assert result.returncode == 0, result.stderr[-3000:]

    out = tmp_path / "interrupted"
    arguments = recipe_arguments(few_photos, out)
    for number, point in enumerate(("head.mid_epoch", "head.before_done", "between_phases",
                                    "fine_tune.mid_epoch", "fine_tune.before_done",
                                    "outputs")):
        result = run(arguments + (["--resume"] if number else []), subprocess_env, point)
        assert result.returncode == 9, (point, result.stdout[-2000:], result.stderr[-3000:])
        assert not (out / "metrics.json").exists(), point
        if point == "fine_tune.before_done":
            # Killed during fine-tuning before: this run says what it restored.
            assert "resumed from" in result.stdout, result.stdout[-2000:]
            assert "head restored; fine_tune continues from its epoch" in result.stdout
    result = run(arguments + ["--resume"], subprocess_env)
    assert result.returncode == 0, result.stderr[-3000:]

    for name in OUTPUTS:
        assert (out / name).exists(), name
    expected = json.loads((reference / "metrics.json").read_text())
    resumed = json.loads((out / "metrics.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "head", "fine_tuned", "evaluation"):
        assert resumed[key] == expected[key], key
    # metrics.json records what the last run restored; the uninterrupted run restored nothing.
    assert "resumed" not in expected
    assert resumed["resumed"]["finished_phases"] == ["head", "fine_tune"]
    assert (json.loads((out / "history.json").read_text())
            == json.loads((reference / "history.json").read_text()))
