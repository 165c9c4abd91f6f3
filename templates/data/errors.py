"""The library's own exception: a cause outside the program, said in one sentence.

A recipe stops with one line and exit status 2 for a `CookbookError` (bad input, a
missing file, an impossible setting) and for an operating-system fault that comes from
outside the program (a full disk, a read-only folder, a path that is a file): see
`outside_cause`. Every other exception is a bug and keeps its traceback, including a
``ValueError`` raised inside Keras or NumPy.

`CookbookError` is a ``ValueError``, so code that catches ``ValueError`` around a
library call keeps working.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator


class CookbookError(ValueError):
    """An error whose cause lies outside the program; its message is one sentence that
    names the file or setting and what is wrong."""


# Faults of the machine or the user's paths, not of the program.
OUTSIDE_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "ENOSPC", "EDQUOT", "EFBIG", "EACCES", "EPERM", "EROFS", "ENOTDIR", "EISDIR",
        "EEXIST", "ENOENT", "EIO", "ENAMETOOLONG", "ENXIO", "ETXTBSY")
    if hasattr(errno, name))


# Writes that fail for want of room or permission: what was written before is intact.
DISK_FULL_ERRNOS = frozenset(getattr(errno, name) for name in
                             ("ENOSPC", "EDQUOT", "EFBIG", "EROFS") if hasattr(errno, name))
RESUME_HINT = ("the files written before it are intact: once the cause is gone, a recipe "
               "run continues with --resume")

# The same faults as h5py and TensorFlow word them: h5py raises OSError without an
# errno, TensorFlow its own errors (ResourceExhaustedError for a full disk).
OUTSIDE_TEXTS = ("No space left on device", "Disk quota exceeded", "Read-only file system",
                 "Permission denied", "File too large")


def outside_cause(error: BaseException) -> bool:
    """Whether ``error`` is a `CookbookError`, or a fault outside the program: an
    ``OSError`` with one of `OUTSIDE_ERRNOS` (full disk, no permission, read-only file
    system, a missing path...), or any error whose message is one of `OUTSIDE_TEXTS`."""
    if isinstance(error, CookbookError):
        return True
    if isinstance(error, OSError) and error.errno in OUTSIDE_ERRNOS:
        return True
    return any(text in str(error) for text in OUTSIDE_TEXTS)


def one_sentence(error: BaseException) -> str:
    """The line a user sees for an `outside_cause` error."""
    if isinstance(error, CookbookError):
        return str(error)
    if isinstance(error, OSError) and error.errno in OUTSIDE_ERRNOS:
        where = error.filename or ""
        if error.filename2:
            where = f"{where} -> {error.filename2}"
        reason = error.strerror or str(error)
        if error.errno in DISK_FULL_ERRNOS:
            reason += f"; {RESUME_HINT}"
        return f"{where}: {reason}." if where else f"{reason}."
    reason = next(text for text in OUTSIDE_TEXTS if text in str(error))
    return (f"{reason} ({type(error).__name__}: {' '.join(str(error).split())[:300]}); "
            f"{RESUME_HINT}.")


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Turn an `outside_cause` ``OSError`` raised while writing ``path`` into a
    `CookbookError` naming the path and the reason (and, with ``what``, what it means
    for the run, e.g. "the last complete checkpoint is kept; free space and rerun with
    --resume")."""
    try:
        yield
    except Exception as error:
        if isinstance(error, CookbookError) or not outside_cause(error):
            raise
        reason = (error.strerror if isinstance(error, OSError) and error.strerror
                  else next((text for text in OUTSIDE_TEXTS if text in str(error)),
                            str(error)))
        if isinstance(error, OSError) and error.errno in (errno.EEXIST, errno.ENOTDIR):
            reason = f"{error.filename or 'a part of the path'} is a file, not a folder"
        raise CookbookError(f"Could not write {os.fspath(path)}: {reason}"
                            + (f"; {what}" if what else "") + ".") from error
