"""Image folders: bad files are skipped and reported, odd formats converted, never a crash."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from PIL import Image

from templates.data.decoded_images import load_image
from templates.data.images import (
    image_dataset,
    load_image_splits,
    read_labels_csv,
    scan_image_folder,
    split_folder,
)


def save(path, mode="RGB", size=(20, 16), color=(200, 30, 30), image_format=None, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=image_format, **options)
    return path


def plant_messy_folder(root):
    """Every kind of file a real class folder holds, good and bad."""
    cats, dogs = root / "cats", root / "dogs"
    good = {
        "jpeg": save(cats / "rgb.jpg"),
        "grayscale": save(cats / "gray.png", "L", color=128),
        "rgba": save(cats / "alpha.png", "RGBA", color=(10, 20, 30, 0)),
        "cmyk": save(cats / "cmyk.jpg", "CMYK", color=(255, 0, 0, 0)),  # cyan
        "png16": save(dogs / "deep.png", "I;16", color=65535),
        "gif": save(dogs / "anim.gif", "P", color=3),
        "bmp": save(dogs / "old.bmp"),
        "webp": save(dogs / "new.webp"),
        "tiny": save(dogs / "tiny.png", size=(1, 1)),
        "non_ascii": save(dogs / "chien-été-犬.jpg"),
    }
    truncated = cats / "truncated.jpg"
    data = (cats / "rgb.jpg").read_bytes()
    save(truncated, size=(300, 300), color=(1, 2, 3))
    truncated.write_bytes(truncated.read_bytes()[: len(data) // 2])
    (cats / "empty.jpg").write_bytes(b"")
    (cats / "notes.jpg").write_text("this is not a photo")
    (dogs / "readme.txt").write_text("class description")
    return good


def test_bad_files_are_skipped_and_reported(tmp_path):
    good = plant_messy_folder(tmp_path)
    folder = scan_image_folder(tmp_path)
    assert folder.class_names == ["cats", "dogs"]
    assert sorted(folder.files) == sorted(str(path) for path in good.values())
    reasons = {path.rsplit("/", 1)[-1]: reason for path, reason in
               ((s.path, s.reason) for s in folder.skipped)}
    assert set(reasons) == {"truncated.jpg", "empty.jpg", "notes.jpg", "readme.txt"}
    assert "0 bytes" in reasons["empty.jpg"]
    assert "truncated" in reasons["truncated.jpg"].lower()
    assert "not an image" in reasons["notes.jpg"]
    assert "extension" in reasons["readme.txt"]


def test_every_readable_format_becomes_8_bit_rgb(tmp_path):
    good = plant_messy_folder(tmp_path)
    for kind, path in good.items():
        array = load_image(path, (8, 10))
        assert array.shape == (8, 10, 3) and array.dtype == np.uint8, kind
    # Conversions keep the content: white 16-bit is white, transparent is white,
    # gray stays gray, CMYK cyan becomes red-less.
    assert load_image(good["png16"], (4, 4)).min() == 255
    assert load_image(good["rgba"], (4, 4)).min() == 255
    assert set(np.unique(load_image(good["grayscale"], (4, 4)))) == {128}
    cmyk = load_image(good["cmyk"], (4, 4)).astype(int)
    assert cmyk[..., 0].mean() < 60 and cmyk[..., 2].mean() > 200


def test_dataset_batches_have_the_right_shapes_and_labels(tmp_path):
    plant_messy_folder(tmp_path)
    folder = scan_image_folder(tmp_path)
    dataset = image_dataset(folder, 24, batch_size=4)
    images, labels = [], []
    for batch_images, batch_labels in dataset:
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (len(folder.files), 24, 24, 3)
    assert images.dtype == np.float32 and 0 <= images.min() and images.max() <= 255
    np.testing.assert_array_equal(labels, folder.labels)


def test_empty_and_single_class_folders_are_clear_errors(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "dogs").mkdir(parents=True)
    with pytest.raises(ValueError, match="No usable images"):
        scan_image_folder(tmp_path / "empty")
    save(tmp_path / "single" / "cats" / "a.jpg")
    (tmp_path / "single" / "dogs").mkdir(parents=True)
    (tmp_path / "single" / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(ValueError, match="at least 2 class"):
        scan_image_folder(tmp_path / "single")
    with pytest.raises(ValueError, match="does not exist"):
        scan_image_folder(tmp_path / "missing")


def make_classes(root, count=10):
    """Red cats and blue dogs, every photo a shade of its own (the loaders leave out a
    photo whose bytes are also in another split)."""
    shade = zlib.crc32(str(root).encode()) % 200
    for name, color in (("cats", (250, 0, shade)), ("dogs", (shade, 0, 250))):
        for index in range(count):
            save(root / name / f"{name}{index}.png", color=(color[0], index * 5, color[2]))


def test_layouts_are_detected(tmp_path):
    make_classes(tmp_path / "flat")
    flat = load_image_splits(tmp_path / "flat", validation_fraction=0.2, seed=3)
    assert flat.layout.startswith("class folders")
    assert len(flat.train.files) == 16 and len(flat.validation.files) == 4
    assert flat.validation.counts() == {"cats": 2, "dogs": 2}
    assert not set(flat.train.files) & set(flat.validation.files)
    assert flat.test is None

    make_classes(tmp_path / "tv" / "train")
    make_classes(tmp_path / "tv" / "validation", 3)
    make_classes(tmp_path / "tv" / "test", 2)
    split = load_image_splits(tmp_path / "tv")
    assert split.layout == "train/validation"
    assert len(split.validation.files) == 6 and len(split.test.files) == 4

    make_classes(tmp_path / "tt" / "train")
    make_classes(tmp_path / "tt" / "test", 2)
    split = load_image_splits(tmp_path / "tt", seed=1)
    assert split.layout.startswith("train (validation split")
    assert len(split.test.files) == 4 and len(split.validation.files) == 4


def test_split_is_reproducible_for_a_seed(tmp_path):
    make_classes(tmp_path)
    folder = scan_image_folder(tmp_path)
    first = split_folder(folder, 0.3, seed=5)[1].files
    assert split_folder(folder, 0.3, seed=5)[1].files == first
    assert split_folder(folder, 0.3, seed=6)[1].files != first


def test_test_folder_with_unknown_class_is_refused(tmp_path):
    make_classes(tmp_path / "train")
    save(tmp_path / "test" / "birds" / "b.png")
    with pytest.raises(ValueError, match="birds"):
        load_image_splits(tmp_path, test_dir=tmp_path / "test")


def png_header_claiming(width, height):
    """A PNG whose header claims ``width x height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_large_images_are_resized_and_bombs_refused(tmp_path):
    big = save(tmp_path / "cats" / "big.jpg", size=(4000, 3000), color=(10, 200, 10))
    save(tmp_path / "dogs" / "d.png")
    (tmp_path / "dogs" / "bomb.png").write_bytes(png_header_claiming(20000, 20000))
    folder = scan_image_folder(tmp_path)
    assert str(big) in folder.files
    image = load_image(str(big), (32, 24))
    assert image.shape == (32, 24, 3) and image.dtype == np.uint8
    assert abs(int(image[..., 1].mean()) - 200) <= 3
    [bomb] = folder.skipped
    assert bomb.path.endswith("bomb.png") and "too large" in bomb.reason


