"""Atomic file writing: a crash never leaves a truncated file that a later run trusts.

Every output is written to a temporary file in the same folder, flushed, then renamed
over the destination (`os.replace` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from templates.data.errors import RESUME_HINT, writing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    Args:
        path: Final destination.
        suffix: Ending for the temporary name (some writers check it, e.g. Keras wants
            ``.keras``); defaults to the destination's own extension.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if suffix is None:
        suffix = "".join(part for part in os.path.basename(path).partition(".")[1:])
    # A full disk, a read-only folder or a file where a folder should be: one sentence
    # naming the path (a CookbookError); the file it replaces is left as it was.
    with writing(path, RESUME_HINT):
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
        os.close(handle)
        # mkstemp creates 0600 files; give the result the permissions a plain open()
        # would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        try:
            yield temporary
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=to_builtin) + "\n")


def to_builtin(value: Any) -> Any:
    """``json.dumps``' ``default``: NumPy scalars and arrays (they show up in metrics) as
    plain Python values; anything else is not JSON-ready (TypeError)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file's bytes, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A short SHA-256 of JSON-ready ``parts`` (lists of paths, texts, labels...): two
    runs with the same fingerprint read the same examples under the same labels."""
    import hashlib

    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, default=to_builtin).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]
