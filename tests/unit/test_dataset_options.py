"""Dataset options: each adapter kind's schema (fsad/data/adapters/<kind>.schema.yaml) checks them and fills defaults."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from PIL import Image

from fsad.config import ConfigError, check_datasets
from fsad.data.options import COMMON_KEYS
from fsad.data.registry import adapters, dataset_categories, get_adapter, prepare_dataset
from fsad.data.synthetic_defects import DEFECT_TYPES

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_DIR = ROOT / "fsad" / "data" / "adapters"
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"


def yaml_defaults(kind: str) -> dict:
    """Each property's default, read from the kind's schema file itself."""
    schema = yaml.safe_load((ADAPTER_DIR / f"{kind}.schema.yaml").read_text())
    return {key: sub["default"] for key, sub in schema["properties"].items()}


def declared(kind: str) -> set[str]:
    return set(get_adapter(kind).option_schema()["properties"])


# --- defaults, unknown keys, wrong values ---------------------------------------------------------------------------


def test_omitted_options_get_the_defaults_of_the_yaml():
    filled = get_adapter("synthetic").options({"name": "syn", "kind": "synthetic"})
    assert filled["copies"] == yaml_defaults("synthetic")["copies"] == 1
    assert filled == {"name": "syn", "kind": "synthetic", **yaml_defaults("synthetic")}
    assert get_adapter("elpv").options({"name": "cells", "kind": "elpv"})["anomaly_threshold"] == yaml_defaults("elpv")["anomaly_threshold"]


def test_given_options_and_common_keys_are_kept_and_the_spec_is_not_changed():
    spec = {"name": "syn", "kind": "synthetic", "root": "/data/syn", "categories": ["textile"], "extra_window_sizes": [7], "copies": 3}
    before = copy.deepcopy(spec)
    filled = get_adapter("synthetic").options(spec)
    assert spec == before
    assert filled == before | {key: value for key, value in yaml_defaults("synthetic").items() if key != "copies"}
    filled["defect_types"].append("scratch")
    assert get_adapter("synthetic").options(spec)["defect_types"] == yaml_defaults("synthetic")["defect_types"]


def test_an_unknown_option_is_refused_naming_the_key_and_the_options():
    with pytest.raises(ConfigError, match=r"^config: datasets\.syn\.copys: .*'copies'.*fix the spelling or remove the key"):
        get_adapter("synthetic").options({"name": "syn", "kind": "synthetic", "copys": 2})
    # an option of another kind is unknown too
    with pytest.raises(ConfigError, match=r"^config: datasets\.syn\.anomaly_threshold: dataset kind 'synthetic' has no such option"):
        get_adapter("synthetic").options({"name": "syn", "kind": "synthetic", "anomaly_threshold": 0.5})


def test_a_kind_without_options_refuses_any():
    with pytest.raises(ConfigError, match=r"^config: datasets\.parts\.seed: dataset kind 'mvtec_ad' takes no options .*remove the key"):
        get_adapter("mvtec_ad").options({"name": "parts", "kind": "mvtec_ad", "seed": 3})


@pytest.mark.parametrize(
    ("kind", "option", "value", "rule"),
    [
        ("synthetic", "copies", "two", "is not of type 'integer'"),
        ("synthetic", "copies", 0, "less than the minimum of 1"),
        ("synthetic", "image_size", 1.5, "is not of type 'integer'"),
        ("synthetic", "defect_types", "scratch", "is not of type 'array'"),
        ("synthetic", "defect_types", [], "should be non-empty"),
        ("synthetic", "source", "synthetic", "is not one of"),
        ("elpv", "anomaly_threshold", "high", "is not of type 'number'"),
        ("elpv", "anomaly_threshold", 1.0, "greater than or equal to the maximum of 1"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_key_and_the_rule(kind, option, value, rule):
    with pytest.raises(ConfigError, match=rf"^config: datasets\.d\.{option}(\.\d+)?: .*{rule}.*{kind}\.schema\.yaml"):
        get_adapter(kind).options({"name": "d", "kind": kind, option: value})


def test_a_wrong_list_item_names_its_index():
    with pytest.raises(ConfigError, match=r"^config: datasets\.d\.defect_types\.1: 'crack' is not one of"):
        get_adapter("synthetic").options({"name": "d", "kind": "synthetic", "defect_types": ["spot", "crack"]})


def test_prepare_and_categories_check_the_options_first(tmp_path):
    spec = {"name": "syn", "kind": "synthetic", "n_anomalys": 4}
    with pytest.raises(ConfigError, match=r"datasets\.syn\.n_anomalys"):
        dataset_categories(spec)
    with pytest.raises(ConfigError, match=r"datasets\.syn\.n_anomalys"):
        prepare_dataset(spec, tmp_path)
    assert not any(tmp_path.iterdir())


# --- check_datasets: the DAG-build check ------------------------------------------------------------------------------


def test_check_datasets_passes_the_default_and_refuses_a_typo_with_the_key_named():
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    check_datasets(config)
    synthetic = next(d for d in config["datasets"] if d["kind"] == "synthetic")
    synthetic["n_train_normal"] = 4
    with pytest.raises(ConfigError, match=rf"^config: datasets\.{synthetic['name']}\.n_train_normal: "):
        check_datasets(config)


def test_check_datasets_refuses_a_wrong_type():
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    elpv = next(d for d in config["datasets"] if d["kind"] == "elpv")
    elpv["anomaly_threshold"] = "half"
    with pytest.raises(ConfigError, match=rf"^config: datasets\.{elpv['name']}\.anomaly_threshold: 'half' is not of type 'number'"):
        check_datasets(config)


def test_a_typo_stops_the_dag_build_naming_the_key(tmp_path):
    from snakemake.utils import validate

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["datasets"][0]["catgories"] = ["x"]
    validate(config, schema=str(ROOT / "config" / "schema.yaml"))  # the common keys only: an option is not its business
    with pytest.raises(ConfigError, match=rf"datasets\.{config['datasets'][0]['name']}\.catgories"):
        check_datasets(config)
    common = ROOT / "rules" / "common.smk"
    lines = common.read_text().splitlines()
    assert lines.index("check_datasets(config)  # each kind's options: fsad/data/adapters/<kind>.schema.yaml") == lines.index('validate(config, schema="../config/schema.yaml")') + 1


# --- the schemas themselves ---------------------------------------------------------------------------------------------


def test_the_config_schema_validates_exactly_the_common_keys():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    items = schema["properties"]["datasets"]["items"]
    assert set(items["properties"]) == set(COMMON_KEYS) and items["additionalProperties"] is True
    assert sorted(items["properties"]["kind"]["enum"]) == sorted(adapters())


@pytest.mark.parametrize("kind", sorted(adapters()))
def test_every_adapter_schema_loads_and_declares_type_default_and_description(kind):
    adapter = get_adapter(kind)
    schema = adapter.option_schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert adapter.schema == ADAPTER_DIR / f"{kind}.schema.yaml"
    # a file exactly when the kind has options: no empty schema files
    assert adapter.schema.is_file() == bool(schema["properties"]), kind
    for key, sub in schema["properties"].items():
        assert {"type", "default", "description"} <= set(sub), f"{kind}.{key}"
        assert key not in COMMON_KEYS, f"{kind}.{key} is a common key"
    defaults = {key: sub["default"] for key, sub in schema["properties"].items()}
    jsonschema.validators.validator_for(schema)(schema).validate(defaults)


def test_no_schema_file_without_its_adapter():
    kinds = {path.name.removesuffix(".schema.yaml") for path in ADAPTER_DIR.glob("*.schema.yaml")}
    assert kinds == {kind for kind, adapter in adapters().items() if adapter.option_schema()["properties"]} == {"synthetic", "elpv", "brainmri", "headct"}


def test_synthetic_enums_follow_the_code():
    properties = get_adapter("synthetic").option_schema()["properties"]
    assert properties["defect_types"]["items"]["enum"] == properties["defect_types"]["default"] == list(DEFECT_TYPES)
    # any kind but itself and folder (a source runs with a name and a kind only; folder needs a root)
    assert set(properties["source"]["enum"]) == set(adapters()) - {"synthetic", "folder"}


# --- every key an adapter reads is declared ---------------------------------------------------------------------------


def _reads(tree: ast.AST) -> list[tuple[str | None, bool, int]]:
    """(key, read with a default, line) of every ``spec[...]`` / ``spec.get(...)``; key None when not a literal."""
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "spec":
            key = node.slice.value if isinstance(node.slice, ast.Constant) else None
            reads.append((key, False, node.lineno))
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "spec"
        ):
            key = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
            reads.append((key, len(node.args) > 1, node.lineno))
    return reads


def _registered_kinds(tree: ast.AST) -> set[str]:
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register" and node.args and isinstance(node.args[0], ast.Constant)
    }


@pytest.mark.parametrize("module", sorted(p.name for p in ADAPTER_DIR.glob("*.py")) + ["../registry.py"])
def test_adapter_modules_read_only_declared_keys_and_never_an_option_default(module):
    """Statically: a module reads the common keys and the options of the kinds it registers, each by a literal key,
    an option with ``spec[...]`` (the filled copy holds every option; a default in code would shadow the schema's)."""
    tree = ast.parse((ADAPTER_DIR / module).read_text())
    options = set().union(*(declared(kind) for kind in _registered_kinds(tree)))
    for key, with_default, line in _reads(tree):
        assert key is not None, f"{module}:{line}: reads the spec with a computed key; read each option by name"
        assert key in set(COMMON_KEYS) | options, f"{module}:{line}: reads {key!r}, which no schema of its kinds declares"
        assert not (with_default and key in options), f"{module}:{line}: gives option {key!r} a default in code; the schema has it"


class RecordingSpec(dict):
    """A spec that records the keys read from it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


def _save(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 16, 3), value, np.uint8)).save(path)


def _mvtec_tree(root: Path, category: str, normal: str = "good") -> Path:
    for split in ("train", "test"):
        _save(root / category / split / normal / "000.png")
    _save(root / category / "test/dent/001.png", 30)
    _save(root / category / "ground_truth/dent/001_mask.png", 255)
    return root


FIXTURE_SPECS = {
    "textile": lambda tmp: {},
    "elpv": lambda tmp: {"anomaly_threshold": 0.7},
    "synthetic": lambda tmp: {"n_train_normals": 1, "n_test_normals": 1, "n_anomalies": 2, "image_size": 32},
    "folder": lambda tmp: {"root": str(_mvtec_tree(tmp / "raw", "widget"))},
    "mvtec_ad": lambda tmp: {"root": str(_mvtec_tree(tmp / "raw", "bottle")), "categories": ["bottle"]},
    "btad": lambda tmp: {"root": str(_mvtec_tree(tmp / "raw", "01", normal="ok")), "categories": ["01"]},
    "mpdd": lambda tmp: {"root": str(_mvtec_tree(tmp / "raw", "tubes")), "categories": ["tubes"]},
}


@pytest.mark.parametrize("kind", sorted(FIXTURE_SPECS))
def test_preparing_a_tiny_dataset_reads_every_declared_option_and_nothing_undeclared(kind, tmp_path):
    """At run time, on tiny fixtures (visa and sdd, which need an archive's layout, are left to the static test)."""
    adapter = get_adapter(kind)
    spec = RecordingSpec(adapter.options({"name": "d", "kind": kind, **FIXTURE_SPECS[kind](tmp_path)}))
    adapter.categories(spec)
    manifest = adapter.prepare(spec, tmp_path / "data")
    assert len(manifest)
    assert spec.read <= set(COMMON_KEYS) | declared(kind), f"{kind} reads undeclared keys {sorted(spec.read - set(COMMON_KEYS) - declared(kind))}"
    assert declared(kind) <= spec.read, f"{kind} declares options it never reads: {sorted(declared(kind) - spec.read)}"
