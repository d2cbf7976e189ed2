"""Atomic file writes: write beside the target, then rename, so a killed job leaves nothing half-written."""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` when the block succeeds.

    The temporary file keeps the target's suffix (or ``suffix``) so libraries that dispatch on the
    extension (pandas, h5py, matplotlib) behave as for the real name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else "".join(target.suffixes), dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left beside ``target`` because their writer was killed (SIGKILL
    skips its cleanup); return them. Call it only from the one job that writes ``target``: a concurrent writer's
    temporary file has the same form."""
    target = Path(target)
    # tempfile.mkstemp names: the prefix, 8 characters of [a-z0-9_], the suffix
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}{re.escape(''.join(target.suffixes))}")
    if not target.parent.is_dir():
        return []
    stale = sorted(path for path in target.parent.iterdir() if pattern.fullmatch(path.name))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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
