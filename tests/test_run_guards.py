"""A run guards its folder, its data and its checkpoints (issue 37): one test per defect.

Each test builds the bad input or the fault on purpose-built data and checks the one
sentence (or the recovery) that replaces the silent mix, leak or traceback of before.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPOSITORY
from PIL import Image

from templates.data.errors import CookbookError, one_sentence, outside_cause
from templates.data.images import load_csv_splits, load_image_splits, scan_image_folder
from templates.data.texts import load_text_splits, read_text_examples
from templates.training.checkpoints import TrainingState
from templates.training.plan import TransferPlan
from templates.training.run_folder import FolderLock


def photo(path, color, size=(24, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(int(value) for value in color)).save(path)
    return path


def class_folders(root, per_class=6):
    """Two classes of distinct solid-colour photos (no two files alike)."""
    for label, base in (("cats", 0), ("dogs", 128)):
        for index in range(per_class):
            photo(root / label / f"{label}{index}.png", (base + index * 9, 40 + index, 90))
    return root


# 1. Two runs into one --output-dir

HOLD = ("import sys, time; sys.path.insert(0, {root!r});"
        "from templates.training.run_folder import FolderLock;"
        "lock = FolderLock({folder!r}).acquire(); print('held', flush=True); time.sleep(60)")


def test_a_second_run_into_a_folder_in_use_stops_in_one_sentence(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(REPOSITORY),
                                                                 folder=str(tmp_path))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CookbookError, match=rf"is in use by another run \(process "
                                                rf"{holder.pid} on "):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: its file is left, its lock is not.
    assert (tmp_path / ".lock").exists()
    with FolderLock(tmp_path) as lock:
        assert lock.stale["pid"] == holder.pid
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()  # released on exit


def test_the_recipe_takes_the_lock_before_any_work(tmp_path):
    from recipes import cats_vs_dogs

    with FolderLock(tmp_path):
        with pytest.raises(CookbookError, match="is in use by another run"):
            # No such data folder: the lock stops the run before the data is looked at.
            cats_vs_dogs.main(["--data-dir", str(tmp_path / "missing"),
                               "--output-dir", str(tmp_path)])


# 2. --resume with other settings

def test_resume_with_other_settings_names_them_and_epochs_may_grow(tmp_path, capsys):
    plan = TransferPlan(head_epochs=3, fine_tune_epochs=2).to_dict()
    settings = {"backbone": "MobileNet", "image_size": 96, "plan": plan}
    TrainingState(tmp_path, settings=settings)
    TrainingState(tmp_path, resume=True, settings=settings)  # the same run: fine
    with pytest.raises(CookbookError, match=r"image_size 96 -> 128.*backbone 'MobileNet' -> "
                                            r"'EfficientNetB0'|backbone 'MobileNet' -> "
                                            r"'EfficientNetB0'.*image_size 96 -> 128"):
        TrainingState(tmp_path, resume=True,
                      settings={**settings, "image_size": 128, "backbone": "EfficientNetB0"})
    more = {**settings, "plan": {**plan, "fine_tune_epochs": 4}}
    state = TrainingState(tmp_path, resume=True, settings=more)
    assert "plan.fine_tune_epochs grew from 2 to 4" in capsys.readouterr().out
    assert state.notes and json.loads((tmp_path / "settings.json").read_text()) == more
    fewer = {**settings, "plan": {**plan, "head_epochs": 1}}
    with pytest.raises(CookbookError, match="plan.head_epochs 3 -> 1"):
        TrainingState(tmp_path, resume=True, settings=fewer)
    TrainingState(tmp_path, settings=fewer)  # without --resume: a new run, recorded anew
    assert json.loads((tmp_path / "settings.json").read_text()) == fewer
    # A record written before plan.head_epoch_factor existed resumes at factor 1 (what
    # it trained under), and names any other factor.
    earlier = {**settings, "plan": {key: value for key, value in plan.items()
                                    if key != "head_epoch_factor"}}
    TrainingState(tmp_path, settings=earlier)
    TrainingState(tmp_path, resume=True, settings=settings)
    TrainingState(tmp_path, settings=earlier)
    with pytest.raises(CookbookError, match="plan.head_epoch_factor 1 -> 4"):
        TrainingState(tmp_path, resume=True, settings={
            **settings, "plan": {**plan, "head_epoch_factor": 4}})


# 3. Splits that leak

def test_repeated_csv_rows_collapse_and_two_labels_are_refused_with_line_numbers(tmp_path):
    class_folders(tmp_path / "photos")
    rows = ["path,label"]
    for label in ("cats", "dogs"):
        for index in range(6):
            rows += [f"photos/{label}/{label}{index}.png,{label}"] * (5 if index < 2 else 1)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    for seed in (1, 2, 3):
        splits = load_csv_splits(tmp_path / "labels.csv", seed=seed, validation_fraction=0.2)
        parts = [splits.train.files, splits.validation.files, splits.test.files]
        assert sum(map(len, parts)) == 12 and len(set().union(*map(set, parts))) == 12
    assert any("16 repeated rows of 4 photos collapsed" in note for note in splits.notes)
    assert "16 repeated rows" in splits.describe(tmp_path)

    (tmp_path / "labels.csv").write_text("\n".join(rows + ["photos/cats/cats3.png,dogs"]) + "\n")
    with pytest.raises(CookbookError, match=r"cats3.png is listed under two labels, 'cats' "
                                            r"and 'dogs' \(lines 13, 30\)"):
        load_csv_splits(tmp_path / "labels.csv")
    merged = load_csv_splits(tmp_path / "labels.csv", multi_label=True, seed=1)
    everything = {file: label for part in (merged.train, merged.validation, merged.test)
                  for file, label in zip(part.files, part.labels)}
    assert everything[str(tmp_path / "photos/cats/cats3.png")] == [1.0, 1.0]


def test_a_photo_copied_into_the_test_set_leaves_training(tmp_path):
    train = class_folders(tmp_path / "train")
    test = tmp_path / "test"
    photo(test / "cats" / "t0.png", (1, 2, 3))
    photo(test / "dogs" / "t1.png", (4, 5, 6))
    # Other names, same bytes: a training photo copied into the test set, a test photo
    # copied into training.
    (test / "cats" / "renamed.png").write_bytes((train / "cats" / "cats0.png").read_bytes())
    (train / "dogs" / "extra.png").write_bytes((test / "dogs" / "t1.png").read_bytes())
    for seed in (1, 2, 3):
        splits = load_image_splits(train, test, validation_fraction=0.25, seed=seed)
        assert len(splits.test.files) == 3  # the test set is never changed
        digests = {}
        for name, part in (("train", splits.train), ("validation", splits.validation),
                           ("test", splits.test)):
            for file in part.files:
                digests.setdefault((tmp_path / file).read_bytes(), set()).add(name)
        assert all(len(names) == 1 for names in digests.values())
        left = [item for item in splits.skipped if "the same photo" in item.reason]
        assert sorted(os.path.basename(item.path) for item in left) == ["cats0.png",
                                                                        "extra.png"]
    assert "the same photo (by content) as the test set's" in splits.describe(train)


def test_texts_in_two_splits_are_counted_and_one_file_cannot_be_two_splits(tmp_path):
    (tmp_path / "train.txt").write_text("pos good film\nneg bad film\npos great\nneg awful\n")
    (tmp_path / "test.txt").write_text("pos great\nneg dull\n")
    (tmp_path / "dev.txt").write_text("neg bad film\npos fine\n")
    splits = load_text_splits(tmp_path / "train.txt", tmp_path / "dev.txt",
                              tmp_path / "test.txt")
    assert splits.notes == [
        f"1 of the 2 validation texts also appear word for word in an earlier split (kept: "
        f"{tmp_path / 'dev.txt'}).",
        f"1 of the 2 test texts also appear word for word in an earlier split (kept: "
        f"{tmp_path / 'test.txt'})."]
    assert "note: 1 of the 2 test texts" in splits.describe()
    with pytest.raises(CookbookError, match=r"train.txt is given as both the train and the "
                                            r"test texts"):
        load_text_splits(tmp_path / "train.txt", tmp_path / "dev.txt", tmp_path / "train.txt")


# 4 and 9. Numbers checked at the door

@pytest.mark.parametrize("flags, message", [
    (["--learning-rate", "inf"], "argument --learning-rate: must be a finite number > 0"),
    (["--fine-tune-learning-rate", "nan"], "must be a finite number"),
    (["--image-size", "10000"], "argument --image-size: must be a finite number >= 32 and "
                                "<= 1024; got 10000"),
    (["--image-size", "0"], "argument --image-size: must be a finite number >= 32"),
    (["--cache-memory-gb", "inf"], "argument --cache-memory-gb"),
    (["--label-smoothing", "1"], "argument --label-smoothing"),
    (["--batch-size", "0"], "argument --batch-size"),
])
def test_numbers_out_of_range_stop_the_parser(flags, message, capsys):
    from recipes import cats_vs_dogs

    with pytest.raises(SystemExit) as stopped:
        cats_vs_dogs.parse_arguments(flags)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_the_plan_refuses_infinite_rates_and_an_empty_budget():
    with pytest.raises(CookbookError, match=r"learning rates must be finite and in \(0, 1\]"):
        TransferPlan(learning_rate=float("inf"))
    with pytest.raises(CookbookError, match="both 0: nothing would be trained"):
        TransferPlan(head_epochs=0, fine_tune_epochs=0)
    with pytest.raises(CookbookError, match="discriminative_factor"):
        TransferPlan(discriminative_factor=float("nan"))


# 5 and 10. Faults: a full disk, a read-only folder, a path that is a file

def test_a_full_disk_names_the_file_and_leaves_the_last_complete_one(tmp_path, monkeypatch):
    from templates.data import files

    target = tmp_path / "epochs.json"
    files.write_json(target, {"epoch": 1})

    def full(source, destination):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), source)

    monkeypatch.setattr(files.os, "replace", full)
    with pytest.raises(CookbookError, match=rf"Could not write {target}: No space left on "
                                            rf"device; the files written before it are "
                                            rf"intact.*--resume"):
        files.write_json(target, {"epoch": 2})
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert [path.name for path in tmp_path.iterdir()] == ["epochs.json"]  # no temporary


def test_errors_from_outside_get_one_line_and_bugs_keep_their_traceback(tmp_path, capsys):
    from templates import cli

    def raising(error):
        def main(argv):
            raise error
        return main

    (tmp_path / "a_file").write_text("")
    cases = [
        (OSError(errno.ENOSPC, "No space left on device", "out/model.keras"),
         "error: out/model.keras: No space left on device; the files written before it are "
         "intact: once the cause is gone, a recipe run continues with --resume.\n"),
        (RuntimeError("ResourceExhaustedError: out/saved_model; No space left on device"),
         "error: No space left on device (RuntimeError: "),
    ]
    for error, expected in cases:
        with pytest.raises(SystemExit) as stopped:
            cli.run_main(raising(error))
        assert stopped.value.code == 2
        assert capsys.readouterr().err.startswith(expected)
    with pytest.raises(SystemExit) as stopped:
        cli.run_main(lambda argv: FolderLock(tmp_path / "a_file" / "out").acquire())
    assert stopped.value.code == 2 and capsys.readouterr().err == (
        f"error: Cannot use {tmp_path / 'a_file' / 'out'} as the output folder: Not a "
        f"directory.\n")
    # A ValueError raised inside NumPy by a bug goes on up, to Python's traceback.
    with pytest.raises(ValueError, match="cannot reshape"):
        cli.run_main(lambda argv: np.zeros(3).reshape(2, 2))
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_folder_that_cannot_be_written_is_named(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere a user can: /sys refuses even root
        target, reason = pathlib.Path("/sys/transfer-cookbook-run"), "Operation not permitted"
    else:
        tmp_path.chmod(0o500)
        target, reason = tmp_path / "run", "Permission denied"
    try:
        with pytest.raises(CookbookError, match=rf"Cannot use {target} as the output "
                                                rf"folder: {reason}\."):
            FolderLock(target).acquire()
    finally:
        tmp_path.chmod(0o700)


def test_outside_causes_are_told_from_bugs():
    assert outside_cause(OSError(errno.EROFS, "Read-only file system", "x"))
    assert one_sentence(OSError(errno.EROFS, "Read-only file system", "x")).startswith(
        "x: Read-only file system; the files written before it are intact")
    assert one_sentence(OSError(errno.ENOENT, "No such file or directory", "y")) == (
        "y: No such file or directory.")
    assert not outside_cause(ValueError("cannot reshape array of size 3 into shape (2,2)"))
    assert not outside_cause(OSError("Unable to synchronously open file (bad symbol table)"))


# 6. Text files read line by line

def test_the_separator_is_decided_per_line(tmp_path):
    lines = [f"{'pos' if i % 2 else 'neg'} sentence number {i}" for i in range(20)]
    lines[3] = "pos\ta line with a tab"        # one tab line in a space-separated file
    lines[5] = "pos a tab\tinside the text"    # a tab after the first space: part of the text
    lines[7] = "lonely"                        # fits neither: skipped, counted, shown
    (tmp_path / "mixed.txt").write_text("\n".join(lines) + "\n")
    examples = read_text_examples(tmp_path / "mixed.txt")
    assert len(examples) == 19 and set(examples.labels) == {"pos", "neg"}
    assert "a line with a tab" in examples.texts and "a tab\tinside the text" in examples.texts
    assert examples.skipped == [("line 8", "no text")]
    (tmp_path / "tabs.txt").write_text("very good\tI liked it\nbad\tI did not\n")
    assert read_text_examples(tmp_path / "tabs.txt").labels == ["very good", "bad"]


# 7. Class names checked before training

@pytest.mark.parametrize("name", ["do\ngs", "do\rgs", "do\x0bgs"])
def test_class_names_that_break_labels_txt_are_refused_when_read(tmp_path, name):
    root = class_folders(tmp_path / "photos")
    (root / "dogs").rename(root / name)
    with pytest.raises(CookbookError, match=r"class names must be one visible line each.*"
                                            r"holds a line break"):
        scan_image_folder(root)
    if name == "do\x0bgs":  # a line of a text file can hold only this one
        (tmp_path / "texts.txt").write_text(f"cats\tone\n{name}\ttwo\n")
        (tmp_path / "other.txt").write_text("cats\tthree\n")
        (tmp_path / "third.txt").write_text("cats\tfour\n")
        with pytest.raises(CookbookError, match="class names must be one visible line"):
            load_text_splits(tmp_path / "texts.txt", tmp_path / "other.txt",
                             tmp_path / "third.txt")


# 8. A corrupt checkpoint

def test_a_damaged_checkpoint_is_named_and_its_phase_trains_again(tmp_path, capsys):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    state = TrainingState(tmp_path)
    state.finish("head", model)
    state.finish("fine_tune", model)
    weights = tmp_path / "head.weights.h5"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    (tmp_path / "fine_tune.epochs.json").write_text("{garbage")
    resumed = TrainingState(tmp_path, resume=True)
    out = capsys.readouterr().out
    assert f"{weights} is damaged (" in out and "'head' starts again from its beginning" in out
    assert f"{tmp_path / 'fine_tune.epochs.json'} is damaged" in out
    assert not resumed.finished("head") and not resumed.finished("fine_tune")
    assert len(resumed.notes) == 2


def test_a_damaged_settings_record_names_its_file(tmp_path):
    TrainingState(tmp_path, settings={"image_size": 96})
    (tmp_path / "settings.json").write_text("not json")
    with pytest.raises(CookbookError, match=rf"{tmp_path / 'settings.json'} is not valid JSON"):
        TrainingState(tmp_path, resume=True, settings={"image_size": 96})


# The smaller defects

def test_an_unquoted_comma_and_paths_outside_the_csv_folder_are_counted(tmp_path):
    root = class_folders(tmp_path / "photos")
    (tmp_path / "csv").mkdir()
    rows = ["path,label"] + [f"../photos/{label}/{label}{index}.png,{label}"
                             for label in ("cats", "dogs") for index in range(6)]
    rows.append(f"{root / 'cats' / 'cats0.png'},big, fluffy cats")
    (tmp_path / "csv" / "labels.csv").write_text("\n".join(rows) + "\n")
    splits = load_csv_splits(tmp_path / "csv" / "labels.csv", seed=1)
    assert any("3 fields where the header has 2" in item.reason for item in splits.skipped)
    assert any("12 paths lead outside the CSV's folder" in note for note in splits.notes)


def test_the_predictor_names_bad_inputs_and_classifies_the_others(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    model.save(tmp_path / "model.keras")
    (tmp_path / "labels.txt").write_text("cats\ndogs\n")
    good = [photo(tmp_path / "in" / f"{index}.png", (index * 40, 10, 10)) for index in range(3)]
    (tmp_path / "in" / "empty.png").write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "recipes.predict", str(tmp_path),
                             str(tmp_path / "in")], capture_output=True, text=True,
                            timeout=300, cwd=REPOSITORY)
    assert result.returncode == 0, result.stderr
    assert "empty file (0 bytes)" in result.stdout and "skipped" in result.stdout
    assert sum(line.strip().startswith(("cats", "dogs")) for line in
               result.stdout.splitlines()) == len(good)
    assert "Classified 3 of 4 inputs; skipped 1" in result.stdout

    (tmp_path / "model.keras").write_bytes(b"")
    from templates.export.predictor import Predictor

    with pytest.raises(CookbookError, match=r"model.keras is not a Keras model file: a "
                                            r".keras file is a zip archive, and this one "
                                            r"\(0 bytes\)"):
        Predictor(tmp_path)


def test_an_undecodable_text_file_is_named_and_the_others_still_read(tmp_path):
    from recipes.predict import _texts

    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (tmp_path / "fine.txt").write_text("a fine film\nanother one\n")
    texts, unreadable = _texts([str(tmp_path / "latin.txt"), str(tmp_path / "fine.txt")],
                               ["typed"])
    assert texts == ["typed", "a fine film", "another one"]
    assert unreadable == [f"{tmp_path / 'latin.txt'}: bytes that are not valid UTF-8 at "
                          f"byte 3 (invalid continuation byte); save it as UTF-8"]
