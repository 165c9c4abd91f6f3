"""The README's ten-line API example runs as written, on a few real photos."""

import re

from conftest import REPOSITORY, linked_photos


def test_the_readme_api_example_runs(cats_vs_dogs_dir, tmp_path, monkeypatch):
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    [example] = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    linked_photos(cats_vs_dogs_dir, tmp_path / "photos", train=12, test=4)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102
    run = namespace["run"]
    assert set(run.phases) == {"head", "fine_tune"}
    assert 0.0 <= run.scores["val_accuracy"] <= 1.0
    assert (tmp_path / "runs" / "photos" / "model.keras").is_file()
    assert (tmp_path / "runs" / "photos" / "checkpoints" / "fine_tune.done.json").is_file()
