"""Atomic file writes: write beside the target, then rename, so a killed job leaves nothing half-written."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)
# Temporary names: ``.{target name}.`` + 8 characters of [a-z0-9_] (tempfile's form, which the stale-file patterns
# below match) + the suffix.
_TEMPORARY_NAME = r"\.{name}\.[a-z0-9_]{{8}}{suffix}"


def _create_beside(target: Path, suffix: str, create: Callable[[Path], None]) -> Path:
    """A new temporary path beside ``target``, made by ``create`` (which fails if the path exists).

    Not ``tempfile.mkstemp``/``mkdtemp``: they create 0600 files and 0700 directories, and the rename carries that
    mode onto the result. ``os.open(..., 0o666)`` and ``os.mkdir(..., 0o777)`` apply the process umask instead, so
    results get an ordinary file's or directory's permissions (a cluster group can read them under umask 002 or 022).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = target.parent / f".{target.name}.{secrets.token_hex(4)}{suffix}"
        try:
            create(path)
            return path
        except FileExistsError:
            continue


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _give_ordinary_modes(root: Path, directory_mode: int) -> None:
    """Give every file under ``root`` an ordinary file's mode (``directory_mode`` without execute bits) and every
    directory ``directory_mode``; links are left alone. Writers that replace their file (safetensors' ``save_file``
    writes a 0600 file and renames it onto the path) would otherwise keep results from the group."""
    for folder, directories, files in os.walk(root):
        for name in directories:
            if not os.path.islink(os.path.join(folder, name)):
                os.chmod(os.path.join(folder, name), directory_mode)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, directory_mode & 0o666)


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` when the block succeeds.

    The temporary file keeps the target's suffix (or ``suffix``) so libraries that dispatch on the
    extension (pandas, h5py, matplotlib) behave as for the real name. The result has the permissions of an
    ordinary file under the process umask, whatever the writer did to the temporary file.
    """
    target = Path(target)
    tmp_path = _create_beside(target, suffix if suffix is not None else "".join(target.suffixes), _create_file)
    file_mode = _mode(tmp_path)  # 0o666 under the umask
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left beside ``target`` because their writer was killed (SIGKILL
    skips its cleanup); return them. Call it only from the one job that writes ``target``: a concurrent writer's
    temporary file has the same form."""
    target = Path(target)
    pattern = re.compile(_TEMPORARY_NAME.format(name=re.escape(target.name), suffix=re.escape("".join(target.suffixes))))
    if not target.parent.is_dir():
        return []
    stale = sorted(path for path in target.parent.iterdir() if pattern.fullmatch(path.name))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty directory beside ``target``; it replaces ``target`` when the block succeeds, else it is removed.

    The directory has an ordinary directory's permissions under the process umask (``os.mkdir``'s 0o777 masked),
    not ``tempfile.mkdtemp``'s 0700, and so do its subdirectories; its files have an ordinary file's. A killed job leaves at worst a hidden ``.{name}.*`` directory, never a
    half-written ``target``; the next write of ``target`` (one job writes it) removes what killed ones left.
    """
    target = Path(target)
    stale = re.compile(_TEMPORARY_NAME.format(name=re.escape(target.name), suffix=""))
    if target.parent.is_dir():
        for leftover in [p for p in target.parent.iterdir() if p.is_dir() and stale.fullmatch(p.name)]:
            log.warning("removing %s, left by a job writing %s that was killed", leftover, target.name)
            shutil.rmtree(leftover, ignore_errors=True)
    tmp = _create_beside(target, "", lambda path: os.mkdir(path, 0o777))
    directory_mode = _mode(tmp)
    try:
        yield tmp
        _give_ordinary_modes(tmp, directory_mode)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically (sorted keys keep files byte-identical across runs)."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_figure(figure: Any, target: str | os.PathLike, dpi: int, **savefig: Any) -> Path:
    """Write a matplotlib figure as PNG atomically (creating its folder), close it, and return the path."""
    import matplotlib.pyplot as plt

    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, **savefig)
    plt.close(figure)
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error when it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found; rerun the stage that writes it") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it and rerun the stage that writes it") from err
