"""Class-folder image directories (and labels CSVs) into batches, on any backend.

Real folders are messy: zero-byte files, truncated downloads, text files with a `.jpg`
name, grayscale, RGBA, CMYK and 16-bit images. `scan_image_folder` opens every file
once, up front, with Pillow; files that cannot be decoded are skipped and reported
(with the reason) before any training starts, and every decodable image is converted
to 8-bit RGB (`templates.data.decoded_images`). `image_dataset` then decodes and
resizes each image once into a uint8 cache and batches it, cast to float32 one batch
at a time. Random augmentation belongs after the cache (it runs in the model, see
`templates.training.phases.with_augmentation`), so cached images are never frozen in
one random draw.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from templates.data.class_names import check_class_names
from templates.data.errors import CookbookError
from templates.data.files import file_sha256, fingerprint
from templates.data.batches import array_batches
from templates.data.decoded_images import (
    DEFAULT_CACHE_MEMORY_GB,
    check_image,
    decode_images,
    decoded_bytes,
)
from templates.data.progress import Progress

#: Sets smaller than this (images) report no progress: they take seconds.
PROGRESS_MINIMUM = 500
from templates.data.multi_label import multi_hot, split_labels

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A file left out of a dataset, and why."""

    path: str
    reason: str


@dataclasses.dataclass
class ImageFolder:
    """The usable images of a class-folder directory.

    Attributes:
        directory: The scanned directory.
        files: Paths of the images that decode.
        labels: Integer label of each file (index into ``class_names``), or, for
            multi-label data (`read_labels_csv(..., multi_label=True)`), a multi-hot
            row per file.
        class_names: Class folder names, sorted.
        skipped: Files left out, with reasons.
        notes: What else reading the data changed, in words (duplicate rows
            collapsed, paths outside a CSV's folder).
    """

    directory: str
    files: list[str]
    labels: list[int]
    class_names: list[str]
    skipped: list[SkippedFile] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def subset(self, indices: Sequence[int]) -> "ImageFolder":
        """The same folder restricted to ``indices`` (skipped files and notes kept)."""
        return ImageFolder(
            self.directory,
            [self.files[i] for i in indices],
            [self.labels[i] for i in indices],
            list(self.class_names),
            list(self.skipped),
            list(self.notes),
        )

    @property
    def multi_label(self) -> bool:
        """Whether each file carries a multi-hot row of labels."""
        return bool(self.labels) and not np.isscalar(self.labels[0])

    def counts(self) -> dict[str, int]:
        """Number of images per class name (carrying it, for multi-label data)."""
        if self.multi_label:
            tally = np.asarray(self.labels).sum(axis=0).astype(int)
            return {name: int(count) for name, count in zip(self.class_names, tally)}
        tally = np.bincount(np.asarray(self.labels, dtype=int), minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, tally)}


