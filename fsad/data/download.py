"""Dataset downloads: resumable HTTP with sha256 verification, and safe archive extraction.

* :func:`download` streams a URL into ``dest + '.part'``, resumes a killed download with an HTTP
  ``Range`` request, verifies the sha256 and only then renames the file onto ``dest``; a
  ``dest + '.sha256-ok'`` stamp records the verified hash so the (multi-GB) file is hashed once.
* :func:`safe_extract` unpacks tar (plain, gz, bz2, xz) and zip archives into a staging folder
  beside the target and renames it into place; members that are links, special files, absolute
  paths or paths escaping the target make the whole archive refused.
* :func:`fetch_dataset` ties both to a dataset root: use the files already there, else download
  and extract the dataset's archive.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tqdm import tqdm

from fsad.data.sources import DownloadSource
from fsad.io import write_text

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
USER_AGENT = "fsad-bench (urllib)"
TRANSIENT_ERRORS = (http.client.IncompleteRead, ConnectionError, TimeoutError, urllib.error.URLError)


class DownloadError(RuntimeError):
    """A download failed; the message says whether rerunning resumes it."""


class ChecksumError(DownloadError):
    """A file's sha256 differs from the expected one."""


class UnsafeArchiveError(ValueError):
    """An archive holds a member that could write outside the target or is not a plain file or folder."""


