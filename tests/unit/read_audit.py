"""Record what code reads inside a block: every file it opens, every ``PIL.Image.open``, every feature-store load.

Leak guards assert on what a stage *read*, observed at the lowest practical layer, never on what it wrote in its
own index: a stage that records the right ids but reads others still fails.

In-process (unit tests)::

    from .read_audit import read_audit

    with read_audit() as audit:
        stage(...)
    audit.files_read()           # resolved paths opened for reading (builtins.open, os.open, io.open_code, ...)
    audit.pil_paths()            # resolved paths given to PIL.Image.open
    audit.store_ids(store_path)  # ids FeatureStore.load was asked for from that store (every store without one)
    audit.stores()               # the stores loaded from

Whole processes (workflow jobs run their scripts in their own interpreters): put ``tests/tools/read_audit`` on
``PYTHONPATH`` and set ``FSAD_READ_AUDIT`` to a directory; its ``sitecustomize.py`` calls :func:`audit_process`,
so every Python process records the same things and writes ``<dir>/<pid>.json`` at exit (``argv``, ``opened``:
``[{"path", "mode"}]``, ``pil``, ``loads``: store -> ids), read back with :func:`read_process_audits`.

Why both an audit hook and patches: the ``open`` audit event sees every file a process opens, whatever the
library, but not HDF5's own file access (C code), so feature-store reads are recorded at ``FeatureStore.load``,
with the ids asked for. This module imports neither PIL nor fsad at import time (sitecustomize loads it first).
"""

from __future__ import annotations

import atexit
import importlib.abc
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ENVIRONMENT_VARIABLE = "FSAD_READ_AUDIT"
_ACTIVE: list[ReadAudit] = []
_HOOK_INSTALLED = False


def _mode_of_flags(flags: int) -> str:
    return {os.O_RDONLY: "r", os.O_WRONLY: "w", os.O_RDWR: "r+"}.get(flags & os.O_ACCMODE, "?")


def is_read_mode(mode: str) -> bool:
    """Whether a file opened in ``mode`` (builtins.open's, or ``r``/``w``/``r+`` of os.open's flags) reads what was there
    (``w+`` truncates first: PIL saves with it, and reading back what one writes is not reading an input)."""
    return "r" in mode or ("+" in mode and "w" not in mode)


@dataclass
class ReadAudit:
    """What was read while the recorder was active (paths absolute, as opened; ids in the order asked for)."""

    opened: list[tuple[str, str]] = field(default_factory=list)
    pil: list[str] = field(default_factory=list)
    loads: list[tuple[str, list[str]]] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def _record_open(self, path: str, mode: str) -> None:
        if (path, mode) not in self._seen:
            self._seen.add((path, mode))
            self.opened.append((path, mode))

    def files_read(self) -> set[Path]:
        """Every file opened for reading, resolved (symlinks followed)."""
        return {Path(path).resolve() for path, mode in self.opened if is_read_mode(mode)}

    def files_written(self) -> set[Path]:
        return {Path(path).resolve() for path, mode in self.opened if any(c in mode for c in "wax+")}

    def pil_paths(self) -> set[Path]:
        return {Path(path).resolve() for path in self.pil}

    def stores(self) -> set[Path]:
        return {Path(store) for store, _ in self.loads}

    def store_ids(self, store: str | Path | None = None) -> set[str]:
        """Ids loaded from ``store`` (every store when None)."""
        wanted = None if store is None else Path(store).resolve()
        return {i for path, ids in self.loads if wanted is None or Path(path) == wanted for i in ids}

    def as_json(self) -> dict[str, Any]:
        loads: dict[str, list[str]] = {}
        for store, ids in self.loads:
            known = loads.setdefault(store, [])
            known += [i for i in ids if i not in known]
        return {"argv": list(sys.argv), "pid": os.getpid(), "opened": [{"path": p, "mode": m} for p, m in self.opened],
                "pil": list(dict.fromkeys(self.pil)), "loads": loads}


