"""A run owns its output folder, and a resume continues only the same run.

* `FolderLock`: ``OUTPUT_DIR/.lock``, locked with ``flock`` and holding the process id,
  host and start time, removed when the run ends. A second run into the folder stops in
  one sentence before doing any work. The operating system releases the lock of a
  process that died, so its file is only a record: the next run says it took over.
* `check_settings`: the settings that shape the weights (backbone and its options, cut,
  image size or sequence length, classes, a fingerprint of the data, the plan) are
  written to ``checkpoints/settings.json`` when a run starts. ``--resume`` continues
  only when they match, else it names every setting that differs. The epochs
  (`GROWABLE`) may grow on a resume: a finished phase stays finished, the phase in
  progress trains to the new count.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from typing import Any

from templates.data.errors import CookbookError
from templates.data.files import to_builtin, write_json

LOCK_FILE = ".lock"
SETTINGS_FILE = "settings.json"

# Settings a resume may raise: more epochs extend the phase in progress.
GROWABLE = ("plan.head_epochs", "plan.fine_tune_epochs")
# Settings recorded since a later version, with the value every earlier run trained
# under: a record without one resumes when the run's value is that one.
ADDED_SINCE = {"plan.head_epoch_factor": 1, "plan.head_init": "random",
               "plan.scratch_learning_rate": None}


class FolderLock:
    """``OUTPUT_DIR/.lock`` held while a run writes into ``OUTPUT_DIR`` (a context
    manager; see the module docstring).

    The lock is an ``fcntl.flock`` on the file, which the operating system releases
    when the process ends however it ends, so a run that died leaves no lock that
    blocks: the file it leaves names its process, and the next run says it took over.
    (Where ``fcntl`` is missing, as on Windows, the file's existence is the lock and a
    dead process is recognised by its id.)

    Args:
        folder: The run's output folder (created if missing).

    Raises:
        CookbookError: when another live run holds the folder, or the folder cannot
            be created or written (a file in its place, a read-only file system).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_FILE)
        self.handle: int | None = None
        self.stale: dict[str, Any] | None = None  # the dead run's record this one replaced

    def acquire(self) -> FolderLock:
        """Take the lock (see the class docstring)."""
        try:
            os.makedirs(self.folder, exist_ok=True)
            for _ in range(10):
                handle = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
                if not _try_lock(handle, self.path):
                    holder = _read_record(handle)
                    os.close(handle)
                    who = (f"process {holder.get('pid')} on {holder.get('host')}, started "
                           f"{holder.get('started')}" if holder else "another process")
                    raise CookbookError(
                        f"{self.folder} is in use by another run ({who}): give this run "
                        f"another --output-dir, or wait for that one to end.")
                try:
                    same_file = os.path.samestat(os.fstat(handle), os.stat(self.path))
                except FileNotFoundError:
                    same_file = False
                if not same_file:  # the holder removed it while we waited: start over
                    os.close(handle)
                    continue
                self.stale = _read_record(handle) or None
                record = {"pid": os.getpid(), "host": socket.gethostname(),
                          "started": datetime.datetime.now().isoformat(timespec="seconds")}
                os.ftruncate(handle, 0)
                os.pwrite(handle, json.dumps(record).encode("utf-8"), 0)
                self.handle = handle
                return self
        except OSError as error:
            raise CookbookError(f"Cannot use {self.folder} as the output folder: "
                                f"{error.strerror or error}.") from error
        raise CookbookError(f"Could not take the lock {self.path}: it keeps changing hands.")

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one locks a removed
        file), then let go."""
        if self.handle is None:
            return
        handle, self.handle = self.handle, None
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(handle)  # closing releases the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _try_lock(handle: int, path: str) -> bool:
    """Lock ``handle`` without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # no flock: the record's process id decides
        holder = _read_record(handle)
        pid = int(holder.get("pid", 0)) if holder else 0
        return not pid or pid == os.getpid() or not _alive(pid)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_record(handle: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(handle, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def check_settings(directory: str | os.PathLike, settings: dict[str, Any],
                   resume: bool) -> list[str]:
    """Record ``settings`` in ``DIRECTORY/settings.json``, or on a resume check them.

    Args:
        directory: The run's checkpoint folder.
        settings: What shapes the weights, as JSON-ready data (nested dicts allowed).
        resume: Whether the run continues the state in ``directory``.

    Returns:
        Lines to print: the settings that grew (`GROWABLE`) on a resume.

    Raises:
        CookbookError: on a resume whose settings differ from the recorded ones, naming
            each (recorded -> now).
    """
    path = os.path.join(os.fspath(directory), SETTINGS_FILE)
    # As JSON reads them back (NumPy values as plain ones, anything else by its name).
    settings = json.loads(json.dumps(settings, default=lambda value: to_builtin(value)
                                      if hasattr(value, "tolist") else str(value)))
    notes: list[str] = []
    if resume and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as handle:
                recorded = json.load(handle)
        except ValueError as error:
            raise CookbookError(f"{path} is not valid JSON ({error}); it records what the "
                                f"interrupted run was: start again without --resume.") from error
        old, new = _flatten(recorded), _flatten(settings)
        differing = []
        for key in sorted(set(old) | set(new)):
            before, now = old.get(key, ADDED_SINCE.get(key, "(not set)")), new.get(
                key, "(not set)")
            if before == now:
                continue
            if (key in GROWABLE and isinstance(before, int) and isinstance(now, int)
                    and now > before):
                notes.append(f"{key} grew from {before} to {now} on --resume: a finished "
                             f"phase stays finished; the phase in progress trains to the new "
                             f"count (its schedule recomputed for it).")
                continue
            differing.append(f"{key} {before!r} -> {now!r}")
        if differing:
            raise CookbookError(
                f"--resume continues the run recorded in {path}, but these settings differ "
                f"from it: {'; '.join(differing)}. Rerun with the recorded settings, or "
                f"without --resume (or with another --output-dir) to start a new run.")
    write_json(path, settings)
    return notes
