"""Learning-curve records and atomic writes."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from templates.data.files import atomic_path, write_json
from templates.reports.curves import plot_learning_curves
from templates.training.history import merge_histories


def test_merge_histories_numbers_epochs_across_phases():
    merged = merge_histories([
        ("head", {"accuracy": [0.5, 0.7], "val_accuracy": [0.6, 0.8]}),
        ("fine-tuning", {"accuracy": [0.9], "val_accuracy": [0.85], "learning_rate": [1e-5]}),
    ])
    assert merged["epoch"] == [1, 2, 3]
    assert merged["phase"] == ["head", "head", "fine-tuning"]
    assert merged["accuracy"] == [0.5, 0.7, 0.9]
    assert merged["learning_rate"] == [None, None, 1e-5]
    json.dumps(merged)  # JSON-ready


def test_learning_curve_plot_is_a_png_with_both_panels(tmp_path):
    history = merge_histories([
        ("head", {"accuracy": [0.5, 0.7], "val_accuracy": [0.6, 0.8],
                  "loss": [0.9, 0.6], "val_loss": [0.8, 0.5]}),
        ("fine-tuning", {"accuracy": [0.9], "val_accuracy": [0.85],
                         "loss": [0.3], "val_loss": [0.35]}),
    ])
    path = plot_learning_curves(history, tmp_path / "curves.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height > 200
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.9})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            with open(temporary, "w") as handle:
                handle.write('{"accuracy": 0.')  # a crash mid-write
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