def _class_folders(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        raise CookbookError(f"Image directory {directory!r} does not exist or is not a directory.")
    folders = sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    # "Cats" and "cats" side by side are one class on Windows and macOS and two on
    # Linux: refuse to guess.
    by_folded: dict[str, list[str]] = {}
    for name in folders:
        by_folded.setdefault(name.casefold(), []).append(name)
    clashes = [names for names in by_folded.values() if len(names) > 1]
    if clashes:
        raise CookbookError(
            f"{directory!r} has class folders whose names differ only in case: "
            f"{'; '.join(' / '.join(names) for names in clashes)}. Merge or rename them."
        )
    return folders


def _match_known_classes(directory: str, folders: list[str],
                         class_names: list[str]) -> dict[str, str]:
    """Map each known class name to its folder in ``directory`` (case-insensitively).

    A test folder ``Cats`` serves the training class ``cats``; a folder matching no
    known class is an error.
    """
    known = {name.casefold(): name for name in class_names}
    unknown = sorted(folder for folder in folders if folder.casefold() not in known)
    if unknown:
        raise CookbookError(
            f"{directory!r} has class folders {unknown} that are not among the known "
            f"classes {class_names}."
        )
    return {known[folder.casefold()]: folder for folder in folders}


def scan_image_folder(
    directory: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    check_images: bool = True,
    minimum_classes: int = 2,
) -> ImageFolder:
    """List the images of a directory with one sub-folder per class.

    Every candidate file is decoded once (in parallel) so that unreadable files are
    skipped and reported now, not discovered mid-training.

    Args:
        directory: Folder holding one sub-folder per class.
        class_names: Expected class names in label order (e.g. the training set's when
            scanning a test set). Folders match them ignoring case (``Cats`` serves
            ``cats``); folders not listed are an error; listed classes without a folder
            simply have no images.
        check_images: Decode each file to find bad ones (recommended).
        minimum_classes: Fewest classes with images that make a usable dataset.

    Raises:
        ValueError: when the directory is missing, has fewer than ``minimum_classes``
            classes with images, has folders not in ``class_names``, or has class
            folders whose names differ only in case.
    """
    directory = os.fspath(directory)
    folders = _class_folders(directory)
    if class_names is None:
        class_names = check_class_names(folders, directory)
        folder_of = {name: name for name in folders}
    else:
        class_names = list(class_names)
        folder_of = _match_known_classes(directory, folders, class_names)

    candidates: list[tuple[str, int]] = []
    skipped: list[SkippedFile] = []
    for label, name in enumerate(class_names):
        if name not in folder_of:
            continue
        class_dir = os.path.join(directory, folder_of[name])
        for root, dirs, files in os.walk(class_dir):  # does not follow symlinked folders
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file_name in sorted(files):
                path = os.path.join(root, file_name)
                if file_name.startswith("."):
                    continue
                if not file_name.lower().endswith(IMAGE_EXTENSIONS):
                    skipped.append(SkippedFile(path, "not an image file extension"))
                    continue
                candidates.append((path, label))

    if check_images and candidates:
        reasons = check_all([path for path, _ in candidates], directory)
    else:
        reasons = [None] * len(candidates)
    files, labels = [], []
    for (path, label), reason in zip(candidates, reasons):
        if reason is None:
            files.append(path)
            labels.append(label)
        else:
            skipped.append(SkippedFile(path, reason))

    folder = ImageFolder(directory, files, labels, list(class_names), skipped)
    populated = [name for name, count in folder.counts().items() if count > 0]
    if not files:
        raise CookbookError(
            f"No usable images in {directory!r}: expected one sub-folder per class holding "
            f"images ({', '.join(IMAGE_EXTENSIONS)}); {len(skipped)} files were skipped."
        )
    if len(populated) < minimum_classes:
        raise CookbookError(
            f"{directory!r} has images for {len(populated)} class(es) ({populated}); "
            f"classification needs at least {minimum_classes} class folders with images."
        )
    return folder


def split_folder(
    folder: ImageFolder, validation_fraction: float, seed: int
) -> tuple[ImageFolder, ImageFolder]:
    """Split into training and validation parts, per class, reproducibly for ``seed``
    (multi-label data: at random, each example once)."""
    if not 0.0 < validation_fraction < 1.0:
        raise CookbookError(f"validation_fraction must be in (0, 1); got {validation_fraction}.")
    rng = np.random.default_rng(seed)
    if folder.multi_label:
        order = rng.permutation(len(folder.files))
        count = int(round(len(order) * validation_fraction))
        return (folder.subset(sorted(order[count:].tolist())),
                folder.subset(sorted(order[:count].tolist())))
    labels = np.asarray(folder.labels)
    train_indices, validation_indices = [], []
    for label in range(len(folder.class_names)):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        count = int(round(len(members) * validation_fraction))
        validation_indices.extend(members[:count].tolist())
        train_indices.extend(members[count:].tolist())
    return folder.subset(sorted(train_indices)), folder.subset(sorted(validation_indices))


@dataclasses.dataclass
class ImageSplits:
    """Training, validation and optional test folders found under one data directory."""

    train: ImageFolder
    validation: ImageFolder
    test: ImageFolder | None
    layout: str

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names

    @property
    def skipped(self) -> list[SkippedFile]:
        seen: dict[str, SkippedFile] = {}
        for part in (self.train, self.validation, self.test):
            for item in part.skipped if part is not None else ():
                seen.setdefault(item.path, item)
        return list(seen.values())

    def describe(self, data_dir: str | os.PathLike) -> str:
        """The splits in words: layout, classes, counts, and every file or row skipped."""
        lines = [f"Data: {os.fspath(data_dir)} ({self.layout}); classes {self.class_names}; "
                 f"train {len(self.train.files)}, validation {len(self.validation.files)}, "
                 f"test {len(self.test.files) if self.test else 0}; skipped "
                 f"{len(self.skipped)} files or rows."]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  skipped {item.path}: {item.reason}" for item in self.skipped]
        return "\n".join(lines)

    @property
    def notes(self) -> list[str]:
        return list(dict.fromkeys(note for part in (self.train, self.validation, self.test)
                                  if part is not None for note in part.notes))

    def fingerprint(self) -> str:
        """A digest of every split's files and labels (`templates.data.files.fingerprint`)."""
        return fingerprint(*[(part.files, part.labels) if part is not None else None
                             for part in (self.train, self.validation, self.test)])

    def counts(self) -> dict[str, Any]:
        """What metrics.json records of the data: the images per split and the skipped."""
        return {"images": {"train": len(self.train.files),
                           "validation": len(self.validation.files),
                           "test": len(self.test.files) if self.test else 0,
                           "skipped": len(self.skipped)},
                "skipped_files": [{"path": item.path, "reason": item.reason}
                                  for item in self.skipped],
                **({"data_notes": self.notes} if self.notes else {})}


def load_image_splits(
    data_dir: str | os.PathLike,
    test_dir: str | os.PathLike | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    validation: str | os.PathLike | None = None,
    multi_label: bool = False,
) -> ImageSplits:
    """Find the splits of a data directory, in the layouts people actually use.

    - ``train/`` and ``validation/`` (and optionally ``test/``) class folders;
    - ``train/`` and ``test/``: a seeded validation split is taken from ``train/``;
    - class folders directly: a seeded validation split is taken from them.

    ``test_dir``, when given, is the test set whatever the layout. ``data_dir`` may
    also be a ``path,label`` CSV file (`load_csv_splits`; ``test_dir`` and
    ``validation`` are then CSV files too, or ``None`` to split them off).
    """
    data_dir = os.fspath(data_dir)
    if data_dir.lower().endswith(".csv"):
        return load_csv_splits(data_dir, validation, test_dir, validation_fraction, seed,
                               multi_label=multi_label)
    if multi_label:
        raise CookbookError("Multi-label images need their labels in a CSV (path,label with "
                            "labels separated by |): class folders give one label per image.")
    if validation is not None:
        raise CookbookError("A validation CSV goes with a labels CSV; a data directory holds "
                            "its validation/ folder itself.")
    if not os.path.isdir(data_dir):
        raise CookbookError(f"Data directory {data_dir!r} does not exist or is not a directory.")
    sub = {name: os.path.join(data_dir, name) for name in ("train", "validation", "test")}
    has = {name: os.path.isdir(path) for name, path in sub.items()}
    if has["train"]:
        train = scan_image_folder(sub["train"])
        if has["validation"]:
            validation = scan_image_folder(sub["validation"], train.class_names, minimum_classes=1)
            layout = "train/validation"
        else:
            train, validation = split_folder(train, validation_fraction, seed)
            layout = "train (validation split taken)"
        if test_dir is None and has["test"]:
            test_dir = sub["test"]
    else:
        train, validation = split_folder(scan_image_folder(data_dir), validation_fraction, seed)
        layout = "class folders (validation split taken)"
    test = None
    if test_dir is not None:
        test = scan_image_folder(test_dir, train.class_names, minimum_classes=1)
    return without_overlaps(ImageSplits(train, validation, test, layout))


def read_labels_csv(
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    check_images: bool = True,
    multi_label: bool = False,
) -> ImageFolder:
    """The images a ``path,label`` CSV file lists, paths relative to the CSV's folder.

    Rows whose file is missing, whose label is empty or whose image does not decode are
    skipped and named (``SkippedFile("FILE.csv line N: ...", reason)``), as for folders.

    Args:
        path: A CSV file with a header naming the columns ``path`` and ``label`` (any
            order, any case; other columns are ignored).
        class_names: The training classes, in label order (for a validation or test
            CSV); ``None``: the labels found here, sorted.
        check_images: Decode each image to find bad ones.
        multi_label: ``label`` holds any number of labels separated by ``|``
            (``cats|dogs``); each file then gets a multi-hot row.

    Raises:
        ValueError: a missing or empty file, no ``path`` / ``label`` columns, labels
            not among ``class_names``, or fewer than two classes in a training CSV.
    """
    import csv

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CookbookError(f"Labels CSV {path!r} does not exist.")
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        columns = {name.strip().lower(): index for index, name in enumerate(header or [])}
        if "path" not in columns or "label" not in columns:
            raise CookbookError(f"{path}: the first line must name the columns 'path' and "
                                f"'label' (found {header or 'an empty file'}).")
        rows = [(number, row) for number, row in enumerate(reader, start=2) if any(row)]
    candidates: list[tuple[str, list[str]]] = []
    lines_of: dict[str, list[int]] = {}  # real path -> its rows' line numbers
    index_of: dict[str, int] = {}  # real path -> its place in candidates
    skipped: list[SkippedFile] = []
    outside, duplicates = 0, 0
    for number, row in rows:
        where = f"{path} line {number}"
        cells = [row[columns[key]].strip() if columns[key] < len(row) else ""
                 for key in ("path", "label")]
        file, label = cells
        if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
            skipped.append(SkippedFile(where, f"{len(row)} fields where the header has "
                                              f"{len(header)} (quote a path or label "
                                              f"that holds a comma)"))
        elif not file:
            skipped.append(SkippedFile(where, "empty path"))
        elif not label:
            skipped.append(SkippedFile(f"{where}: {file}", "empty label"))
        elif not os.path.isfile(os.path.join(folder, file)):
            skipped.append(SkippedFile(f"{where}: {file}", "no such file"))
        else:
            full = os.path.join(folder, file)
            real = os.path.realpath(full)
            outside += os.path.isabs(file) or not real.startswith(folder + os.sep)
            names = split_labels(label) if multi_label else [label]
            if real not in lines_of:
                lines_of[real] = [number]
                index_of[real] = len(candidates)
                candidates.append((full, names))
                continue
            lines_of[real].append(number)
            index = index_of[real]
            if sorted(candidates[index][1]) == sorted(names):
                duplicates += 1
            elif multi_label:
                candidates[index] = (candidates[index][0],
                                     sorted(set(candidates[index][1]) | set(names)))
                duplicates += 1
            else:
                raise CookbookError(
                    f"{path}: {file} is listed under two labels, "
                    f"{candidates[index][1][0]!r} and {label!r} (lines "
                    f"{', '.join(map(str, lines_of[real]))}); keep one row per photo, or "
                    f"give several labels with --multi-label.")
    notes = []
    if duplicates:
        repeated = {real: numbers for real, numbers in lines_of.items() if len(numbers) > 1}
        example = next(iter(repeated.values()))
        notes.append(f"{path}: {duplicates} repeated rows of {len(repeated)} photos "
                     f"collapsed to one each{' (their labels merged)' if multi_label else ''}"
                     f", e.g. lines {', '.join(map(str, example[:5]))}.")
    if outside:
        notes.append(f"{path}: {outside} paths lead outside the CSV's folder ({folder}: "
                     f"absolute paths or '..'); they are used as given.")
    found = sorted({name for _, names in candidates for name in names})
    if class_names is None:
        class_names = check_class_names(found, path)
        found = class_names
        if len(class_names) < 2:
            raise CookbookError(f"{path}: classification needs at least 2 labels; found "
                                f"{class_names}.")
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise CookbookError(f"{path}: labels {unknown} never appear in the training data "
                            f"(classes {list(class_names)}).")
    if check_images and candidates:
        reasons = check_all([file for file, _ in candidates], path)
    else:
        reasons = [None] * len(candidates)
    index = {name: label for label, name in enumerate(class_names)}
    files, labels = [], []
    for (file, names), reason in zip(candidates, reasons):
        if reason is None:
            files.append(file)
            ids = [index[name] for name in names]
            labels.append(multi_hot([ids], len(class_names))[0].tolist() if multi_label
                          else ids[0])
        else:
            skipped.append(SkippedFile(file, reason))
    if not files:
        raise CookbookError(f"{path}: no usable images ({len(skipped)} rows skipped).")
    return ImageFolder(path, files, labels, list(class_names), skipped, notes)


def load_csv_splits(
    labels_csv: str | os.PathLike,
    validation_csv: str | os.PathLike | None = None,
    test_csv: str | os.PathLike | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    test_fraction: float = 0.2,
    multi_label: bool = False,
) -> ImageSplits:
    """Training, validation and test images from ``path,label`` CSV files
    (`read_labels_csv`); a validation or test set not given as a CSV is split off the
    training CSV, per class and with ``seed`` (the test set first). ``multi_label``:
    labels separated by ``|`` (`read_labels_csv`)."""
    train = read_labels_csv(labels_csv, multi_label=multi_label)
    test = None
    if test_csv is not None:
        test = read_labels_csv(test_csv, train.class_names, multi_label=multi_label)
    else:
        train, test = split_folder(train, test_fraction, seed)
    if validation_csv is not None:
        validation = read_labels_csv(validation_csv, train.class_names,
                                     multi_label=multi_label)
        layout = "CSV files"
    else:
        train, validation = split_folder(train, validation_fraction, seed)
        layout = "CSV (validation split taken)"
    if test_csv is None:
        layout += ", test split taken"
    return without_overlaps(ImageSplits(train, validation, test, layout))


def file_digests(paths: Sequence[str]) -> list[str]:
    """The SHA-256 of each file's bytes (`templates.data.files.file_sha256`), read in
    threads."""
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(file_sha256, paths))