def test_symlink_loops_are_skipped_not_followed(tmp_path):
    import os

    cats = tmp_path / "cats"
    save(cats / "c.png")
    save(tmp_path / "dogs" / "d.png")
    os.symlink(cats, cats / "loop")  # a folder that contains itself
    os.symlink(cats / "b.jpg", cats / "a.jpg")  # a.jpg -> b.jpg -> a.jpg
    os.symlink(cats / "a.jpg", cats / "b.jpg")
    folder = scan_image_folder(tmp_path)
    assert [os.path.basename(path) for path in folder.files] == ["c.png", "d.png"]
    reasons = {os.path.basename(s.path): s.reason for s in folder.skipped}
    assert set(reasons) == {"a.jpg", "b.jpg"}
    assert all("symbolic links" in reason for reason in reasons.values())


def test_unreadable_files_are_skipped_and_reported(tmp_path):
    """Permission denied is reported like any other unreadable file.

    Root reads everything, so as root the scan runs with the effective user ``nobody``
    (in a world-readable temporary folder).
    """
    import os
    import pathlib
    import shutil
    import tempfile

    as_root = os.geteuid() == 0
    root = pathlib.Path(tempfile.mkdtemp(dir="/tmp" if as_root else tmp_path))
    try:
        save(root / "cats" / "c.png")
        locked = save(root / "cats" / "locked.png")
        save(root / "dogs" / "d.png")
        for folder in (root, root / "cats", root / "dogs"):
            os.chmod(folder, 0o755)
        os.chmod(locked, 0o000)
        if as_root:
            os.seteuid(65534)
        try:
            folder = scan_image_folder(root)
        finally:
            if as_root:
                os.seteuid(0)
        assert sorted(os.path.basename(path) for path in folder.files) == ["c.png", "d.png"]
        assert [(s.path, s.reason) for s in folder.skipped] == [
            (str(locked), f"cannot decode: [Errno 13] Permission denied: '{locked}'")]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_class_folders_differing_in_case(tmp_path):
    save(tmp_path / "train" / "cats" / "c.png")
    save(tmp_path / "train" / "dogs" / "d.png")
    save(tmp_path / "test" / "Cats" / "c.png", color=(1, 2, 3))
    save(tmp_path / "test" / "DOGS" / "d.png", color=(4, 5, 6))
    splits = load_image_splits(tmp_path / "train", test_dir=tmp_path / "test")
    assert splits.test.class_names == ["cats", "dogs"]  # the training names and labels
    assert [path.rsplit("/", 2)[-2] for path in splits.test.files] == ["Cats", "DOGS"]
    assert splits.test.labels == [0, 1]

    save(tmp_path / "clash" / "cats" / "a.png")
    save(tmp_path / "clash" / "Cats" / "b.png")
    save(tmp_path / "clash" / "dogs" / "c.png")
    with pytest.raises(ValueError, match="differ only in case: Cats / cats"):
        scan_image_folder(tmp_path / "clash")