def sha256_of(path: str | os.PathLike, hasher: hashlib._Hash | None = None) -> str:
    """Hex sha256 of a file, read in chunks (``hasher`` continues an existing hash)."""
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` unless a verified copy is there; return ``dest``.

    Data goes to ``dest + '.part'``; a later call (or one of ``retries`` attempts after a dropped
    connection) asks the server for the remaining bytes only, and starts over when the server
    ignores ``Range``. After the sha256 matches, the part is renamed onto ``dest`` and the stamp
    ``dest + '.sha256-ok'`` is written.

    Raises:
        ChecksumError: the downloaded file (deleted) or an existing ``dest`` has another hash.
        DownloadError: the server kept failing; the ``.part`` file is kept for the next call.
    """
    dest = Path(dest)
    sha256 = sha256.lower()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(dest.with_name(dest.name + ".lock")):
        if _verified(dest, sha256):
            return dest
        part = dest.with_name(dest.name + ".part")
        for attempt in range(1, retries + 1):
            try:
                actual = _fetch_into(url, part, timeout, progress)
                break
            except TRANSIENT_ERRORS as err:
                if isinstance(err, urllib.error.HTTPError) and err.code < 500:
                    raise DownloadError(f"{url}: HTTP {err.code} {err.reason}; check the URL in fsad/data/sources.py") from err
                log.warning("download of %s interrupted (%s), attempt %d of %d", url, err, attempt, retries)
        else:
            raise DownloadError(
                f"{url}: download failed {retries} times; {part} keeps what arrived, rerun to resume, "
                "or download the archive by hand and place it at " + str(dest)
            )
        if actual != sha256:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{dest.name}: sha256 mismatch for the download from {url}: expected {sha256}, got {actual}. "
                f"The download was deleted; rerun to download again. If it fails again the source changed: "
                f"download it by hand, check it, and place the extracted dataset under the dataset's `root`."
            )
        os.replace(part, dest)
        _write_stamp(dest, sha256)
        log.info("downloaded %s (%d bytes, sha256 ok)", dest, dest.stat().st_size)
        return dest


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256-ok")


def _write_stamp(dest: Path, sha256: str) -> None:
    write_text(_stamp_path(dest), f"{sha256} {dest.stat().st_size}\n")


def _verified(dest: Path, sha256: str) -> bool:
    """True when ``dest`` holds the expected file: by its stamp, else by hashing it once."""
    if not dest.exists():
        return False
    stamp = _stamp_path(dest)
    if stamp.exists() and stamp.read_text().split() == [sha256, str(dest.stat().st_size)]:
        return True
    actual = sha256_of(dest)
    if actual != sha256:
        raise ChecksumError(
            f"{dest}: sha256 is {actual}, expected {sha256}; delete the file to download it again, "
            "or replace it with the right archive"
        )
    _write_stamp(dest, sha256)
    return True


def _fetch_into(url: str, part: Path, timeout: float, progress: bool) -> str:
    """Fetch what ``part`` lacks (all of it when the server ignores ``Range``); return the sha256 of ``part``."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416:
            raise
        # Range not satisfiable: the part may already be complete (killed before the rename).
        total = _total_from_content_range(err.headers.get("Content-Range", ""))
        if total is not None and total == offset:
            return sha256_of(part)
        part.unlink()
        return _fetch_into(url, part, timeout, progress)
    with response:
        status = response.status or 200  # file:// responses carry no status
        content_range = response.headers.get("Content-Range", "")
        resumed = status == 206 and content_range.startswith(f"bytes {offset}-")
        if status == 206 and not resumed:
            raise DownloadError(f"{url}: server answered Range bytes={offset}- with {content_range!r}; delete {part} and rerun")
        hasher = hashlib.sha256()
        if resumed:
            sha256_of(part, hasher)
            total = _total_from_content_range(content_range)
            log.info("resuming %s at byte %d", url, offset)
        else:
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
        with open(part, "ab" if resumed else "wb") as fh:
            _copy_with_progress(response, fh, hasher, total, offset, part.name[: -len(".part")], progress)
    size = part.stat().st_size
    if total is not None and size != total:
        raise http.client.IncompleteRead(b"", total - size)
    return hasher.hexdigest()


def _copy_with_progress(
    source: BinaryIO, sink: BinaryIO, hasher: hashlib._Hash, total: int | None, initial: int, name: str, progress: bool
) -> None:
    # Logs are files: refresh the bar rarely there, so a 5 GB download does not write a 5 MB log.
    interval = 0.5 if sys.stderr.isatty() else 30.0
    with tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=name, disable=not progress, mininterval=interval) as bar:
        while chunk := source.read(CHUNK_SIZE):
            sink.write(chunk)
            hasher.update(chunk)
            bar.update(len(chunk))


def _total_from_content_range(content_range: str) -> int | None:
    match = re.search(r"/(\d+)\s*$", content_range)
    return int(match.group(1)) if match else None


@contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Serialise jobs that write the same files (two datasets sharing one ``root``)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def staging_folder(target: Path, purpose: str) -> Path:
    """A new hidden folder beside ``target`` to build it in; ``purpose`` names the step (``extracting``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{purpose}-", dir=target.parent))


def remove_stale_staging(target: Path, purpose: str) -> None:
    """Delete staging folders of ``target`` left by killed jobs (call only while no other job builds ``target``)."""
    for stale in target.parent.glob(f".{target.name}.{purpose}-*"):
        log.info("removing %s left by an interrupted job", stale)
        shutil.rmtree(stale, ignore_errors=True)


def built_once(target: Path, purpose: str, build: Callable[[Path], None]) -> Path:
    """``target``, built by ``build(staging)`` in a staging folder renamed into place unless it exists already.

    An existing ``target`` is therefore always complete; a killed build leaves only a staging folder, removed by the
    next call (one job per dataset writes its ``data_dir``, so no other job builds ``target`` meanwhile).
    """
    if target.exists():
        return target
    remove_stale_staging(target, purpose)
    staging = staging_folder(target, purpose)
    try:
        build(staging)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract a tar or zip ``archive`` into the new folder ``target``; return ``target``.

    Everything goes to a staging folder beside ``target`` that is renamed into place at the end, so
    a killed or refused extraction leaves no ``target`` behind.

    Raises:
        UnsafeArchiveError: a member is a symlink, hard link or special file, has an absolute path,
            or a path that leaves ``target``; nothing is kept.
        FileExistsError: ``target`` exists already.
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise FileExistsError(f"{target}: already exists; delete it to extract {archive} again")
    staging = staging_folder(target, "extracting")
    try:
        if tarfile.is_tarfile(archive):
            _extract_tar(archive, staging)
        elif zipfile.is_zipfile(archive):
            _extract_zip(archive, staging)
        else:
            raise ValueError(f"{archive}: neither a tar nor a zip archive; delete it and download it again")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("extracted %s into %s", archive, target)
    return target


def _member_path(archive: Path, name: str, staging: Path) -> Path:
    """Where member ``name`` lands inside ``staging``; refuses absolute paths and escapes."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract this archive")
    path = (staging / posix).resolve()
    if not path.is_relative_to(staging.resolve()):
        raise UnsafeArchiveError(f"{archive}: member {name!r} would be written outside the target; refusing to extract this archive")
    return path


def _extract_tar(archive: Path, staging: Path) -> None:
    # Stream mode reads the (possibly xz-compressed, multi-GB) archive once.
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            _member_path(archive, member.name, staging)
            if member.issym() or member.islnk():
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a link; refusing to extract this archive")
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a device or special file; refusing to extract this archive")
            # Folder modes are left out: a read-only folder would block its own files.
            tar.extract(member, staging, set_attrs=not member.isdir(), filter="data")


def _extract_zip(archive: Path, staging: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = _member_path(archive, info.filename, staging)
            mode = info.external_attr >> 16
            if info.create_system == 3 and mode:  # unix attributes present
                if stat.S_ISLNK(mode):
                    raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symlink; refusing to extract this archive")
                # Type bits 0 (only permissions recorded, as Python's zipfile writes) mean a plain entry.
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a special file; refusing to extract this archive")
            if info.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_SIZE)


def find_dataset_root(base: Path, is_root: Callable[[Path], bool], max_depth: int = 2) -> Path | None:
    """The first folder at most ``max_depth`` levels below ``base`` (``base`` itself first) where ``is_root`` holds.

    Archives differ in whether they wrap the dataset in a top folder; this finds it either way.
    Hidden folders (staging folders of an extraction) and ``downloads`` are skipped.
    """
    level = [base] if base.is_dir() else []
    for _ in range(max_depth + 1):
        for folder in level:
            if is_root(folder):
                return folder
        level = [
            child
            for folder in level
            for child in sorted(folder.iterdir())
            if child.is_dir() and not child.name.startswith(".") and child.name != "downloads"
        ]
    return None


def fetch_dataset(source: DownloadSource, root: Path, is_root: Callable[[Path], bool], layout: str) -> Path:
    """The dataset folder under ``root``: found in place, else downloaded and extracted there.

    The archive is kept in ``root/downloads/`` (verified once, see :func:`download`) and unpacked
    into ``root/extracted/``. ``layout`` describes what ``is_root`` looks for, for error messages.
    """
    root = Path(root)
    found = find_dataset_root(root, is_root)
    if found is not None:
        log.info("%s found at %s; nothing to download", source.name, found)
        return found
    log.info("%s not found under %s (looked for %s); downloading %s", source.name, root, layout, source.url)
    archive = download(source.url, root / "downloads" / source.filename, source.sha256)
    extracted = root / "extracted"
    with exclusive_lock(root / "downloads" / "extract.lock"):
        if not extracted.exists():
            remove_stale_staging(extracted, "extracting")
            safe_extract(archive, extracted)
    found = find_dataset_root(extracted, is_root)
    if found is None:
        raise FileNotFoundError(
            f"{extracted}: extracted {archive.name} but found no {layout} in it; delete {extracted} and rerun, "
            f"or place the {source.name} files under {root} by hand"
        )
    return found