def without_overlaps(splits: ImageSplits) -> ImageSplits:
    """``splits`` with no photo in two splits: a photo of the training set that is also
    in the validation or test set, by path or by content (a copy under another name),
    leaves training; one of the validation set that is also in the test set leaves
    validation. The test set is never changed. Each removal is a `SkippedFile` naming
    the other copy, so the counts say it."""
    parts = [("test", splits.test), ("validation", splits.validation),
             ("train", splits.train)]
    parts = [(name, part) for name, part in parts if part is not None]
    every = [file for _, part in parts for file in part.files]
    digests = iter(file_digests(every))
    seen: dict[str, tuple[str, str]] = {}  # real path or content -> (split, file)
    kept: dict[str, ImageFolder] = {}
    for name, part in parts:
        keep, removed = [], []
        for index, file in enumerate(part.files):
            keys = (os.path.realpath(file), next(digests))
            other = next((seen[key] for key in keys if key in seen and seen[key][0] != name),
                         None)
            if other is None:
                keep.append(index)
                for key in keys:
                    seen.setdefault(key, (name, file))
            else:
                how = "path" if keys[0] in seen else "content"
                removed.append(SkippedFile(file, f"the same photo (by {how}) as the "
                                                 f"{other[0]} set's {other[1]}"))
        kept[name] = part if not removed else dataclasses.replace(
            part.subset(keep), skipped=list(part.skipped) + removed)
        if removed and name == "train" and not kept[name].files:
            raise CookbookError(f"{part.directory}: every training photo is also in the "
                                f"validation or test set.")
    return ImageSplits(kept["train"], kept["validation"], kept.get("test"), splits.layout)


