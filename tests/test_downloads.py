"""Downloads: digests checked, nothing partial left behind, archives cannot escape.

Served from ``file://`` URLs, which go through the same code path as ``https://``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile

import pytest

from templates.data.downloads import DownloadError, download_file


def crafted_archives(folder):
    """A tar.gz and a zip whose members try to land outside the extraction folder."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = b"pwned"
    with tarfile.open(folder / "evil.tar.gz", "w:gz") as archive:
        for name in ["../escaped_tar.txt", str(folder.parent / "absolute_tar.txt"),
                     "data/good.txt"]:
            member = tarfile.TarInfo(name)
            member.size = len(payload)
            archive.addfile(member, io.BytesIO(payload))
        link = tarfile.TarInfo("data/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    with zipfile.ZipFile(folder / "evil.zip", "w") as archive:
        archive.writestr("../escaped_zip.txt", payload)
        archive.writestr("data/good.txt", payload)
    return folder / "evil.tar.gz", folder / "evil.zip"


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archive_members_cannot_escape_the_cache(tmp_path, kind):
    tar_path, zip_path = crafted_archives(tmp_path / "served")
    archive = tar_path if kind == "tar.gz" else zip_path
    cache = tmp_path / "cache" / "deep"
    with pytest.warns(UserWarning, match="Skipping invalid path"):
        extracted = download_file(archive.as_uri(), cache_subdir=kind, cache_dir=cache,
                                  extract=True)
    assert os.path.commonpath([extracted, str(cache)]) == str(cache)  # no /tmp fallback
    with open(os.path.join(extracted, "data", "good.txt"), "rb") as handle:
        assert handle.read() == b"pwned"
    everything = [os.path.join(root, name) for root, dirs, files in os.walk(tmp_path)
                  for name in files + dirs]
    assert not [path for path in everything if "escaped" in path or "absolute" in path]
    assert not os.path.lexists(os.path.join(extracted, "data", "link"))


def test_a_wrong_digest_is_refused_and_leaves_no_file(tmp_path):
    served = tmp_path / "vectors.txt"
    served.write_text("cat 0.1 0.2\n")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="vectors.txt") as error:
        download_file(served.as_uri(), cache_subdir="vectors", cache_dir=cache,
                      sha256="0" * 64, local_alternative="Or pass --vectors PATH.")
    assert "--vectors PATH" in str(error.value)
    assert not list((cache / "vectors").iterdir())

    good = hashlib.sha256(served.read_bytes()).hexdigest()
    path = download_file(served.as_uri(), cache_subdir="vectors", cache_dir=cache, sha256=good)
    assert open(path).read() == "cat 0.1 0.2\n"


def test_an_unreachable_url_names_what_and_where(tmp_path):
    missing = (tmp_path / "nothing-here.zip").as_uri()
    with pytest.raises(DownloadError) as error:
        download_file(missing, cache_dir=tmp_path / "cache", local_alternative="Or use --data-dir.")
    message = str(error.value)
    assert "nothing-here.zip" in message and missing in message and "--data-dir" in message
    assert not os.path.exists(tmp_path / "cache" / "downloads" / "nothing-here.zip")
