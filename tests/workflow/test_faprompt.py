"""FAPrompt and AnomalyCLIP through the workflow on the tiny config: one fit per instance on the synthetic defects,
zero-shot scores on textile, the paper's tables, and a changed fit parameter of one instance of the ablation (its
baseline) that reruns only that instance's fit and scores."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from safetensors.torch import load_file

from .conftest import DEFAULT_CONFIG, snakemake, write_config
from .test_reruns import pending, summary, write_overlay

# The tiny run is a session fixture: under pytest-xdist (--dist loadgroup) its readers share one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]
# The default config's two instances, on textile only (the tiny config has no elpv); fsad-tiny has two vision blocks.
# Their own backbone keeps the copied run's feature stores, and so its other scorers' results, untouched.
TINY_TOKENS = {"backbone": "tiny_vv", "datasets": ["textile"], "vv_layers": [2]}
OVERLAY = {
    "backbones": {"tiny_vv": {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112, "window_sizes": [], "batch_size": 16}},
    "scorers": {name: {**DEFAULT_CONFIG["scorers"][name], **TINY_TOKENS} for name in ("faprompt", "anomalyclip")},
}


@pytest.fixture(scope="module")
def faprompt_run(tiny_run, tmp_path_factory):
    """The tiny run, copied (data and splits are reused), then run with the instances."""
    workdir = tmp_path_factory.mktemp("faprompt") / "run"
    shutil.copytree(tiny_run[0], workdir)
    overlay = write_config(workdir / "faprompt.yaml", OVERLAY)
    snakemake(workdir, "--cores", "2", configfiles=(overlay,))
    return workdir, overlay


def test_each_instance_fits_once_on_the_training_dataset_and_saves_its_prompts(faprompt_run):
    models = faprompt_run[0] / "results" / "models"
    assert sorted(p.parent.parent.name for p in models.glob("*/synthetic/fit.json")) == ["anomalyclip", "faprompt"]
    info = json.loads((models / "faprompt/synthetic/fit.json").read_text())
    assert info["scope"] == "dataset" and info["trained_on"] == ["synthetic/textile"]
    assert len(info["loss_per_epoch"]) == 2 and len(info["details"]["seconds_per_epoch"]) == 2
    tensors = load_file(models / "faprompt/synthetic/model.safetensors")
    assert tensors["abnormal_context"].shape[:2] == (10, 2) and "prior_net.0.weight" in tensors
    anomalyclip = load_file(models / "anomalyclip/synthetic/model.safetensors")
    assert anomalyclip["abnormal_context"].shape[:2] == (1, 12) and not any(name.startswith("prior_net") for name in anomalyclip)


def test_the_instances_score_zero_shot_and_the_report_writes_the_paper_tables(faprompt_run):
    results = faprompt_run[0] / "results"
    metrics = pd.read_csv(results / "metrics/metrics.csv")
    assert {"faprompt", "anomalyclip"} <= set(metrics[metrics["setting"] == "zs"]["scorer"])
    table1 = pd.read_csv(results / "tables/faprompt/table1_image.csv")
    assert list(table1.columns[:4]) == ["dataset", "faprompt", "anomalyclip", "winclip"] and list(table1["dataset"]) == ["textile", "mean"]
    table3 = results / "tables/faprompt/table3_ablation"
    assert list(pd.read_csv(table3.with_suffix(".csv"))["model"]) == ["Baseline (AnomalyCLIP)", "FAPrompt"]
    assert "NOT comparable to the papers" in table3.with_suffix(".md").read_text()  # tiny: random weights


def test_a_changed_fit_parameter_of_one_ablation_instance_reruns_its_fit_and_scores_only(faprompt_run, tmp_path):
    workdir, overlay = faprompt_run
    change = write_overlay(tmp_path / "sweep.yaml", {"scorers": {"anomalyclip": {"static_map_weight": 2.0}}})
    table = pending(summary(workdir, overlay, change))
    fits = table[table["rule"] == "fit_dataset"]["output_file"]
    assert len(fits) and fits.str.contains("/models/anomalyclip/synthetic/").all()
    scored = table[table["rule"] == "score"]["output_file"]
    assert len(scored) and scored.str.contains("/scores/anomalyclip/").all()
    assert not set(table["rule"]) & {"prepare_dataset", "draw_pool", "draw_split", "extract_features"}