def check_all(paths: Sequence[str], where: str) -> list[str | None]:
    """`check_image` over ``paths`` in threads, in order, with progress lines for large
    sets (`templates.data.progress.Progress`)."""
    progress = Progress(f"Checking the images of {where}", "images",
                        minimum_total=PROGRESS_MINIMUM)
    reasons = []
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        for reason in pool.map(check_image, paths):
            reasons.append(reason)
            if len(reasons) % 64 == 0 or len(reasons) == len(paths):
                progress(len(reasons), len(paths))
    return reasons


def image_dataset(
    folder: ImageFolder,
    image_size: int | tuple[int, int],
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int | None = None,
    cache_file: str | os.PathLike | None = None,
    shard: tuple[int, int] | None = None,
    memory_limit_gb: float | None = DEFAULT_CACHE_MEMORY_GB,
    name: str | None = None,
):
    """Batches of ``(float32 0..255 RGB images, labels)`` of a folder, on any backend.

    Decoding and resizing happen once, into a uint8 array (`decode_images`: in memory
    up to ``memory_limit_gb``, beyond it memory-mapped in ``cache_file``, or a temporary
    file); each batch is cast to float32 when it is read. Training batches
    follow an order drawn from ``(seed, epoch)`` (`templates.data.batches`), so a
    resumed run reads what an uninterrupted one read. On the TensorFlow backend the
    batches are a `tf.data` pipeline (``fit`` reads it without rebuilding one every
    epoch), elsewhere a `keras.utils.PyDataset`; both yield the same batches.

    Args:
        cache_file: The ``.npy`` file a set larger than ``memory_limit_gb`` is mapped
            to, reused (and a decode killed midway continued) by a later run; ``None``:
            a temporary file.
        shard: ``(number of input pipelines, this pipeline's index)``: read only every
            n-th file, starting at the index (multi-worker training, where each worker
            reads its own share; `tf.distribute.InputContext` gives both numbers).
        memory_limit_gb: The most decoded images kept in memory (``None``: no limit).
        name: What the progress lines call these images (``"train photos"``);
            the folder's path when omitted. Sets under `PROGRESS_MINIMUM` say nothing.
    """
    files, labels = list(folder.files), list(folder.labels)
    if shard is not None:
        count, index = (int(value) for value in shard)
        if not 0 <= index < count:
            raise CookbookError(f"shard={shard}: the index must be in [0, {count}).")
        files, labels = files[index::count], labels[index::count]
        if not files:
            raise CookbookError(f"Shard {index} of {count} of {folder.directory} has no images: "
                                f"{len(folder.files)} images for {count} input pipelines.")
    progress = Progress(f"Decoding {name or folder.directory}", "images",
                        minimum_total=PROGRESS_MINIMUM)
    images = decode_images(files, image_size, cache_file, memory_limit_gb, progress=progress)
    labels = np.asarray(labels, np.float32 if folder.multi_label else np.int32)
    return array_batches(images, labels, batch_size, seed, shuffle=shuffle, dtype="float32")


