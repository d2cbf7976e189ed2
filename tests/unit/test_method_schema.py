"""Method schemas with shared fragments (``include:``): merged properties, defaults and validation, stages inherited from
the including schema, and the errors of a property declared twice or a broken include."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from fsad.scorers.method import Fit, Method, Report
from fsad.schemas import load_schema
from fsad.scorers.method_schema import schema_stages
from fsad.scorers.registry import MethodError, get_method, load_method, method_params

ROOT = Path(__file__).resolve().parents[2]
FRAGMENT = """
description: shared knobs
properties:
  shared: {type: integer, minimum: 0, default: 3}
  learned: {x-stages: [fit, score], type: number, default: 0.5}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def schema_with(tmp_path: Path, own: str = "  own: {type: string, default: a}\n", top: str = "x-stages: [score]\n",
                include: str = "include: [../shared/knobs.schema.yaml]\n") -> Path:
    write(tmp_path, "shared/knobs.schema.yaml", FRAGMENT)
    return write(tmp_path, "method/schema.yaml", f"type: object\nadditionalProperties: false\n{top}{include}properties:\n{own}")


def test_included_properties_join_the_schemas_own_after_them_and_the_include_key_goes(tmp_path):
    document = load_schema(schema_with(tmp_path))
    assert "include" not in document
    assert list(document["properties"]) == ["own", "shared", "learned"]
    assert document["properties"]["shared"] == {"type": "integer", "minimum": 0, "default": 3}


def test_included_properties_get_their_defaults_and_rules_as_the_schemas_own(tmp_path):
    method = Method("m", "m:score", schema_with(tmp_path), fit=Fit(run="m:f"))
    assert method_params(method, {}) == {"own": "a", "shared": 3, "learned": 0.5}
    assert method_params(method, {"shared": 7})["shared"] == 7
    with pytest.raises(MethodError, match=r"scorers\.m\.shared: -1 is less than the minimum of 0"):
        method_params(method, {"shared": -1}, "scorers.m")
    with pytest.raises(MethodError, match="'unknown' was unexpected"):
        method_params(method, {"unknown": 1}, "scorers.m")


def test_included_properties_take_the_including_schemas_stages_unless_they_give_their_own(tmp_path):
    score_only = schema_stages(schema_with(tmp_path / "score"))
    assert score_only == {"fit": ("learned",), "score": ("own", "shared", "learned"), "report": ()}
    with_fit = schema_stages(schema_with(tmp_path / "fit", top="x-stages: [fit, score]\n"))
    assert with_fit == {"fit": ("own", "shared", "learned"), "score": ("own", "shared", "learned"), "report": ()}
    no_default = schema_stages(schema_with(tmp_path / "plain", top=""))
    assert no_default["fit"] == no_default["score"] == ("own", "shared", "learned")
    reported = schema_with(tmp_path / "report", top="x-stages: [report]\n")
    method = Method("r", "r:score", reported, report=Report(write="r:w", caption=Path("c.rst")))
    assert method.stage_names("report") == ("own", "shared") and method.report_params({"shared": 1, "learned": 2.0}) == {"shared": 1}


def test_a_property_in_both_the_schema_and_a_fragment_is_an_error_naming_both_files(tmp_path):
    schema = schema_with(tmp_path, own="  shared: {type: integer, default: 9}\n")
    with pytest.raises(ValueError, match=r"property 'shared' is declared in both .*method/schema\.yaml and .*knobs\.schema\.yaml; declare it once"):
        load_schema(schema)


def test_a_property_in_two_fragments_is_an_error(tmp_path):
    write(tmp_path, "shared/again.schema.yaml", "properties:\n  learned: {type: number}\n")
    schema = schema_with(tmp_path, include="include: [../shared/knobs.schema.yaml, ../shared/again.schema.yaml]\n")
    with pytest.raises(ValueError, match=r"property 'learned' is declared in both .*knobs\.schema\.yaml and .*again\.schema\.yaml"):
        load_schema(schema)


@pytest.mark.parametrize(
    "include, fragment, message",
    [
        ("include: shared/knobs.schema.yaml\n", FRAGMENT, "include is 'shared/knobs.schema.yaml'; give a list"),
        ("include: [../shared/missing.yaml]\n", FRAGMENT, "the included fragment '../shared/missing.yaml' does not exist"),
        ("include: [../shared/knobs.schema.yaml]\n", "x-stages: [fit]\nproperties: {}\n", r"holds properties only, not \['x-stages'\]"),
    ],
)
def test_a_broken_include_is_refused_when_the_method_is_loaded(tmp_path, monkeypatch, include, fragment, message):
    schema = schema_with(tmp_path, include=include)
    write(tmp_path, "shared/knobs.schema.yaml", fragment)
    module = f"broken_include_{abs(hash(include + fragment))}"
    write(tmp_path, f"{module}.py", "from pathlib import Path\nfrom fsad.scorers.method import Method\n"
                                    f"METHOD = Method(name='broken', score='b:score', schema=Path({str(schema)!r}))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(MethodError, match=message):
        load_method(module)


@pytest.mark.parametrize(
    "method, fragments",
    [
        ("winclip", ["prompt_params", "class_name"]),
        ("anomalous_memory", ["prompt_params", "class_name"]),
        ("one_to_normal", ["prompt_params", "class_name"]),
        ("devprompt", ["class_name"]),
    ],
)
def test_built_in_methods_take_their_shared_text_parameters_from_the_fragments(method, fragments):
    declared = get_method(method)
    properties = load_schema(declared.schema)["properties"]
    own = yaml.safe_load(declared.schema.read_text())["properties"]
    for fragment in fragments:
        shared = yaml.safe_load((ROOT / "fsad" / "text" / f"{fragment}.schema.yaml").read_text())["properties"]
        for name, definition in shared.items():
            assert name not in own and properties[name] == definition
            # no shared property sets its own stages: each takes the method's default, as its own properties do
            assert "x-stages" not in definition
