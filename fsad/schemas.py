"""JSON schemas written as YAML (method parameters, generators, dataset options), with shared fragments.

A schema may list fragments under ``include:`` (paths relative to its folder), files that hold ``properties`` shared by
several schemas (e.g. ``fsad/text/prompt_params.schema.yaml``). Their properties join the schema's own as if written
there: they take its top-level ``x-stages`` unless they give their own (:mod:`fsad.scorers.method_schema`). A property
is declared once: a name that the schema and a fragment (or two fragments) both declare is an error, so no method can
silently shadow a shared definition.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

FRAGMENT_KEYS = frozenset({"$schema", "description", "properties"})


@lru_cache(maxsize=None)
def load_schema(schema: Path) -> dict[str, Any]:
    """The JSON schema (YAML) at ``schema`` with its ``include:`` fragments merged into ``properties`` (after its own,
    in include order) and the ``include`` key gone. Shared: callers must not change it.

    Raises:
        ValueError: an ``include`` that is not a list of existing files, a fragment with keys other than
            :data:`FRAGMENT_KEYS`, or a property declared twice; naming the files.
    """
    import yaml

    path = Path(schema)
    document = yaml.safe_load(path.read_text())
    includes = document.pop("include", [])
    if not isinstance(includes, list) or not all(isinstance(item, str) for item in includes):
        raise ValueError(f"{path}: include is {includes!r}; give a list of fragment files relative to {path.parent}")
    properties = dict(document.get("properties", {}))
    declared_in = dict.fromkeys(properties, path)
    for item in includes:
        fragment_path = Path(os.path.normpath(path.parent / item))
        if not fragment_path.is_file():
            raise ValueError(f"{path}: the included fragment {item!r} does not exist ({fragment_path})")
        fragment = yaml.safe_load(fragment_path.read_text()) or {}
        extra = sorted(set(fragment) - FRAGMENT_KEYS)
        if extra:
            raise ValueError(f"{fragment_path}: a schema fragment holds properties only, not {extra}; put those in the including schema")
        for name, prop in fragment.get("properties", {}).items():
            if name in properties:
                raise ValueError(f"{path}: property {name!r} is declared in both {declared_in[name]} and {fragment_path}; declare it once")
            properties[name], declared_in[name] = prop, fragment_path
    if includes:
        document["properties"] = properties
    return document
