"""Dataset adapters: each kind knows its categories and how to build a manifest.

An adapter is registered with :func:`register` and implements two functions:

* ``categories(spec) -> list[str]``: the categories, known before any download (Snakemake needs
  them to build the DAG). ``spec["categories"]`` in the config restricts them.
* ``prepare(spec, data_dir) -> DataFrame``: download/extract/read whatever is needed and return the
  manifest rows (columns :data:`fsad.data.manifest.MANIFEST_COLUMNS`, absolute paths).
  ``data_dir`` is ``{results_dir}/data/{dataset}``; raw downloads go to ``spec["root"]`` when set,
  else to ``data_dir / "raw"``.

Both receive the spec with the kind's options checked and their defaults filled in
(:meth:`DatasetAdapter.options`): the options, their types, defaults and descriptions are declared in
``<kind>.schema.yaml`` beside the adapter module (see :mod:`fsad.data.options`); a kind without one takes none.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from fsad.data.manifest import validate_manifest
from fsad.data.options import filled_options, load_schema, schema_path

DatasetSpec = dict[str, Any]


@dataclass(frozen=True)
class DatasetAdapter:
    kind: str
    categories: Callable[[DatasetSpec], list[str]]
    prepare: Callable[[DatasetSpec, Path], pd.DataFrame]
    has_masks: bool = True
    schema: Path | None = None  # the option schema's file, <kind>.schema.yaml beside the module; none there: no options

    def option_schema(self) -> dict[str, Any]:
        """The JSON schema of the kind's options (read on first use)."""
        return load_schema(self.schema)

    def options(self, spec: DatasetSpec) -> DatasetSpec:
        """A copy of ``spec`` with the options checked against :meth:`option_schema` and defaults filled in.

        Raises:
            fsad.config.ConfigError: ``config: datasets.<name>.<key>: ...`` for an unknown option or a bad value.
        """
        return filled_options(spec, self.kind, self.schema)


ADAPTERS: dict[str, DatasetAdapter] = {}


def register(kind: str, categories: Callable[[DatasetSpec], list[str]], has_masks: bool = True):
    """Decorator registering ``prepare`` for ``kind``; its options are declared in ``<kind>.schema.yaml`` beside it."""

    def wrap(prepare: Callable[[DatasetSpec, Path], pd.DataFrame]):
        schema = schema_path(sys.modules[prepare.__module__].__file__, kind)
        ADAPTERS[kind] = DatasetAdapter(kind, categories, prepare, has_masks, schema)
        return prepare

    return wrap


def get_adapter(kind: str) -> DatasetAdapter:
    _load_builtin_adapters()
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}; known kinds: {sorted(ADAPTERS)}") from None


def adapters() -> dict[str, DatasetAdapter]:
    """Every registered adapter, by kind."""
    _load_builtin_adapters()
    return dict(ADAPTERS)


def dataset_categories(spec: DatasetSpec) -> list[str]:
    """Categories of a configured dataset (options checked first), restricted by ``spec['categories']`` when given."""
    adapter = get_adapter(spec["kind"])
    available = adapter.categories(adapter.options(spec))
    wanted = spec.get("categories")
    if not wanted:
        return list(available)
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise ValueError(f"dataset {spec['name']!r}: unknown categories {unknown}; available: {available}")
    return list(wanted)


def raw_root(spec: DatasetSpec, data_dir: Path) -> Path:
    """Where an adapter finds or places its raw files."""
    return Path(spec["root"]).expanduser().resolve() if spec.get("root") else Path(data_dir).resolve() / "raw"


def prepare_dataset(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    """Run the adapter of ``spec['kind']`` (options checked first) and return its validated manifest, restricted to
    the configured categories."""
    adapter = get_adapter(spec["kind"])
    df = adapter.prepare(adapter.options(spec), Path(data_dir))
    df = df[df["category"].isin(dataset_categories(spec))]
    return validate_manifest(df, f"dataset {spec['name']!r}")


def _load_builtin_adapters() -> None:
    # Importing the modules registers their adapters; kept lazy so `fsad.data` imports stay cheap.
    import fsad.data.adapters  # noqa: F401
