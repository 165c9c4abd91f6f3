"""benchmarks.seeds: a recipe over seeds, the table every published figure comes from."""

import json

import pytest

from benchmarks.seeds import main, summary

FAKE_RECIPE = '''
import argparse, json, os
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int)
parser.add_argument("--output-dir")
parser.add_argument("--offset", type=float, default=0.0)
args = parser.parse_args()
os.makedirs(args.output_dir, exist_ok=True)
with open(os.path.join(os.path.dirname(args.output_dir), "calls.txt"), "a") as calls:
    calls.write(f"{args.seed}\\n")
accuracy = 0.8 + args.seed / 100 + args.offset
json.dump({"test_accuracy": accuracy, "val_accuracy": accuracy - 0.01,
           "pretrained": {"test_accuracy": accuracy},
           "scratch": {"test_accuracy": accuracy - 0.02 * args.seed}},
          open(os.path.join(args.output_dir, "metrics.json"), "w"))
'''


def test_summary_is_mean_sample_spread_and_range():
    table = summary([0.8, 0.82, 0.84])
    assert table["mean"] == pytest.approx(0.82) and table["std"] == pytest.approx(0.02)
    assert (table["min"], table["max"]) == (0.8, 0.84)


def test_runs_every_seed_once_and_tabulates_the_recipe_figures(tmp_path, monkeypatch, capsys):
    (tmp_path / "fake_recipe.py").write_text(FAKE_RECIPE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    out = tmp_path / "runs"
    arguments = ["fake_recipe", "--seeds", "1", "2", "3", "--output-dir", str(out), "--",
                 "--offset", "0.05"]
    assert main(arguments) == 0
    table = json.loads((out / "seeds.json").read_text())
    assert table["test_accuracy"]["values"] == [0.86, 0.87, 0.88]
    assert table["gain_over_scratch"]["mean"] == pytest.approx(0.04)
    assert json.loads(capsys.readouterr().out) == table
    # A second call reads the finished seeds instead of running them again.
    assert main(arguments) == 0
    assert (out / "calls.txt").read_text().split() == ["1", "2", "3"]
    with pytest.raises(SystemExit):
        main(["fake_recipe", "--seeds", "1", "--output-dir", str(out), "--", "--seed", "4"])
