"""Paper benchmark configs: each dry-runs, and its job counts per rule follow from its protocol."""

from __future__ import annotations

import re

import pytest

from .conftest import ROOT, snakemake

BENCHMARKS = ROOT / "config" / "benchmarks"
# Categories per dataset, from the datasets' own documentation (not from this project's code).
CATEGORIES = {"mvtec_ad": 15, "visa": 12, "sdd": 1}


def job_counts(workdir, configfile) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as rule -> count."""
    proc = snakemake(workdir, "-n", "--cores", "8", configfiles=(configfile,))
    text = proc.stdout + proc.stderr
    table = text[text.index("Job stats:") :].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def expected(datasets, winclip_settings, winclip_instances, anomalous_datasets, runs=3):
    """Jobs implied by a protocol: datasets x categories x settings x runs (zero-shot runs once), per winclip
    instance (``winclip_instances``: the datasets of each)."""
    runs_of = lambda setting: 1 if setting == "zs" else runs  # noqa: E731
    categories = sum(CATEGORIES[d] for d in datasets)
    winclip = sum(CATEGORIES[d] for on in winclip_instances for d in on) * sum(runs_of(s) for s in winclip_settings)
    anomalous = sum(CATEGORIES[d] for d in anomalous_datasets) * runs
    split_settings = set(winclip_settings) | ({"a1"} if anomalous_datasets else set())
    return {
        "prepare_dataset": len(datasets),
        "draw_pool": categories,
        "extract_features": categories,
        "draw_split": categories * sum(runs_of(s) for s in split_settings),
        "score": winclip + anomalous,
        "evaluate": winclip + anomalous,
        "collect_metrics": 1,
    }


# winclip.yaml and all.yaml run the paper's and anomalib's prompt presets as two instances side by side.
CASES = {
    "winclip.yaml": expected(["mvtec_ad", "visa"], ["zs", "k1", "k2", "k4"], [["mvtec_ad", "visa"]] * 2, []),
    "anomalous_samples.yaml": expected(["visa", "mvtec_ad", "sdd"], ["k1"], [["visa", "mvtec_ad", "sdd"]], ["visa", "mvtec_ad", "sdd"]),
    "all.yaml": expected(
        ["mvtec_ad", "visa", "sdd"], ["zs", "k1", "k2", "k4"], [["mvtec_ad", "visa", "sdd"], ["mvtec_ad", "visa"]], ["mvtec_ad", "visa", "sdd"]
    ),
}


def test_every_benchmark_config_has_a_job_count_case():
    assert sorted(p.name for p in BENCHMARKS.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_dry_run_job_counts_follow_the_protocol(name, tmp_path):
    counts = job_counts(tmp_path, BENCHMARKS / name)
    for rule, count in CASES[name].items():
        assert counts.get(rule) == count, f"{name}: {rule} has {counts.get(rule)} jobs, the protocol implies {count}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_configs_use_pretrained_weights_and_refuse_random_ones(name):
    import yaml

    config = yaml.safe_load((BENCHMARKS / name).read_text())
    assert config["weights_fallback"] == "error"
    assert all(b["pretrained"] not in ("none", "") for b in config["backbones"].values())
