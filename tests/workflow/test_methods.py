"""Methods as plugins: a toy trained method through fit and score jobs, instances side by side, and what a
fit-parameter, a score-parameter and a lost feature store rerun."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from fsad.data.splits import read_split
from fsad.features.store import FeatureStore

from .conftest import ROOT, TINY, snakemake, write_config
from .test_reruns import pending, summary, write_overlay

# The tiny run is a session fixture: under pytest-xdist (--dist loadgroup) its readers share one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]
PLUGINS = {"PYTHONPATH": str(ROOT / "tests" / "plugins")}
OVERLAY = {
    "plugins": ["toy_mean", "toy_mean_dataset"],
    "datasets": [d for d in yaml.safe_load(TINY.read_text())["datasets"]],
    "scorers": {
        "winclip": {"settings": ["zs"], "datasets": ["textile"]},
        "winclip_anomalib": {"method": "winclip", "backbone": "vitb16plus", "settings": ["zs"], "datasets": ["textile"],
                             "prompt_preset": "anomalib", "class_name_mode": "verbatim"},
        "anomalous_memory": None,
        "toy": {"method": "toy_mean", "backbone": "vitb16plus", "settings": ["k1"], "datasets": ["textile"], "epochs": 3, "lr": 0.25},
        "toy_cross": {"method": "toy_mean_dataset", "backbone": "vitb16plus", "settings": ["zs"], "datasets": ["textile"],
                      "train_dataset": "synthetic"},
    },
}


@pytest.fixture(scope="module")
def plugin_run(tiny_run, tmp_path_factory):
    """The tiny run, copied (its data, splits and features are reused), then run with the plugin instances."""
    workdir = tmp_path_factory.mktemp("methods") / "run"
    shutil.copytree(tiny_run[0], workdir)
    overlay = write_config(workdir / "methods.yaml", OVERLAY)
    snakemake(workdir, "--cores", "2", configfiles=(overlay,), env=PLUGINS)
    return workdir, overlay


def rules_pending(workdir, *configfiles) -> pd.DataFrame:
    return pending(summary(workdir, *configfiles, env=PLUGINS))


def test_a_run_scoped_fit_learns_its_references_mean_and_the_score_reads_it(plugin_run):
    workdir, _ = plugin_run
    results = workdir / "results"
    fit_dir = results / "models/toy/textile/textile/k1/run0"
    info = json.loads((fit_dir / "fit.json").read_text())
    assert info["scope"] == "run" and info["parameters"] == {"epochs": 3, "lr": 0.25}
    assert len(info["loss_per_epoch"]) == 3 and np.all(np.diff(info["loss_per_epoch"]) < 0)
    assert info["weights"] == "random" and info["seconds"] >= 0

    split = read_split(results / "splits/textile/textile/k1/run0.json")
    (store,) = (results / "cache/features").glob("vitb16plus-*/textile/textile.h5")
    references = FeatureStore(store).load(split.normal_refs).image_embeddings
    # each step of lr 0.25 on the mean squared distance moves the mean half way to the references' mean
    expected = references.mean(dim=0) * (1 - 0.5**3)
    torch.testing.assert_close(load_file(fit_dir / "model.safetensors")["mean"], expected, rtol=1e-5, atol=1e-6)

    scores = pd.read_parquet(results / "scores/toy/textile/textile/k1/run0.parquet")
    test = FeatureStore(store).load(list(scores["image_id"])).image_embeddings
    np.testing.assert_allclose(scores["score"], (test - expected).norm(dim=1).numpy(), rtol=1e-5)


def test_a_dataset_scoped_fit_trains_once_on_the_training_dataset(plugin_run):
    workdir, _ = plugin_run
    results = workdir / "results"
    info = json.loads((results / "models/toy_cross/synthetic/fit.json").read_text())
    assert info["scope"] == "dataset" and info["trained_on"] == ["synthetic/textile"]
    pool = json.loads((results / "splits/synthetic/textile/pool.json").read_text())
    manifest = pd.read_csv(results / "data/synthetic/manifest.csv").set_index("image_id")
    ids = sorted(set(pool["test"]) | set(pool["normal_pool"]) | set(pool["anomalous_pool"]))
    normals = [i for i in ids if manifest.loc[i, "label"] == 0]
    assert info["details"]["images"] == len(normals)
    (store,) = (results / "cache/features").glob("vitb16plus-*/synthetic/textile.h5")
    expected = FeatureStore(store).load(normals).image_embeddings.mean(dim=0)
    torch.testing.assert_close(load_file(results / "models/toy_cross/synthetic/model.safetensors")["mean"], expected)
    assert (results / "scores/toy_cross/textile/textile/zs/run0.parquet").exists()


def test_two_instances_of_one_method_run_side_by_side_with_their_own_results(plugin_run):
    workdir, _ = plugin_run
    metrics = pd.read_csv(workdir / "results/metrics/metrics.csv")
    assert {"winclip", "winclip_anomalib", "toy", "toy_cross"} <= set(metrics["scorer"])
    paper = pd.read_parquet(workdir / "results/scores/winclip/textile/textile/zs/run0.parquet")
    anomalib = pd.read_parquet(workdir / "results/scores/winclip_anomalib/textile/textile/zs/run0.parquet")
    assert list(paper["image_id"]) == list(anomalib["image_id"])
    assert not np.allclose(paper["score"], anomalib["score"])  # other prompts and temperature


def test_a_fit_parameter_reruns_its_fits_and_scores_but_no_features(plugin_run, tmp_path):
    workdir, overlay = plugin_run
    change = write_overlay(tmp_path / "epochs.yaml", {"scorers": {"toy": {"epochs": 4}}})
    table = rules_pending(workdir, overlay, change)
    assert set(table[table["rule"] == "fit_run"]["output_file"].str.extract(r"/models/(\w+)/")[0]) == {"toy"}
    assert table[table["rule"] == "score"]["output_file"].str.contains("/scores/toy/").all()
    assert not set(table["rule"]) & {"prepare_dataset", "draw_pool", "draw_split", "extract_features"}


def test_a_score_parameter_reruns_scores_and_never_a_fit(plugin_run, tmp_path):
    workdir, overlay = plugin_run
    change = write_overlay(tmp_path / "scale.yaml", {"scorers": {"toy": {"scale": 2.0}, "toy_cross": {"scale": 3.0}}})
    table = rules_pending(workdir, overlay, change)
    assert not {"fit_run", "fit_dataset"} & set(table["rule"])
    scored = table[(table["rule"] == "score") & table["output_file"].str.endswith(".parquet")]["output_file"]
    assert sorted(scored.str.extract(r"/scores/(\w+)/")[0]) == ["toy", "toy_cross"]


def test_a_feature_store_deleted_by_hand_is_rebuilt_by_the_next_job_that_reads_it(plugin_run, tmp_path):
    workdir, overlay = plugin_run
    results = workdir / "results"
    (store,) = (results / "cache/features").glob("vitb16plus-*/textile/textile.h5")
    before = pd.read_parquet(results / "scores/toy/textile/textile/k1/run0.parquet")
    ids = list(before["image_id"])
    features = FeatureStore(store).load(ids)

    store.unlink()  # asked for by name, the store is made again, with the same features
    snakemake(workdir, "--cores", "2", str(store.relative_to(workdir)), configfiles=(overlay,), env=PLUGINS)
    rebuilt = FeatureStore(store).load(ids)
    torch.testing.assert_close(rebuilt.image_embeddings, features.image_embeddings)
    torch.testing.assert_close(rebuilt.windows[2], features.windows[2])

    store.unlink()  # a score job that has to run brings its store back first
    change = write_overlay(tmp_path / "scale.yaml", {"scorers": {"toy": {"scale": 2.0}}})
    assert "extract_features" in set(rules_pending(workdir, overlay, change)["rule"])
    target = results / "scores/toy/textile/textile/k1/run0.parquet"
    snakemake(workdir, "--cores", "2", str(target.relative_to(workdir)), configfiles=(overlay, change), env=PLUGINS)
    assert store.exists()
    after = pd.read_parquet(target)
    np.testing.assert_allclose(after["score"], 2 * before["score"], rtol=1e-5)
