"""Config: schema validation, cross-reference checks and canonical params."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from fsad.config import ConfigError, canonical, check_complete, check_config as check_config_with, check_datasets
from fsad.scorers.registry import get_method, method_params

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = str(ROOT / "config" / "schema.yaml")


def default_config():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(config, schema=SCHEMA)
    return config


def check_config(config):
    """What rules/common.smk does: the datasets' options, each instance's method and its parameters, then the checks."""
    check_complete(config)
    check_datasets(config)
    instances = config["scorers"]
    methods = {name: get_method(spec["method"]) for name, spec in instances.items()}
    check_config_with(config, methods, {name: method_params(methods[name], spec, f"scorers.{name}") for name, spec in instances.items()})


def test_the_embedded_default_validates_and_passes_the_checks():
    check_config(default_config())


def test_an_unknown_method_parameter_is_rejected_by_name():
    config = default_config()
    config["scorers"]["winclip"]["prompt_presett"] = "paper"
    with pytest.raises(Exception, match=r"scorers\.winclip.*prompt_presett"):
        check_config(config)


def test_an_instance_without_a_method_is_rejected_by_the_schema():
    config = default_config()
    config["scorers"]["winclip_copy"] = {"backbone": "vitb16plus"}
    with pytest.raises(Exception, match="method"):
        validate(config, schema=SCHEMA)


def test_an_unknown_method_names_the_known_ones():
    config = default_config()
    config["scorers"]["winclip"]["method"] = "winclipp"
    with pytest.raises(ValueError, match=r"unknown method 'winclipp'.*'anomalous_memory'.*'winclip'"):
        check_config(config)


def test_a_wrong_value_is_rejected():
    config = default_config()
    config["weights_fallback"] = "maybe"
    with pytest.raises(Exception, match="maybe"):
        validate(config, schema=SCHEMA)


def test_schemas_fill_defaults_from_the_config_schema_and_the_methods_own():
    config = default_config()
    assert config["backbones"]["vitb16plus"]["window_sizes"] == [2, 3]
    params = method_params(get_method("winclip"), config["scorers"]["winclip"])
    assert params["temperature"] is None and params["window_sizes"] == [2, 3] and "backbone" not in params
    assert method_params(get_method("anomalous_memory"), {})["window_sizes"] == [2, 3, 7]


def test_a_scorer_on_an_unknown_backbone_names_the_key():
    config = default_config()
    config["scorers"]["winclip"]["backbone"] = "nope"
    with pytest.raises(ConfigError, match="scorers.winclip.backbone"):
        check_config(config)


def test_anomalous_memory_on_a_dataset_without_masks_stops_with_a_clear_message():
    config = default_config()
    config["scorers"]["anomalous_memory"]["datasets"] = ["textile"]
    with pytest.raises(ConfigError, match="no anomaly masks"):
        check_config(config)


def test_a_setting_that_misses_a_methods_needs_is_refused_before_any_job():
    config = default_config()
    config["scorers"]["anomalous_memory"]["settings"] = ["k1"]  # no anomalous reference
    with pytest.raises(ConfigError, match="anomalous_shots: 1, setting 'k1' has 0"):
        check_config(config)
    config = default_config()
    config["settings"][2]["validation_normals"] = 0  # a1 without the normal the weight search validates on
    with pytest.raises(ConfigError, match="validation_normals >= 1"):
        check_config(config)
    config["scorers"]["anomalous_memory"]["distributions"] = []
    check_config(config)


def test_a_report_that_compares_with_a_missing_instance_is_refused():
    config = default_config()
    config["scorers"]["anomalous_memory"]["baseline_scorer"] = "winclip_paper"
    with pytest.raises(ConfigError, match="baseline_scorer names 'winclip_paper'"):
        check_config(config)


def test_normal_references_of_all_runs_must_fit_in_the_pool():
    config = default_config()
    # k1: 3 runs x 1 distinct normal reference + 1 validation normal > a pool of 3
    config["runs"], config["reference_pool"]["anomalous"], config["reference_pool"]["normal"] = 3, 3, 3
    with pytest.raises(ConfigError, match=r"setting 'k1' needs 4 normal images.*reference_pool.normal is 3"):
        check_config(config)
    config["reference_pool"]["normal"] = 4
    check_config(config)


def test_more_anomalous_runs_than_the_pool_holds_names_the_fix():
    config = default_config()
    config["runs"], config["reference_pool"]["normal"] = 3, 4
    with pytest.raises(ConfigError, match="reference_pool.anomalous"):
        check_config(config)


def score_params(instance_yaml: str) -> str:
    """What Snakemake compares for a score job of this instance: the repr of its canonical score params."""
    spec = yaml.safe_load(instance_yaml)
    method = get_method(spec.pop("method"))
    return repr(canonical(method.score_params(method_params(method, spec))))


@pytest.mark.parametrize(
    "first, second",
    [
        ("{method: winclip, temperature: 0.1}", "{method: winclip, temperature: 1.0e-1}"),
        ("{method: winclip, temperature: 1}", "{method: winclip, temperature: 1.0}"),
        ("{method: winclip, window_sizes: [2, 3]}", "{method: winclip, window_sizes: [2.0, 3]}"),
        ("{method: anomalous_memory, coverage_threshold: 0.5}", "{method: anomalous_memory, coverage_threshold: 5.0e-1}"),
        ("{method: anomalous_memory, n_draws: 100}", "{method: anomalous_memory, n_draws: 100.0}"),
        ("{method: anomalous_memory, score_weights: uniform, n_draws: 20}", "{n_draws: 20, score_weights: uniform, method: anomalous_memory}"),
        ("{method: winclip}", "{method: winclip, temperature: null, window_sizes: [2, 3]}"),  # the defaults spelled out
    ],
)
def test_equal_values_spelled_differently_give_identical_params_and_so_rerun_nothing(first, second):
    assert score_params(first) == score_params(second)


@pytest.mark.parametrize(
    "first, second",
    [
        ("{method: winclip, temperature: 0.1}", "{method: winclip, temperature: 0.11}"),
        ("{method: winclip, temperature: 1}", "{method: winclip, temperature: 2.0}"),
        ("{method: winclip, window_sizes: [2, 3]}", "{method: winclip, window_sizes: [3, 2]}"),
        ("{method: anomalous_memory, n_draws: 100}", "{method: anomalous_memory, n_draws: 101}"),
    ],
)
def test_different_values_give_different_params_and_so_rerun(first, second):
    assert score_params(first) != score_params(second)


def test_numbers_take_the_type_their_schema_declares():
    params = method_params(get_method("winclip"), yaml.safe_load("{temperature: 1, window_sizes: [2.0, 3]}"))
    assert type(params["temperature"]) is float and [type(k) for k in params["window_sizes"]] == [int, int]


def test_a_number_yaml_reads_as_text_is_refused_with_how_to_write_it():
    # PyYAML (YAML 1.1, as Snakemake loads configs) needs a dot and a signed exponent: 1e-1 is the string "1e-1".
    assert yaml.safe_load("temperature: 1e-1") == {"temperature": "1e-1"}
    with pytest.raises(ValueError, match=r"scorers\.winclip\.temperature: '1e-1' is not of type.*write it .*1\.0e-1.* or as 0\.1"):
        method_params(get_method("winclip"), {"temperature": "1e-1"}, "scorers.winclip")


def test_canonical_params_ignore_key_order():
    a = {"b": 1, "a": {"y": [1, 2], "x": 0.1}}
    b = {"a": {"x": 0.1, "y": [1, 2]}, "b": 1}
    assert repr(canonical(a)) == repr(canonical(b))
    assert repr(canonical(copy.deepcopy(a))) != repr(canonical({**a, "b": 2}))


def test_a_partial_config_and_an_enabled_switch_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="is the whole config, not an overlay"):
        check_complete({"runs": 2, "scorers": {}})
    config = default_config()
    config["scorers"]["winclip"]["enabled"] = False
    with pytest.raises(ConfigError, match="scorers.winclip.enabled: a config runs every scorer instance it lists"):
        check_complete(config)


def test_a_fusion_refuses_members_it_cannot_score_on_its_validation_set():
    config = default_config()
    config["scorers"]["fusion"]["members"] = ["winclip", "one_to_normal"]
    config["scorers"]["fusion"]["datasets"] = ["textile"]
    with pytest.raises(ConfigError, match="one_to_normal.*personalized"):
        check_config(config)
    config["scorers"]["fusion"]["members"] = ["winclip", "anomalous_memory"]
    config["scorers"]["fusion"]["datasets"] = ["synthetic"]
    with pytest.raises(ConfigError, match=r"'anomalous_memory' does not run settings \['k1'\]"):
        check_config(config)
    config["scorers"]["fusion"]["members"] = ["winclip", "nowhere"]
    with pytest.raises(ConfigError, match="'nowhere', which is not a scorer instance"):
        check_config(config)


def test_two_fusions_of_one_member_need_one_validation_set():
    config = default_config()
    config["scorers"]["fusion_b"] = {**config["scorers"]["fusion"], "validation": {"anomalies": 5}}
    with pytest.raises(ConfigError, match="another validation set"):
        check_config(config)
    config["scorers"]["fusion_b"]["validation"] = dict(config["scorers"]["fusion"]["validation"])
    check_config(config)
