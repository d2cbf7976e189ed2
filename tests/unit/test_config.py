"""Config: schema validation, cross-reference checks and canonical params."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from fsad.config import ConfigError, canonical, check_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = str(ROOT / "config" / "schema.yaml")


def default_config():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate(config, schema=SCHEMA)
    return config


def test_the_embedded_default_validates_and_passes_the_checks():
    check_config(default_config())


def test_an_unknown_key_is_rejected_by_name():
    config = default_config()
    config["scorers"]["winclip"]["prompt_presett"] = "paper"
    with pytest.raises(Exception, match="prompt_presett"):
        validate(config, schema=SCHEMA)


def test_a_wrong_value_is_rejected():
    config = default_config()
    config["weights_fallback"] = "maybe"
    with pytest.raises(Exception, match="maybe"):
        validate(config, schema=SCHEMA)


def test_schema_fills_defaults():
    config = default_config()
    assert config["backbones"]["vitb16plus"]["window_sizes"] == [2, 3]
    assert config["scorers"]["winclip"]["temperature"] == 0.07


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


def test_more_anomalous_runs_than_the_pool_holds_names_the_fix():
    config = default_config()
    config["runs"] = 3
    with pytest.raises(ConfigError, match="reference_pool.anomalous"):
        check_config(config)


def test_canonical_params_ignore_key_order():
    a = {"b": 1, "a": {"y": [1, 2], "x": 0.1}}
    b = {"a": {"x": 0.10, "y": [1, 2]}, "b": 1}
    assert repr(canonical(a)) == repr(canonical(b))
    assert repr(canonical(copy.deepcopy(a))) != repr(canonical({**a, "b": 2}))
