"""Dataset downloads through `keras.utils.get_file`, with a clear offline message.

The table `DATASETS` is the download manifest: where each dataset comes from, the
archive name, and the folder inside it that the recipes read. Users with internet get
the official sources; users without get an error naming what failed and the flag or
variable that points at a local copy instead.
"""

from __future__ import annotations

import dataclasses
import os

import keras

from templates.data.files import file_sha256
from templates.data.errors import CookbookError


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from.

    Attributes:
        name: Short name used in messages and the cache.
        url: Official download address.
        archive: File name of the archive in the Keras cache.
        folder: Folder inside the extracted archive that holds the data.
        sha256: Published SHA-256 of the archive, when the source publishes one.
        local_flag: The recipe flag that points at a local copy instead.
    """

    name: str
    url: str
    archive: str
    folder: str
    sha256: str | None = None
    local_flag: str = "--data-dir"


DATASETS: dict[str, DatasetSource] = {
    "cats_and_dogs_filtered": DatasetSource(
        name="cats_and_dogs_filtered",
        url="https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
        archive="cats_and_dogs_filtered.zip",
        folder="cats_and_dogs_filtered",
    ),
}


class DownloadError(CookbookError, RuntimeError):
    """A download failed (offline, blocked or corrupt); the message says what to do."""


def download_dataset(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """Download and extract a dataset from `DATASETS` (once; later calls hit the cache).

    Args:
        name: A key of `DATASETS`.
        cache_dir: Keras cache folder; ``$KERAS_HOME`` (default ``~/.keras``) if omitted.

    Returns:
        The path of the extracted data folder.

    Raises:
        DownloadError: if the download fails, naming the URL and the local alternative.
    """
    if name not in DATASETS:
        raise CookbookError(f"Unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}.")
    source = DATASETS[name]
    extracted = download_file(
        source.url, cache_subdir="datasets", sha256=source.sha256, cache_dir=cache_dir,
        extract=True, file_name=source.archive,
        local_alternative=f"Or pass the extracted folder with {source.local_flag} DIR.")
    for candidate in (os.path.join(extracted, source.folder), extracted):
        if os.path.isdir(candidate):
            return candidate
    raise DownloadError(
        f"The {source.name} archive was extracted to {extracted!r} but holds no "
        f"{source.folder!r} folder; delete it to download again."
    )


def download_file(
    url: str,
    cache_subdir: str = "downloads",
    sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_alternative: str = "",
    extract: bool = False,
    file_name: str | None = None,
) -> str:
    """Download ``url`` into the Keras cache once and return the local path.

    Keras removes a partly downloaded file when the transfer fails, so the cache never
    holds a truncated copy; ``sha256`` (when the source publishes one) is checked and a
    file that fails it is deleted.
    With ``extract``, the archive is unpacked and the extracted path is returned; Keras
    skips members that would land outside the extraction folder (``../`` paths,
    absolute paths, links pointing outside), with a warning.

    Raises:
        DownloadError: naming the URL, the cache folder and ``local_alternative``.
    """
    name = file_name or url.rstrip("/").rsplit("/", 1)[-1]
    if cache_dir is not None:
        # Keras silently falls back to /tmp/.keras when cache_dir does not exist yet.
        os.makedirs(cache_dir, exist_ok=True)
    try:
        return keras.utils.get_file(
            fname=name, origin=url, cache_subdir=cache_subdir, extract=extract,
            file_hash=sha256, hash_algorithm="sha256" if sha256 else "auto",
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        )
    except Exception as error:  # get_file raises plain Exception for network failures
        _remove_if_corrupt(_cache_path(name, cache_subdir, cache_dir), sha256)
        cache = os.fspath(cache_dir) if cache_dir else os.environ.get("KERAS_HOME", "~/.keras")
        raise DownloadError(
            f"Could not download {name} from {url}: {error}\n"
            f"Without internet, fetch it elsewhere and place it in {cache}/{cache_subdir}/ "
            f"(the Keras cache, set by KERAS_HOME). {local_alternative}".rstrip()
        ) from None


def _cache_path(name: str, cache_subdir: str, cache_dir: str | os.PathLike | None) -> str:
    """Where `keras.utils.get_file` keeps ``name`` (its own choice of cache folder)."""
    if cache_dir is None:
        cache_dir = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(os.fspath(cache_dir), cache_subdir, name)


def _remove_if_corrupt(path: str, sha256: str | None) -> None:
    """Delete a downloaded file whose digest is not ``sha256``.

    Keras raises on a digest mismatch but keeps the file; it would re-download it next
    time, but a user browsing the cache would find a corrupt copy.
    """
    if sha256 is None or not os.path.isfile(path):
        return
    if file_sha256(path) != sha256.lower():
        os.remove(path)