# The largest image side the recipes take: a photo of side S costs 3 S^2 bytes decoded
# (the cache holds every photo) and 12 S^2 bytes as a float32 input; at 1024 px that is
# 3 MB and 12.6 MB, so a batch of 32 holds 0.4 GB of inputs before a convolutional
# backbone's activations, which in training take tens of times more: beyond 1024 px a
# batch no longer fits a 16-24 GB machine. Above LARGE_IMAGE_SIZE the estimate is printed.
MAX_IMAGE_SIZE = 1024
LARGE_IMAGE_SIZE = 512


def image_batches_by_size(splits: ImageSplits, batch_size: int, seed: int | None = None,
                          cache_dir: str | os.PathLike | None = None,
                          memory_limit_gb: float | None = DEFAULT_CACHE_MEMORY_GB):
    """A function from an image size to ``(train, validation, test)`` batches of
    ``splits`` at that size (`image_dataset`: training shuffled with ``seed``; test
    ``None`` without a test split), each size built once, so candidates of one size
    (`templates.selection.ranking`) and the run after them share the decoded images.

    ``memory_limit_gb`` bounds the decoded images of all three splits together: when
    they fit, all stay in memory; when not, every split is memory-mapped from
    ``cache_dir/decoded_SPLIT_SIZEpx.npy`` (a temporary file without ``cache_dir``),
    which a resumed run reuses, and continues if it stopped while decoding.
    """
    built: dict[int, tuple] = {}
    parts = [("train", splits.train), ("validation", splits.validation),
             ("test", splits.test)]

    def batches(image_size: int):
        if image_size not in built:
            total = sum(decoded_bytes(len(folder.files), (image_size, image_size))
                        for _, folder in parts if folder)
            if image_size > LARGE_IMAGE_SIZE:
                print(f"{image_size} px images: decoded, they take {total / 1e9:.1f} GB "
                      f"({3 * image_size**2 / 1e6:.1f} MB each), and one batch of float32 "
                      f"inputs {12 * image_size**2 * batch_size / 1e9:.2f} GB, before the "
                      "backbone's activations, which in training take tens of times more.")
            in_memory = memory_limit_gb is None or total <= memory_limit_gb * 1e9
            limit = None if in_memory else 0.0
            if not in_memory:
                print(f"Decoded images: {total / 1e9:.2f} GB at {image_size} px, over the "
                      f"{memory_limit_gb:g} GB in memory (--cache-memory-gb): memory-mapped "
                      f"from {cache_dir or 'a temporary folder'}.")

            def dataset(split, folder, **options):
                cache_file = (os.path.join(os.fspath(cache_dir), f"decoded_{split}_{image_size}px.npy")
                              if cache_dir and not in_memory else None)
                return image_dataset(folder, image_size, batch_size, cache_file=cache_file,
                                     memory_limit_gb=limit, name=f"{split} images", **options)

            built[image_size] = (
                dataset("train", splits.train, shuffle=True, seed=seed),
                dataset("validation", splits.validation),
                dataset("test", splits.test) if splits.test else None)
        return built[image_size]

    return batches
