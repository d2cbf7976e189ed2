"""Dataset options: the keys of a ``datasets:`` entry beyond the common ones, checked against its kind's schema.

The common keys (:data:`COMMON_KEYS`) are validated by ``config/schema.yaml``. Every other key is an option of
the dataset's kind, declared with its type, default and description in ``fsad/data/adapters/<kind>.schema.yaml``
beside the adapter; a kind without such a file takes no options. Adapters read their options from the copy
:func:`filled_options` returns, never with a default of their own.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

# Keys of every datasets: entry, whatever its kind (config/schema.yaml validates them).
COMMON_KEYS = ("name", "kind", "root", "categories", "extra_window_sizes", "shots_file")
# The schema of a kind that declares no options.
NO_OPTIONS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def schema_path(module_file: str | Path, kind: str) -> Path:
    """Where the option schema of ``kind`` lives: ``<kind>.schema.yaml`` beside the adapter module."""
    return Path(module_file).with_name(f"{kind}.schema.yaml")


@cache
def load_schema(path: Path | None) -> dict[str, Any]:
    """The option schema at ``path``, or :data:`NO_OPTIONS` when there is none."""
    if path is None or not path.is_file():
        return NO_OPTIONS
    return yaml.safe_load(path.read_text())


def filled_options(spec: dict[str, Any], kind: str, path: Path | None) -> dict[str, Any]:
    """A copy of ``spec`` whose options are checked against the schema at ``path``, defaults filled in.

    Raises:
        ConfigError: ``config: datasets.<name>.<key>: ...``, naming the key, the rule it breaks and the fix.
    """
    from fsad.config import ConfigError, validated

    where = f"datasets.{spec.get('name', kind)}"
    schema = load_schema(path)
    own = {key: copy.deepcopy(value) for key, value in spec.items() if key not in COMMON_KEYS}
    unknown = sorted(set(own) - set(schema["properties"]))
    if unknown:
        raise ConfigError(f"config: {where}.{unknown[0]}: {_unknown_option(kind, schema, path)}")
    if schema["properties"]:  # else own is empty: every key would be unknown
        own = validated(path, own, where, f"options of dataset kind {kind!r}")
    return {**{key: copy.deepcopy(spec[key]) for key in COMMON_KEYS if key in spec}, **own}


def _unknown_option(kind: str, schema: dict[str, Any], path: Path | None) -> str:
    common = ", ".join(COMMON_KEYS)
    if not schema["properties"]:
        return f"dataset kind {kind!r} takes no options beyond {common}; remove the key"
    return (
        f"dataset kind {kind!r} has no such option; its options are {sorted(schema['properties'])} ({path}), "
        f"besides {common}; fix the spelling or remove the key"
    )
