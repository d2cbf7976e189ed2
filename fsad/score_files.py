"""Score parquet files: one row per test image, and the file's own keys in its metadata.

The keys (scorer, method, dataset, category, setting, run, weights) and the software versions that computed the
scores (``environment``) travel inside the file, so evaluation, tables and plots never parse them out of a path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fsad.io import atomic_path

KEYS_METADATA = b"fsad"
SCORE_KEYS = ("scorer", "method", "dataset", "category", "setting", "run", "weights")
# Beside the keys: the software versions the scores were computed with (fsad.provenance.environment).
ENVIRONMENT_KEY = "environment"


def write_score_table(frame: pd.DataFrame, keys: dict[str, Any], path: str | Path) -> None:
    """Write ``frame`` as parquet with ``keys`` (all of :data:`SCORE_KEYS`) and the writing process's software
    versions (``environment``) in its metadata, atomically."""
    from fsad.provenance import environment

    missing = [key for key in SCORE_KEYS if key not in keys]
    if missing:
        raise ValueError(f"{path}: score keys {missing} missing")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    recorded = {**{k: keys[k] for k in SCORE_KEYS}, ENVIRONMENT_KEY: environment()}
    metadata = {**(table.schema.metadata or {}), KEYS_METADATA: json.dumps(recorded, sort_keys=True).encode()}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)


def read_score_keys(path: str | Path) -> dict[str, Any]:
    """The keys a score file carries (:data:`SCORE_KEYS` and ``environment``)."""
    metadata = pq.read_schema(path).metadata or {}
    if KEYS_METADATA not in metadata:
        raise ValueError(f"{path}: no fsad keys in its parquet metadata (written before score files carried them?); rerun its score job")
    return json.loads(metadata[KEYS_METADATA])