def _on_audit_event(event: str, args: tuple) -> None:
    # Runs on every audit event of the process: return at once unless it is an open while a recorder listens.
    if event != "open" or not _ACTIVE:
        return
    try:
        path, mode, flags = args
        if path is None or isinstance(path, int):  # an already open descriptor
            return
        path = os.path.abspath(os.fsdecode(path))
        mode = mode if isinstance(mode, str) else _mode_of_flags(flags)
        for audit in list(_ACTIVE):
            audit._record_open(path, mode)
    except Exception:  # noqa: BLE001 - an audit hook that raises would abort the open it observes
        pass


def _install_hook() -> None:
    global _HOOK_INSTALLED
    if not _HOOK_INSTALLED:  # audit hooks cannot be removed: one per process, silent while no recorder is active
        sys.addaudithook(_on_audit_event)
        _HOOK_INSTALLED = True


def _recording_pil_open(original: Callable) -> Callable:
    def open(fp, *args, **kwargs):  # noqa: A001 - stands in for PIL.Image.open
        name = fp if isinstance(fp, (str, os.PathLike)) else getattr(fp, "name", None)
        if isinstance(name, (str, os.PathLike)):
            for audit in list(_ACTIVE):
                audit.pil.append(os.path.abspath(os.fspath(name)))
        return original(fp, *args, **kwargs)

    open.__wrapped__ = original
    return open


def _recording_load(original: Callable) -> Callable:
    def load(self, image_ids, *args, **kwargs):
        ids = [str(i) for i in image_ids]
        store = str(Path(self.path).resolve())
        for audit in list(_ACTIVE):
            audit.loads.append((store, ids))
        return original(self, image_ids, *args, **kwargs)

    load.__wrapped__ = original
    return load


def _patch_pil(module: ModuleType) -> Callable[[], None]:
    original = module.open
    module.open = _recording_pil_open(original)
    return lambda: setattr(module, "open", original)


def _patch_store(module: ModuleType) -> Callable[[], None]:
    original = module.FeatureStore.load
    module.FeatureStore.load = _recording_load(original)
    return lambda: setattr(module.FeatureStore, "load", original)


PATCHES: dict[str, Callable[[ModuleType], Callable[[], None]]] = {"PIL.Image": _patch_pil, "fsad.features.store": _patch_store}
_patched: dict[str, Callable[[], None]] = {}  # module -> undo, while in-process recorders are active
_users = 0


@contextmanager
def read_audit() -> Iterator[ReadAudit]:
    """Record, in this process, what the block reads (recorders nest; each sees what happened while it was active)."""
    global _users
    import importlib

    _install_hook()
    if _users == 0 and not _process_audit_installed():
        for name, patch in PATCHES.items():
            _patched[name] = patch(importlib.import_module(name))
    _users += 1
    audit = ReadAudit()
    _ACTIVE.append(audit)
    try:
        yield audit
    finally:
        _ACTIVE.remove(audit)
        _users -= 1
        if _users == 0:
            for undo in _patched.values():
                undo()
            _patched.clear()


class _PatchingLoader(importlib.abc.Loader):
    """Runs the module as its own loader would, then patches it."""

    def __init__(self, loader: importlib.abc.Loader, patch: Callable[[ModuleType], object]):
        self.loader, self.patch = loader, patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.patch(module)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches the modules of :data:`PATCHES` as they are first imported (sitecustomize runs before any of them)."""

    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, PATCHES[name])
                return spec
        return None


def _process_audit_installed() -> bool:
    return any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path)


def audit_process(directory: str | Path) -> ReadAudit:
    """Record everything this process reads from now on; write ``<directory>/<pid>.json`` when it exits."""
    directory = Path(directory)
    audit = ReadAudit()
    _install_hook()
    if not _process_audit_installed():
        sys.meta_path.insert(0, _PatchOnImport())
        for name, patch in PATCHES.items():
            if name in sys.modules:
                patch(sys.modules[name])
    _ACTIVE.append(audit)

    def write() -> None:
        _ACTIVE.remove(audit)  # the report's own file is not something the process read
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{os.getpid()}.json.tmp"
        tmp.write_text(json.dumps(audit.as_json()))
        tmp.replace(directory / f"{os.getpid()}.json")

    atexit.register(write)
    return audit


def read_process_audits(directory: str | Path) -> list[dict[str, Any]]:
    """The reports :func:`audit_process` wrote into ``directory``, one per process."""
    return [json.loads(path.read_text()) for path in sorted(Path(directory).glob("*.json"))]
