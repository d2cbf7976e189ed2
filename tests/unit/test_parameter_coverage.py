"""Every parameter a schema declares has a test that proves it reaches its maths.

The parameter tests (``tests/unit/test_parameters_*.py``) each hold ``COVERED``: ``"<owner>.<dotted name>"`` -> the name
of the test function in that module that pins it, or ``"exempt: <reason>"``. Owners are the built-in methods (their
``schema.yaml``) and ``generator`` (``fsad/diffusion/schema.yaml``). A parameter added to a schema without such a
test fails here, by name.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from fsad.schemas import load_schema
from fsad.scorers.registry import builtin_method_modules, load_method

HERE = Path(__file__).parent
GENERATOR_SCHEMA = HERE.parents[1] / "fsad" / "diffusion" / "schema.yaml"


def schema_parameters(schema: dict, prefix: str = "") -> list[str]:
    """Dotted names of a schema's properties; an object with its own properties is named by its leaves, a list of
    objects by itself and its items' properties."""
    names = []
    for name, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and sub.get("properties"):
            names += schema_parameters(sub, f"{prefix}{name}.")
        else:
            names.append(f"{prefix}{name}")
            if isinstance(sub.get("items"), dict) and sub["items"].get("properties"):
                names += schema_parameters(sub["items"], f"{prefix}{name}.")
    return names


def declared_parameters() -> list[str]:
    names = []
    for method, module in builtin_method_modules().items():
        schema = load_schema(load_method(module).schema)  # its included fragments' properties too
        names += [f"{method}.{name}" for name in schema_parameters(schema)]
    names += [f"generator.{name}" for name in schema_parameters(yaml.safe_load(GENERATOR_SCHEMA.read_text()))]
    return sorted(names)


def parameter_modules() -> dict[str, object]:
    return {path.stem: importlib.import_module(f"tests.unit.{path.stem}") for path in sorted(HERE.glob("test_parameters_*.py"))}


def covered() -> dict[str, tuple[str, str]]:
    """Parameter -> (module, test function or exemption) over every parameter test module."""
    table: dict[str, tuple[str, str]] = {}
    for name, module in parameter_modules().items():
        for parameter, how in module.COVERED.items():
            assert parameter not in table, f"{parameter} is covered by both {table[parameter][0]} and {name}"
            table[parameter] = (name, how)
    return table


def test_schema_parameters_are_found_with_their_nested_names():
    schema = {"properties": {"a": {"type": "number"}, "pool": {"type": "object", "properties": {"steps": {}, "strength": {}}},
                             "free": {"type": "object", "additionalProperties": True},
                             "rows": {"type": "array", "items": {"type": "object", "properties": {"label": {}}}}}}
    assert schema_parameters(schema) == ["a", "pool.steps", "pool.strength", "free", "rows", "rows.label"]


def test_every_schema_parameter_has_a_test_that_pins_it():
    missing = sorted(set(declared_parameters()) - set(covered()))
    assert not missing, f"parameters without a test that proves they reach their maths (add them to a COVERED table): {missing}"


def test_covered_parameters_exist_and_name_a_test_or_a_reason():
    table = covered()
    unknown = sorted(set(table) - set(declared_parameters()))
    assert not unknown, f"COVERED names parameters no schema declares (renamed or removed?): {unknown}"
    modules = parameter_modules()
    for parameter, (module, how) in table.items():
        if how.startswith("exempt:"):
            assert len(how) > len("exempt: ") + 10, f"{parameter}: say why it is exempt"
        else:
            assert callable(getattr(modules[module], how, None)) and how.startswith("test_"), f"{parameter}: {module} has no test {how!r}"


@pytest.mark.parametrize("owner", ["generator", *sorted(builtin_method_modules())])
def test_each_owner_has_parameter_tests(owner):
    assert any(parameter.startswith(f"{owner}.") for parameter in covered())
