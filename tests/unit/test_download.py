"""download() over real local HTTP (hash check, stamp, resume) and safe_extract() of tar and zip archives."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from fsad.data.download import (
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download,
    find_dataset_root,
    safe_extract,
)
from tests.unit.range_server import RangeServer, serve_directory

PAYLOAD = os.urandom(200_000)
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path) -> RangeServer:
    served = tmp_path / "served"
    served.mkdir()
    (served / "archive.bin").write_bytes(PAYLOAD)
    with serve_directory(served) as running:
        yield running


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_download_verifies_the_hash_writes_a_stamp_and_is_not_repeated(server, tmp_path):
    dest = tmp_path / "dl" / "archive.bin"
    assert download(server.url("archive.bin"), dest, PAYLOAD_SHA256, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert (tmp_path / "dl" / "archive.bin.sha256-ok").read_text().split() == [PAYLOAD_SHA256, str(len(PAYLOAD))]
    assert not (tmp_path / "dl" / "archive.bin.part").exists()
    download(server.url("archive.bin"), dest, PAYLOAD_SHA256, progress=False)
    assert len(server.requests) == 1


def test_checksum_mismatch_names_file_and_hashes_and_deletes_the_download(server, tmp_path):
    dest = tmp_path / "dl" / "archive.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        download(server.url("archive.bin"), dest, wrong, progress=False)
    message = str(err.value)
    assert "archive.bin" in message and wrong in message and PAYLOAD_SHA256 in message and "rerun" in message
    assert leftovers(tmp_path / "dl") == ["archive.bin.lock"]


def test_partial_download_resumes_with_a_range_request(server, tmp_path):
    dest = tmp_path / "archive.bin"
    (tmp_path / "archive.bin.part").write_bytes(PAYLOAD[:70_000])
    download(server.url("archive.bin"), dest, PAYLOAD_SHA256, progress=False)
    assert server.requests == [("/archive.bin", "bytes=70000-")]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_the_download_cleanly(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "archive.bin"
    (tmp_path / "archive.bin.part").write_bytes(b"stale bytes from another file")
    download(server.url("archive.bin"), dest, PAYLOAD_SHA256, progress=False)
    assert server.requests == [("/archive.bin", "bytes=29-")]
    assert dest.read_bytes() == PAYLOAD


def test_dropped_connection_is_resumed_by_the_next_attempt(server, tmp_path):
    server.drop_after = 50_000
    dest = tmp_path / "archive.bin"
    download(server.url("archive.bin"), dest, PAYLOAD_SHA256, progress=False)
    assert server.requests == [("/archive.bin", None), ("/archive.bin", "bytes=50000-")]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_left_by_a_killed_job_is_verified_without_refetching(server, tmp_path):
    dest = tmp_path / "archive.bin"
    (tmp_path / "archive.bin.part").write_bytes(PAYLOAD)
    download(server.url("archive.bin"), dest, PAYLOAD_SHA256, progress=False)
    assert server.requests == [("/archive.bin", f"bytes={len(PAYLOAD)}-")]
    assert dest.read_bytes() == PAYLOAD


def test_existing_file_with_the_wrong_hash_is_refused_with_the_fix(server, tmp_path):
    dest = tmp_path / "archive.bin"
    dest.write_bytes(b"not the archive")
    with pytest.raises(ChecksumError, match="delete the file to download it again"):
        download(server.url("archive.bin"), dest, PAYLOAD_SHA256, progress=False)
    assert server.requests == []


def test_missing_url_is_a_download_error_naming_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match="missing.bin: HTTP 404"):
        download(server.url("missing.bin"), tmp_path / "missing.bin", PAYLOAD_SHA256, progress=False)


def test_file_urls_download_too(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    dest = download(source.as_uri(), tmp_path / "copy" / "source.bin", PAYLOAD_SHA256, progress=False)
    assert dest.read_bytes() == PAYLOAD


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.xz", "w:xz")])
def test_tar_archives_extract_into_the_target(tmp_path, suffix, mode):
    archive = tmp_path / f"data{suffix}"
    with tarfile.open(archive, mode) as tar:
        readonly_dir = tarfile.TarInfo("top/locked")
        readonly_dir.type, readonly_dir.mode = tarfile.DIRTYPE, 0o555
        tar.addfile(readonly_dir)
        add_bytes(tar, "top/locked/a.txt", b"alpha")
        add_bytes(tar, "top/b/c.txt", b"gamma")
    target = safe_extract(archive, tmp_path / "out")
    assert (target / "top/locked/a.txt").read_bytes() == b"alpha"
    assert (target / "top/b/c.txt").read_bytes() == b"gamma"
    assert leftovers(tmp_path) == [archive.name, "out"]


def test_zip_archives_extract_into_the_target(tmp_path):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/", "")
        zf.writestr("top/a.txt", b"alpha")
    target = safe_extract(archive, tmp_path / "out")
    assert (target / "top/a.txt").read_bytes() == b"alpha"


def test_existing_target_is_not_overwritten(tmp_path):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", b"alpha")
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="delete it to extract"):
        safe_extract(archive, tmp_path / "out")


def malicious_tar_member(kind: str, outside: Path) -> tarfile.TarInfo:
    if kind == "parent escape":
        return tarfile.TarInfo("../evil.txt")
    if kind == "absolute path":
        return tarfile.TarInfo(str(outside / "absolute.txt"))
    info = tarfile.TarInfo("inside/link")
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, str(outside / "target.txt")
    elif kind == "hard link":
        info.type, info.linkname = tarfile.LNKTYPE, "benign.txt"
    elif kind == "device":
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


@pytest.mark.parametrize("kind", ["parent escape", "absolute path", "symlink", "hard link", "device"])
def test_malicious_tar_members_are_refused_and_nothing_is_written(tmp_path, kind):
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = work / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        add_bytes(tar, "benign.txt", b"fine")
        info = malicious_tar_member(kind, outside)
        if info.isfile():
            add_bytes(tar, info.name, b"evil")
        else:
            tar.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="refusing to extract"):
        safe_extract(archive, work / "out")
    assert leftovers(work) == ["evil.tar"]
    assert leftovers(outside) == [] and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("kind", ["parent escape", "absolute path", "symlink", "fifo"])
def test_malicious_zip_members_are_refused_and_nothing_is_written(tmp_path, kind):
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("benign.txt", b"fine")
        if kind == "parent escape":
            zf.writestr("../evil.txt", b"evil")
        elif kind == "absolute path":
            zf.writestr(zipfile.ZipInfo(str(tmp_path / "absolute.txt")), b"evil")
        else:
            file_type = stat.S_IFLNK if kind == "symlink" else stat.S_IFIFO
            info = zipfile.ZipInfo("special")
            info.create_system, info.external_attr = 3, (file_type | 0o777) << 16
            zf.writestr(info, str(tmp_path / "evil.txt"))
    with pytest.raises(UnsafeArchiveError, match="refusing to extract"):
        safe_extract(archive, work / "out")
    assert leftovers(work) == ["evil.zip"]
    assert leftovers(tmp_path) == ["work"]


def test_find_dataset_root_looks_through_wrapper_folders(tmp_path):
    (tmp_path / "Wrapper" / "inner" / "marker").mkdir(parents=True)
    assert find_dataset_root(tmp_path, lambda p: (p / "marker").is_dir()) == tmp_path / "Wrapper" / "inner"
    assert find_dataset_root(tmp_path, lambda p: (p / "marker").is_dir(), max_depth=1) is None


def test_exhausted_retries_keep_the_part_for_the_next_call_to_resume(server, tmp_path):
    server.drop_after, server.keep_dropping = 30_000, True
    dest = tmp_path / "archive.bin"
    with pytest.raises(DownloadError, match=r"download failed 3 times; .*archive.bin.part keeps what arrived, rerun to resume"):
        download(server.url("archive.bin"), dest, PAYLOAD_SHA256, retries=3, progress=False)
    assert server.requests == [("/archive.bin", None), ("/archive.bin", "bytes=30000-"), ("/archive.bin", "bytes=60000-")]
    assert (tmp_path / "archive.bin.part").read_bytes() == PAYLOAD[:90_000]
    assert not dest.exists()

    server.drop_after = None
    download(server.url("archive.bin"), dest, PAYLOAD_SHA256, progress=False)
    assert server.requests[3:] == [("/archive.bin", "bytes=90000-")]
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "archive.bin.part").exists()


def test_server_errors_are_retried_and_client_errors_are_not(server, tmp_path):
    server.fail_with = [503, 502]
    dest = tmp_path / "archive.bin"
    download(server.url("archive.bin"), dest, PAYLOAD_SHA256, retries=3, progress=False)
    assert len(server.requests) == 3 and dest.read_bytes() == PAYLOAD

    server.fail_with = [500, 500, 500]
    with pytest.raises(DownloadError, match="download failed 3 times"):
        download(server.url("archive.bin"), tmp_path / "again.bin", PAYLOAD_SHA256, retries=3, progress=False)
    server.requests.clear()
    server.fail_with = [403]
    with pytest.raises(DownloadError, match="HTTP 403"):
        download(server.url("archive.bin"), tmp_path / "forbidden.bin", PAYLOAD_SHA256, retries=3, progress=False)
    assert len(server.requests) == 1


def test_a_206_for_other_bytes_than_asked_is_refused_and_the_part_kept(server, tmp_path):
    server.content_range = f"bytes 0-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
    part = tmp_path / "archive.bin.part"
    part.write_bytes(PAYLOAD[:70_000])
    with pytest.raises(DownloadError, match=r"answered Range bytes=70000- with 'bytes 0-199999/200000'; delete .*archive.bin.part and rerun"):
        download(server.url("archive.bin"), tmp_path / "archive.bin", PAYLOAD_SHA256, progress=False)
    assert server.requests == [("/archive.bin", "bytes=70000-")]  # not retried: rerunning would not change the answer
    assert part.read_bytes() == PAYLOAD[:70_000] and not (tmp_path / "archive.bin").exists()


def test_a_part_longer_than_the_file_gets_a_416_and_is_downloaded_again(server, tmp_path):
    (tmp_path / "archive.bin.part").write_bytes(PAYLOAD + b"bytes of another, longer file")
    dest = tmp_path / "archive.bin"
    download(server.url("archive.bin"), dest, PAYLOAD_SHA256, progress=False)
    assert server.requests == [("/archive.bin", f"bytes={len(PAYLOAD) + 29}-"), ("/archive.bin", None)]
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "archive.bin.part").exists()
