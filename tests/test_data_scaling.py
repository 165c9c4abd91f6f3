"""Memory that does not grow with the data set (issue 27): decoded images and cached
features beyond their limits go to memory-mapped files, long steps show progress, and a
run killed after decoding resumes without decoding again."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPOSITORY

from templates.data.batches import array_batches
from templates.data.feature_store import FeatureStore
from templates.data.progress import Progress


def test_features_spill_to_a_memory_map_beyond_the_limit_and_read_the_same(tmp_path):
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 6)).astype("float32") for n in (5, 7, 3, 8)]
    in_memory, on_disk = FeatureStore(None), FeatureStore(100 / 1e9, directory=tmp_path)
    for batch in batches:
        in_memory.append(batch)
        on_disk.append(batch)
    assert not in_memory.on_disk and on_disk.on_disk
    kept, mapped = in_memory.rows(), on_disk.rows()
    assert isinstance(mapped, np.memmap) and not isinstance(kept, np.memmap)
    np.testing.assert_array_equal(mapped, np.concatenate(batches))
    np.testing.assert_array_equal(kept, mapped)
    labels = np.arange(len(kept)) % 2
    # The head's batches read the file batch by batch, in the in-memory run's order.
    first = [np.asarray(x) for x, _ in array_batches(kept, labels, 4, seed=3)]
    second = [np.asarray(x) for x, _ in array_batches(mapped, labels, 4, seed=3)]
    assert len(first) == len(second) == 6
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="Rows of shape"):
        on_disk.append(np.zeros((2, 5), "float32"))
    # The file has no name from the start (the open handle keeps it): a run killed
    # mid-way leaves nothing behind; rows appended after a read are read too.
    if os.name == "posix":
        assert os.listdir(tmp_path) == []
    on_disk.append(batches[0])
    np.testing.assert_array_equal(on_disk.rows(), np.concatenate(batches + batches[:1]))
    np.testing.assert_array_equal(mapped, np.concatenate(batches))


def test_progress_prints_a_line_per_tenth_in_a_log_and_redraws_in_a_terminal():
    log = io.StringIO()
    progress = Progress("Decoding train images", "images", stream=log, live=False)
    for done in range(0, 1001, 7):
        progress(done, 1000)
    progress(1000, 1000)
    lines = log.getvalue().splitlines()
    assert len(lines) == 10, lines
    assert lines[0].startswith("Decoding train images: ") and "(10%)" in lines[0]
    assert "left" in lines[0] and "/s" in lines[0]
    assert lines[-1].startswith("Decoding train images: 1000/1000 images (100%)")
    terminal = io.StringIO()
    live = Progress("Extracting", "batches", stream=terminal, live=True)
    for done in range(1, 5):
        live(done, 4)
    assert terminal.getvalue().count("\r") == 4 and terminal.getvalue().endswith("\n")
    quiet = io.StringIO()
    Progress("Small", stream=quiet, live=False, minimum_total=500)(10, 10)
    assert quiet.getvalue() == ""


@pytest.mark.acceptance  # two recipe runs on 1,750 photos
def test_a_run_killed_in_feature_extraction_resumes_without_decoding_again(
        cats_vs_dogs_dir, subprocess_env, tmp_path):
    """--cache-memory-gb 0 puts every decoded image in OUTPUT_DIR/cache (and the cached
    features in a file); killed during
    feature extraction (after its sixth batch: tests/inject_fault.py), the resumed run
    maps the finished files instead of decoding them again, shows the extraction's
    progress lines, and removes the cache at the end."""
    out = tmp_path / "out"
    arguments = ["recipes.cats_vs_dogs", "--data-dir",
                 str(cats_vs_dogs_dir / "train"), "--test-dir", str(cats_vs_dogs_dir / "test"),
                 "--backbone", "MobileNet", "--alpha", "0.25", "--image-size", "96",
                 "--head-epochs", "2", "--fine-tune-epochs", "1", "--no-find-learning-rates",
                 "--cache-memory-gb", "0", "--seed", "1", "--output-dir", str(out)]
    manifests = {split: out / "cache" / f"decoded_{split}_96px.npy.json"
                 for split in ("train", "validation", "test")}

    killed = subprocess.run([sys.executable, str(REPOSITORY / "tests" / "inject_fault.py"),
                             "features.mid_extraction", *arguments], env=subprocess_env,
                            capture_output=True, text=True, timeout=900, cwd=REPOSITORY)
    assert killed.returncode == 9, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert "Extracting the training set's features" in killed.stdout  # killed inside it
    assert "(100%)" not in killed.stdout.split("Extracting the training set's")[-1]
    for path in manifests.values():  # every image was decoded before the kill
        manifest = json.loads(path.read_text())
        assert manifest["decoded"] == manifest["shape"][0], (path, manifest)
    assert not (out / "metrics.json").exists()

    resumed = subprocess.run([sys.executable, "-m", *arguments, "--resume"], env=subprocess_env,
                             capture_output=True, text=True, timeout=900, cwd=REPOSITORY)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Decoding train images" not in resumed.stdout  # the finished cache was reused
    assert "memory-mapped from" in resumed.stdout
    # --cache-memory-gb bounds the features too: at 0 they go to a file from the first row.
    assert "Cached features past 0 GB in memory: memory-mapped from" in resumed.stdout
    extraction = [line for line in resumed.stdout.splitlines()
                  if line.startswith("Extracting the training set's features: ")]
    assert 5 <= len(extraction) <= 10 and "(100%)" in extraction[-1], extraction
    assert not (out / "cache").exists()  # removed once the run finished
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["test_accuracy"] <= 1.0
