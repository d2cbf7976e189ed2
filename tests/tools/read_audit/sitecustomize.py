"""Read audit of every Python process started with this folder on ``PYTHONPATH`` and ``FSAD_READ_AUDIT`` set.

``FSAD_READ_AUDIT=<dir>``: the process records every file it opens (path and mode), every ``PIL.Image.open`` and the
ids each ``FeatureStore.load`` asks for per store, and writes ``<dir>/<pid>.json`` at exit (with ``sys.argv``, to tell
the Snakemake jobs apart). The recording is :mod:`tests/unit/read_audit.py`'s, loaded by path so that no ``tests``
package needs to be importable. Without the variable this file does nothing.
"""

import os

if os.environ.get("FSAD_READ_AUDIT"):
    import importlib.util
    import sys
    from pathlib import Path

    _path = Path(__file__).resolve().parents[2] / "unit" / "read_audit.py"
    _spec = importlib.util.spec_from_file_location("fsad_read_audit", _path)
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["fsad_read_audit"] = _module  # dataclasses look their module up in sys.modules
    _spec.loader.exec_module(_module)
    _module.audit_process(os.environ["FSAD_READ_AUDIT"])
