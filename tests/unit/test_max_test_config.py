"""``max_test_per_category``: null means every test image; the WinCLIP benchmark uses it, the anomalous-samples protocol keeps 100."""

from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def max_test_schema() -> dict:
    return yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())["properties"]["max_test_per_category"]


@pytest.mark.parametrize("value", [None, 1, 100])
def test_the_schema_accepts_null_and_positive_counts(value):
    jsonschema.validate(value, max_test_schema())


@pytest.mark.parametrize("value", [0, -3, "all"])
def test_the_schema_rejects_other_values(value):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, max_test_schema())


def test_the_default_stays_100_and_the_description_says_what_null_means():
    schema = max_test_schema()
    assert schema["default"] == 100 and "null" in schema["description"]


def benchmark(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / "benchmarks" / f"{name}.yaml").read_text())


def test_the_winclip_benchmark_evaluates_every_test_image():
    assert benchmark("winclip")["max_test_per_category"] is None


def test_benchmarks_with_the_anomalous_samples_protocol_cap_the_test_set_at_100():
    assert benchmark("anomalous_samples")["max_test_per_category"] == 100
    assert benchmark("winclip_anomalous_samples")["max_test_per_category"] == 100
