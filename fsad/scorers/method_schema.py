"""Method parameter schemas as the workflow reads them: the YAML file with the fragments it includes merged in, and
which jobs read each property (``x-stages``).

A schema may list fragments under ``include:`` (paths relative to its folder), files that hold ``properties`` shared by
several methods (e.g. ``fsad/text/prompt_params.schema.yaml``). Their properties join the schema's own as if written
there: they take its top-level ``x-stages`` unless they give their own. A property is declared once: a name that the
schema and a fragment (or two fragments) both declare is an error, so no method can silently shadow a shared
definition.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

STAGES = ("fit", "score", "report")
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


@lru_cache(maxsize=None)
def schema_stages(schema: Path) -> dict[str, tuple[str, ...]]:
    """Stage -> the properties of the method schema at ``schema`` (fragments included) that it reads, in schema order.

    Each property's ``x-stages`` (a list of :data:`STAGES`) says which jobs read it; a property without one takes the
    schema's top-level ``x-stages``, and ``[fit, score]`` when the schema gives none. A change of a property reruns
    exactly the jobs of its stages.

    Raises:
        ValueError: an ``x-stages`` that is empty or names something other than a stage, with the schema and property;
            or a broken ``include`` (:func:`load_schema`).
    """

    def checked(declared: Any, where: str) -> list[str]:
        if not isinstance(declared, list) or not declared or not set(declared) <= set(STAGES):
            raise ValueError(f"{schema}: x-stages of {where} is {declared!r}; give a non-empty list of {list(STAGES)}")
        return declared

    document = load_schema(schema)
    default = checked(document.get("x-stages", ["fit", "score"]), "its top level")
    stages: dict[str, list[str]] = {stage: [] for stage in STAGES}
    for name, prop in document.get("properties", {}).items():
        for stage in checked(prop.get("x-stages", default) if isinstance(prop, dict) else default, f"property {name!r}"):
            stages[stage].append(name)
    return {stage: tuple(names) for stage, names in stages.items()}