def test_labels_in_a_csv_file_bad_rows_skipped_and_named(tmp_path):
    photos = tmp_path / "photos"
    rows = ["Label,Path"]  # any column order and case
    for index in range(10):
        for name, colour in (("cat", (200, 30 + index, 30)), ("dog", (30, 30 + index, 200))):
            save(photos / f"{name}{index}.png", color=colour)
            rows.append(f"{name},photos/{name}{index}.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    rows += ["dog,photos/missing.png", ",photos/cat0.png", "cat,photos/broken.jpg", ""]
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    folder = read_labels_csv(csv_file)
    assert folder.class_names == ["cat", "dog"] and folder.counts() == {"cat": 10, "dog": 10}
    assert folder.files[0] == str(photos / "cat0.png") and folder.labels[:2] == [0, 1]
    reasons = {item.path: item.reason for item in folder.skipped}
    assert reasons[f"{csv_file} line 22: photos/missing.png"] == "no such file"
    assert reasons[f"{csv_file} line 23: photos/cat0.png"] == "empty label"
    assert reasons[str(photos / "broken.jpg")].startswith("not an image")
    # Validation and test sets are split off with the seed, per class, unless given.
    splits = load_image_splits(csv_file, validation_fraction=0.2, seed=3)
    assert splits.layout == "CSV (validation split taken), test split taken"
    assert (len(splits.train.files), len(splits.validation.files), len(splits.test.files)) \
        == (12, 4, 4)
    assert set(splits.train.files).isdisjoint(splits.test.files)
    again = load_image_splits(csv_file, validation_fraction=0.2, seed=3)
    assert again.test.files == splits.test.files
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("path,label\nphotos/cat1.png,cat\n")
    given = load_image_splits(csv_file, test_csv, seed=3)
    assert given.test.files == [str(photos / "cat1.png")]
    assert given.layout == "CSV (validation split taken)"
    test_csv.write_text("path,label\nphotos/cat1.png,horse\n")
    with pytest.raises(ValueError, match=r"labels \['horse'\] never appear in the training"):
        load_image_splits(csv_file, test_csv)
    (tmp_path / "headless.csv").write_text("photos/cat1.png,cat\n")
    with pytest.raises(ValueError, match="headless.csv: the first line must name"):
        read_labels_csv(tmp_path / "headless.csv")


def test_decoded_images_map_to_disk_beyond_the_limit_and_a_killed_decode_continues(
        tmp_path, monkeypatch):
    """Past ``memory_limit_gb`` the uint8 images go to a memory-mapped file, equal to
    the in-memory ones; a decode that died midway decodes only the rest next time."""
    import templates.data.decoded_images as decoded

    files = [str(save(tmp_path / "photos" / f"{index}.png", color=(index * 20, 5, 90)))
             for index in range(7)]
    in_memory = decoded.decode_images(files, 6)
    assert in_memory.dtype == np.uint8 and not isinstance(in_memory, np.memmap)
    cache = tmp_path / "cache" / "decoded.npy"
    monkeypatch.setattr(decoded, "CHUNK", 2)
    calls = []
    real = decoded.load_image

    def dying(path, size):
        if len(calls) == 5:
            raise OSError("killed")
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(decoded, "load_image", dying)
    with pytest.raises(OSError, match="killed"):
        decoded.decode_images(files, 6, cache, memory_limit_gb=0, workers=1)
    calls.clear()
    monkeypatch.setattr(decoded, "load_image", lambda path, size: calls.append(path)
                        or real(path, size))
    mapped = decoded.decode_images(files, 6, cache, memory_limit_gb=0, workers=1)
    assert isinstance(mapped, np.memmap)
    assert calls == files[4:]  # two chunks of two were finished before the kill
    np.testing.assert_array_equal(mapped, in_memory)
    calls.clear()
    np.testing.assert_array_equal(decoded.decode_images(files, 6, cache, memory_limit_gb=0),
                                  in_memory)
    assert calls == []  # a finished cache is read, not decoded again


def test_tf_data_and_pydataset_batches_are_the_same_in_every_epoch():
    """On TensorFlow the uint8 images feed a `tf.data` pipeline, elsewhere a PyDataset:
    the same float32 batches, in the same seeded order, epoch by epoch."""
    from templates.data.batches import ShuffledArrays, array_batches_dataset, set_epoch

    images = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    labels = np.arange(10, dtype=np.int32)
    for shuffle in (True, False):
        dataset = array_batches_dataset(images, labels, 4, seed=3, shuffle=shuffle,
                                        dtype="float32")
        arrays = ShuffledArrays(images, labels, 4, seed=3, shuffle=shuffle, dtype="float32")
        for epoch in (0, 1):
            set_epoch(dataset, epoch)
            arrays.set_epoch(epoch)
            from_tf = [(x.numpy(), y.numpy()) for x, y in dataset]
            from_arrays = [arrays[index] for index in range(len(arrays))]
            assert len(from_tf) == len(from_arrays) == 3
            for (x, y), (x2, y2) in zip(from_tf, from_arrays):
                assert x.dtype == np.float32
                np.testing.assert_array_equal(x, x2)
                np.testing.assert_array_equal(y, y2)
        if shuffle:
            set_epoch(dataset, 0)
            first = np.concatenate([y.numpy() for _, y in dataset])
            set_epoch(dataset, 1)
            assert not np.array_equal(first, np.concatenate([y.numpy() for _, y in dataset]))
