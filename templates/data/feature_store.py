"""Rows appended batch by batch, kept in memory up to a limit and on disk beyond it.

The head phase caches the frozen backbone's features of every training example (and of
each augmented view, `--augmented-views K`: K + 1 rows per example). For a few thousand
photos these are megabytes; for a hundred thousand photos of a wide backbone, times the
views, they are gigabytes. `FeatureStore` holds the rows in memory while they fit in
``memory_limit_gb`` and, once they do not, writes everything to a raw file and goes on
appending there; `rows()` is then a read-only `numpy.memmap` of the file, which the
head's batches read (`templates.data.batches.ShuffledArrays` gathers each batch from it,
on TensorFlow through the same `tf.data` bridge as the decoded images), so memory
stays bounded whatever the count.
"""

from __future__ import annotations

import atexit
import os
import tempfile

import numpy as np

from templates.data.errors import CookbookError

#: Cached features kept in memory before they go to a memory-mapped file.
DEFAULT_FEATURE_MEMORY_GB = 2.0


class FeatureStore:
    """Append ``(batch, ...)`` arrays; read them back as one array.

    Args:
        memory_limit_gb: Bytes kept in memory before spilling (``None``: no limit; ``0``:
            on disk from the first row).
        directory: Where the spill file goes (a temporary folder by default); the file
            is gone when the program ends, even if it is killed (on Windows: at exit).
    """

    def __init__(self, memory_limit_gb: float | None = DEFAULT_FEATURE_MEMORY_GB,
                 directory: str | os.PathLike | None = None):
        self.limit = None if memory_limit_gb is None else memory_limit_gb * 1e9
        self.directory = directory
        self.parts: list[np.ndarray] = []
        self.bytes = 0
        self.count = 0
        self.path: str | None = None
        self.handle = None
        self.row_shape: tuple[int, ...] | None = None
        self.dtype = None

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows)
        if self.row_shape is None:
            self.row_shape, self.dtype = rows.shape[1:], rows.dtype
        elif rows.shape[1:] != self.row_shape:
            raise CookbookError(f"Rows of shape {rows.shape[1:]} after rows of {self.row_shape}.")
        rows = rows.astype(self.dtype, copy=False)
        self.count += len(rows)
        if self.handle is None and (self.limit is None or self.bytes + rows.nbytes <= self.limit):
            self.parts.append(rows)
            self.bytes += rows.nbytes
            return
        if self.handle is None:
            self._spill()
        self.handle.write(rows.tobytes())

    def _spill(self) -> None:
        if self.directory:
            os.makedirs(self.directory, exist_ok=True)
        handle, self.path = tempfile.mkstemp(suffix=".features", prefix="cached-",
                                             dir=self.directory)
        self.handle = os.fdopen(handle, "w+b")
        if os.name == "posix":
            # The open handle (and every memory map of it) keeps the file; its name goes
            # now, so nothing is left behind however the process ends, killed included.
            os.remove(self.path)
        else:  # Windows cannot remove an open file: at exit, then.
            atexit.register(lambda path=self.path: os.path.exists(path) and os.remove(path))
        print(f"Cached features past {self.limit / 1e9:g} GB in memory: memory-mapped from "
              f"a temporary file in {os.path.dirname(self.path)} (removed when the run ends).")
        for part in self.parts:
            self.handle.write(part.tobytes())
        self.parts = []

    def rows(self) -> np.ndarray:
        """Every row appended: an array in memory, or a read-only memory map of the file."""
        if self.row_shape is None:
            raise CookbookError("No rows were appended.")
        if self.handle is None:
            return np.concatenate(self.parts) if len(self.parts) != 1 else self.parts[0]
        self.handle.flush()
        return np.memmap(self.handle, dtype=self.dtype, mode="r",
                         shape=(self.count, *self.row_shape))
