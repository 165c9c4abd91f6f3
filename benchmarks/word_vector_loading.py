"""Benchmark: loading GloVe-format word vectors, and building an embedding matrix.

Generates a GloVe-format text file (default 400,000 words x 100 dimensions, values
written like GloVe's with 5-6 significant digits), then times:

* ``per_line_loop``: the loop most tutorials use (``line.split()`` then
  ``np.asarray(values, dtype="float32")`` per line);
* ``gensim_text``: ``KeyedVectors.load_word2vec_format(no_header=True)``;
* ``first_load``: `templates.models.word_vectors.load_word_vectors` on the file (parse with
  pyarrow and write the cache);
* ``cached_reload``: the same call again (memory-mapped cache);
* ``embedding_matrix``: `templates.models.embeddings.embedding_matrix` for a 20,000-word
  vocabulary (18,000 known words, 2,000 unknown).

Prints one JSON object. Each timing is the best of ``--repeats`` runs (one for the
slow baselines). Run:

    python -m benchmarks.word_vector_loading            # full size, a few minutes
    python -m benchmarks.word_vector_loading --words 50000 --skip-gensim
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np


def write_glove_file(path: str, words: int, dimension: int, seed: int = 0) -> None:
    generator = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for start in range(0, words, 20000):
            count = min(20000, words - start)
            values = generator.normal(scale=0.4, size=(count, dimension)).astype(np.float32)
            rows = (f"word{start + index} " + " ".join(f"{value:.5g}" for value in row)
                    for index, row in enumerate(values))
            handle.write("\n".join(rows) + "\n")


def per_line_loop(path: str):
    words, vectors = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            parts = line.rstrip().split(" ")
            words.append(parts[0])
            vectors.append(np.asarray(parts[1:], dtype=np.float32))
    return words, np.stack(vectors)


def timed(function, repeats: int = 1):
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.word_vector_loading")
    parser.add_argument("--words", type=int, default=400_000)
    parser.add_argument("--dimension", type=int, default=100)
    parser.add_argument("--vocabulary", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-gensim", action="store_true",
                        help="Skip gensim's own text loader (the slowest).")
    args = parser.parse_args(argv)

    from gensim.models import KeyedVectors

    from templates.models.embeddings import embedding_matrix
    from templates.models.word_vectors import load_word_vectors

    folder = tempfile.mkdtemp(prefix="word-vector-benchmark-")
    try:
        path = os.path.join(folder, "vectors.txt")
        started = time.perf_counter()
        write_glove_file(path, args.words, args.dimension)
        generate_seconds = time.perf_counter() - started
        cache = os.path.join(folder, "cache")

        loop_seconds, (loop_words, loop_vectors) = timed(lambda: per_line_loop(path))
        gensim_seconds = None
        if not args.skip_gensim:
            gensim_seconds, _ = timed(
                lambda: KeyedVectors.load_word2vec_format(path, binary=False, no_header=True))

        def first_load():
            shutil.rmtree(cache, ignore_errors=True)
            return load_word_vectors(path, cache_dir=cache, progress=False)

        first_seconds, vectors = timed(first_load, args.repeats)
        reload_seconds, reloaded = timed(
            lambda: load_word_vectors(path, cache_dir=cache, progress=False), args.repeats)
        identical = (reloaded.index_to_key == loop_words
                     and np.array_equal(np.asarray(reloaded.vectors), loop_vectors)
                     and np.array_equal(np.asarray(vectors.vectors), loop_vectors))

        known = args.vocabulary * 9 // 10
        vocabulary = ["", "[UNK]"] + [f"word{index}" for index in range(0, known * 7, 7)]
        vocabulary += [f"unknown{index}" for index in range(args.vocabulary - known)]
        matrix_seconds, matrix = timed(
            lambda: embedding_matrix(vocabulary, reloaded, seed=0), args.repeats)

        result = {
            "benchmark": "word_vector_loading",
            "words": args.words,
            "dimension": args.dimension,
            "file_megabytes": round(os.path.getsize(path) / 2**20, 1),
            "generate_seconds": round(generate_seconds, 2),
            "per_line_loop_seconds": round(loop_seconds, 3),
            "gensim_text_seconds": None if gensim_seconds is None else round(gensim_seconds, 3),
            "first_load_seconds": round(first_seconds, 3),
            "cached_reload_seconds": round(reload_seconds, 4),
            "first_load_speedup_vs_loop": round(loop_seconds / first_seconds, 2),
            "cached_reload_speedup_vs_loop": round(loop_seconds / reload_seconds, 1),
            "same_result_as_loop": bool(identical),
            "embedding_matrix_vocabulary": len(vocabulary),
            "embedding_matrix_seconds": round(matrix_seconds, 4),
            "embedding_matrix_hits": matrix.hits,
            "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
