"""Which jobs read each property of a method's parameter schema (``x-stages``); fragments (``include:``) are merged
by :func:`fsad.schemas.load_schema`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fsad.schemas import load_schema

STAGES = ("fit", "score", "report")


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
