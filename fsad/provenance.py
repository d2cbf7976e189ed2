"""The software a result was computed with: versions of python, the numeric libraries and fsad itself.

Every feature store index, ``fit.json``, ``dreambooth.json``, score file (parquet metadata and details JSON) and
metrics row records :func:`environment`. Versions come from the installed distributions' metadata
(``importlib.metadata``), so recording them imports none of the libraries (a score job with warm caches never
imports open_clip); torch's is ``torch.__version__``, which also names the build (``+cu130``, ``+cpu``). fsad's own entry is its package version plus, in a git checkout, the commit (``+dirty`` when
the tracked files differ from it).

Feature stores hold numbers that the torch, open_clip and timm versions decide (kernels, model code): a store written
under other versions than the running ones is refused (:func:`check_same_numerics`), never mixed silently.
"""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

# Recorded name -> distribution name.
DISTRIBUTIONS = {
    "torch": "torch",
    "open_clip": "open_clip_torch",
    "timm": "timm",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "numpy": "numpy",
}
# What decides a feature store's numbers: a store written under other versions of these is refused.
NUMERIC = ("torch", "open_clip")
# Decides them too (timm builds the timm backbones), checked against the stores that record it: stores written before
# it was recorded hold open_clip features, which stay readable.
NUMERIC_WHEN_RECORDED = ("timm",)


def _distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit(directory: Path) -> str | None:
    """``<commit>`` or ``<commit>+dirty`` of the checkout holding ``directory``; None outside git."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, check=True, timeout=10).stdout.strip()

        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def fsad_version() -> str:
    """fsad's package version, with ``(git <commit>)`` when the package lives in a git checkout."""
    import fsad

    commit = _git_commit(Path(fsad.__file__).resolve().parent)
    return f"{fsad.__version__} (git {commit})" if commit else fsad.__version__


@cache
def environment() -> dict[str, str | None]:
    """``{python, torch, open_clip, timm, diffusers, transformers, numpy, fsad}`` -> version (None: not installed)."""
    import torch  # every job has it loaded; its own version names the build too (2.14.1+cu130 vs +cpu)

    versions: dict[str, str | None] = {"python": platform.python_version()}
    versions |= {name: _distribution_version(dist) for name, dist in DISTRIBUTIONS.items()}
    versions["torch"] = torch.__version__
    versions["fsad"] = fsad_version()
    return versions


def environment_line(versions: dict[str, Any]) -> str:
    """One line for tables and metrics rows: ``python 3.11.7, torch 2.14.1, ..., fsad 0.1.0 (git 1a2b3c)``."""
    return ", ".join(f"{name} {version}" for name, version in versions.items() if version is not None)


class EnvironmentMismatchError(RuntimeError):
    """Stored numbers were computed under other library versions than the running ones."""


def check_same_numerics(recorded: dict[str, Any] | None, what: str, fix: str) -> None:
    """Raise :class:`EnvironmentMismatchError` when ``recorded`` (a stored :func:`environment`) has other
    :data:`NUMERIC` versions (and :data:`NUMERIC_WHEN_RECORDED` ones it records) than the running environment; the
    message names both sets and ``fix``."""
    names = NUMERIC + tuple(name for name in NUMERIC_WHEN_RECORDED if name in (recorded or {}))
    running = {name: environment()[name] for name in names}
    stored = {name: (recorded or {}).get(name) for name in names}
    if stored != running:
        def show(versions: dict[str, Any]) -> str:
            return ", ".join(f"{name} {version or 'unrecorded'}" for name, version in versions.items())

        raise EnvironmentMismatchError(
            f"{what} was written under {show(stored)}, but this environment runs {show(running)}: its numbers would mix "
            f"with ones computed now. Either install the versions it was written with (pip install -e . -c "
            f"requirements/lock.txt, from the commit that wrote it), or {fix}"
        )
