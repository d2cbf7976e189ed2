"""DevPrompt through the workflow: a run-scoped fit on the one normal shot, scores, the method's tables, and a sweep
over lambda, K and a that reruns only fit and score jobs (and what aggregates them). PromptAD is the same fit and
score steps with deviation_loss false (tests/unit/test_devprompt_fit.py); one instance keeps this run short."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from safetensors.torch import load_file

from .conftest import DEFAULT_CONFIG, snakemake, write_config
from .test_reruns import AGGREGATES, UPSTREAM, pending, summary, write_overlay

pytestmark = pytest.mark.slow
TRAINED = {"backbone": "vitb16plus", "settings": ["k1"], "datasets": ["synthetic"], "epochs": 2, "synthetic_anomalies": 2}
OVERLAY = {
    "scorers": {
        "winclip": None,
        "anomalous_memory": None,
        "devprompt": {**DEFAULT_CONFIG["scorers"]["devprompt"], **TRAINED, "compare_with": []},
    },
}
FIT = "synthetic/textile/k1/run0"


@pytest.fixture(scope="module")
def devprompt_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("devprompt")
    overlay = write_config(workdir / "devprompt.yaml", OVERLAY)
    snakemake(workdir, "--cores", "2", configfiles=(overlay,))
    return workdir, overlay


def test_devprompt_fits_prompts_and_scoring_parameters_on_the_runs_normal_shot(devprompt_run):
    workdir, _ = devprompt_run
    models = workdir / "results/models"
    info = json.loads((models / "devprompt" / FIT / "fit.json").read_text())
    assert info["scope"] == "run" and info["parameters"]["epochs"] == 2 and len(info["loss_per_epoch"]) == 2
    assert info["details"]["synthetic_anomalies"] == 2 and info["details"]["normal_shots"] == 1
    assert {"log_scale", "bias", "reference_mean", "text_prototypes"} <= set(load_file(models / "devprompt" / FIT / "model.safetensors"))
    scores = pd.read_parquet(workdir / "results/scores/devprompt" / f"{FIT}.parquet")
    assert {"score", "deviation_max", "textual_global", "textual_max"} <= set(scores.columns)


def test_the_report_writes_the_per_category_and_sensitivity_tables(devprompt_run):
    workdir, _ = devprompt_run
    tables = workdir / "results/tables"
    pixel = pd.read_csv(tables / "devprompt/pixel_auroc.csv", dtype=str, keep_default_na=False)
    assert list(pixel.columns) == ["dataset", "setting", "category", "devprompt", "weights"]
    assert pixel["category"].tolist() == ["textile", "mean"] and "–" not in pixel.values
    margin = pd.read_csv(tables / "devprompt/sensitivity_margin.csv", dtype=str, keep_default_na=False)
    assert list(margin.columns)[3:] == ["a = 5", "weights"]
    assert (tables / "html/devprompt/sensitivity_lambda.html").exists()


def test_a_sweep_over_lambda_k_and_a_reruns_only_fit_and_score_jobs(devprompt_run, tmp_path):
    workdir, overlay = devprompt_run
    sweep = {
        "devprompt": {"lambda_dev": 0.1, "topk_ratio": 0.2, "margin": 7.0},  # an instance swept in place
        "devprompt_k30": {"method": "devprompt", **TRAINED, "topk_ratio": 0.3},  # and a new sweep instance
    }
    table = pending(summary(workdir, overlay, write_overlay(tmp_path / "sweep.yaml", {"scorers": sweep})))
    assert not set(table["rule"]) & UPSTREAM
    for rule, folder in (("fit_run", "models"), ("score", "scores")):
        outputs = table[table["rule"] == rule]["output_file"]
        assert set(outputs.str.extract(rf"/{folder}/(\w+)/")[0]) == {"devprompt", "devprompt_k30"}
    reports = {f"method_report_{name}" for name in ("devprompt", "devprompt_k30")}
    assert set(table["rule"]) <= {"fit_run", "score", "evaluate"} | AGGREGATES | reports


def test_a_full_promptad_fit_on_the_tiny_backbone_gives_the_fused_map_with_visual_and_textual_sub_scores(tmp_path):
    """PromptAD in full through the workflow: the feature job caches the mid-block states memory_blocks asks for, the
    fit saves the galleries and the image-level prompts, the score job writes the fused maps and the branches'
    sub-scores, and the image table shows them."""
    import h5py
    import numpy as np

    promptad = {
        **DEFAULT_CONFIG["scorers"]["promptad"], "backbone": "tiny_tokens", "epochs": 1, "vv_block": 2, "memory_blocks": [1, 2],
        "cls_prompts": 3, "compare_with": [],
    }
    overlay = write_config(tmp_path / "promptad.yaml", {
        "backbones": {"tiny_tokens": DEFAULT_CONFIG["backbones"]["tiny_tokens"]},
        "scorers": {"winclip": None, "anomalous_memory": None, "devprompt": None, "promptad": promptad},
    })
    snakemake(tmp_path, "--cores", "2", "--until", "method_report_promptad", configfiles=(overlay,))
    results = tmp_path / "results"
    tensors = load_file(results / "models" / "promptad" / FIT / "model.safetensors")
    assert {"memory_1", "memory_2", "cls_text_prototypes", "text_prototypes"} <= set(tensors)
    assert tuple(tensors["cls_normal_ctx"].shape[:1]) == (3,)
    scores = pd.read_parquet(results / "scores" / "promptad" / f"{FIT}.parquet")
    assert {"score", "textual_global", "textual_max", "visual_max"} <= set(scores.columns)
    fused = 1 / (1 / scores["visual_max"] + 1 / scores["textual_global"])
    np.testing.assert_allclose(scores["score"], fused, rtol=1e-5)
    with h5py.File(results / "scores" / "promptad" / f"{FIT}.maps.h5") as h5:
        maps = h5["maps"][:]
    # harmonic fusion: below both branches, so below the textual softmax's 1 and (1 - cos) / 2's 1
    assert maps.shape[0] == len(scores) and np.isfinite(maps).all() and 0 < maps.max() < 1
    image = pd.read_csv(results / "tables" / "promptad" / "image_auroc.csv", dtype=str, keep_default_na=False)
    assert list(image.columns)[3:] == ["promptad", "promptad: textual_global", "promptad: visual_max", "weights"]
