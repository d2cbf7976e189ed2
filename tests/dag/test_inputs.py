"""What each job of the embedded default reads, from its DAG (no job run): fits train on the dataset their
declaration names, stores hold what their readers declare, score jobs read their own backbone's store.

Expectations are written from config/config.yaml and the method declarations by hand, never from rules/common.smk.
"""

from __future__ import annotations

import ast

import yaml

import pytest

from .dag_build import ROOT, build_dag

# The default's instances: their backbone, and where their fits learn (dataset scope: a training dataset).
BACKBONE = {"winclip": "vitb16plus", "anomalous_memory": "vitb16plus", "devprompt": "vitb16plus", "promptad": "vitb16plus",
            "faprompt": "vitb16plus", "anomalyclip": "vitb16plus", "one_to_normal": "tiny_tokens", "patchcore": "tiny_cnn",
            "anomalydino": "tiny_dino", "fusion": "vitb16plus"}
FITS = {
    "fit_dataset:faprompt/synthetic": ("synthetic", ["textile"]),
    "fit_dataset:anomalyclip/synthetic": ("synthetic", ["textile"]),
    "fit_dataset:one_to_normal/elpv": ("elpv", ["mono"]),
    "fit_run:devprompt/synthetic/textile/k1/0": ("synthetic", ["textile"]),
    "fit_run:promptad/synthetic/textile/k1/0": ("synthetic", ["textile"]),
}
# What each store must hold: the backbone's own window sizes, plus each reader's declaration (anomalous_memory: window
# sizes 2, 3, 7 on synthetic; faprompt/anomalyclip: V-V block 12 where they score (textile, elpv) and train (synthetic);
# one_to_normal: blocks 1, 2 where it scores (textile) and trains (elpv); patchcore: stages 2, 3 of its CNN where it scores
# (synthetic); anomalydino: the patch tokens every store holds, on its own ViT where it scores (synthetic)).
STORES = {
    "extract_features:vitb16plus/synthetic/textile": {"window_sizes": [2, 3, 7], "layers": [], "vv_layers": [12]},
    "extract_features:vitb16plus/textile/textile": {"window_sizes": [2, 3], "layers": [], "vv_layers": [12]},
    "extract_features:vitb16plus/elpv/mono": {"window_sizes": [2, 3], "layers": [], "vv_layers": [12]},
    "extract_features:tiny_tokens/textile/textile": {"window_sizes": [], "layers": [1, 2], "vv_layers": []},
    "extract_features:tiny_tokens/elpv/mono": {"window_sizes": [], "layers": [1, 2], "vv_layers": []},
    "extract_features:tiny_cnn/synthetic/textile": {"window_sizes": [], "layers": [2, 3], "vv_layers": []},
    "extract_features:tiny_dino/synthetic/textile": {"window_sizes": [], "layers": [], "vv_layers": []},
}


@pytest.fixture(scope="module")
def dag():
    return build_dag({})


def test_builds_in_one_process_do_not_leak_into_each_other(dag):
    build_dag({"scorers": {"winclip": {"temperature": 0.5}}, "backbones": {"vitb16plus": {"window_sizes": [2]}}})
    again = build_dag({})
    assert {k: (j.input, j.params) for k, j in again.jobs.items()} == {k: (j.input, j.params) for k, j in dag.jobs.items()}


def test_each_fit_reads_the_manifest_pool_and_stores_of_the_dataset_its_declaration_names(dag):
    fits = {job.label: job for job in [*dag.of_rule("fit_run"), *dag.of_rule("fit_dataset")]}
    assert sorted(fits) == sorted(FITS)
    for label, (dataset, categories) in FITS.items():
        job = fits[label]
        backbone = BACKBONE[label.split(":")[1].split("/")[0]]
        stores = [p for p in job.input if p.endswith(".h5")]
        assert sorted(stores) == sorted(f"results/cache/features/{dag_backbone_dir(dag, backbone)}/{dataset}/{c}.h5" for c in categories), label
        assert [p for p in job.input if p.endswith("manifest.csv")] == [f"results/data/{dataset}/manifest.csv"] * len(categories)
        assert sorted(p for p in job.input if p.endswith("pool.json")) == [f"results/splits/{dataset}/{c}/pool.json" for c in categories]
        splits = [p for p in job.input if p.endswith(".json") and "/splits/" in p and not p.endswith("pool.json")]
        assert splits == (["results/splits/synthetic/textile/k1/run0.json"] if label.startswith("fit_run:") else [])


def test_a_train_dataset_mapping_sends_each_target_to_its_own_training_dataset():
    datasets = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["datasets"]
    mapped = build_dag({"datasets": [*datasets, {"name": "synthetic2", "kind": "synthetic", "source": "textile", "seed": 5}],
                        "scorers": {"faprompt": {"train_dataset": {"default": "synthetic", "elpv": "synthetic2"}}}})
    fits = sorted(job.label for job in mapped.of_rule("fit_dataset") if job.label.startswith("fit_dataset:faprompt/"))
    assert fits == ["fit_dataset:faprompt/synthetic", "fit_dataset:faprompt/synthetic2"]
    (fit,) = mapped.labelled("fit_dataset:faprompt/synthetic2")
    assert [p for p in fit.input if p.endswith(".h5")] == [f"results/cache/features/{dag_backbone_dir(mapped, 'vitb16plus')}/synthetic2/textile.h5"]
    for job in mapped.of_rule("score"):
        if job.wildcards["scorer"] == "faprompt":
            expected = "synthetic2" if job.wildcards["dataset"] == "elpv" else "synthetic"
            assert f"results/models/faprompt/{expected}/model.safetensors" in job.input, job.label


def dag_backbone_dir(dag, name: str) -> str:
    (directory,) = {job.wildcards["backbone"] for job in dag.of_rule("extract_features") if job.wildcards["backbone"].rsplit("-", 1)[0] == name}
    return directory


def test_each_store_holds_what_every_instance_reading_it_declares(dag):
    stores = {job.label: job for job in dag.of_rule("extract_features")}
    assert sorted(stores) == sorted(STORES)
    for label, expected in STORES.items():
        held = {key: sorted(ast.literal_eval(stores[label].params[key])) for key in expected}
        assert held == expected, label


def test_each_score_job_reads_its_own_backbones_store_of_its_own_category(dag):
    for job in dag.of_rule("score"):
        w = job.wildcards
        store = f"results/cache/features/{dag_backbone_dir(dag, BACKBONE[w['scorer']])}/{w['dataset']}/{w['category']}.h5"
        assert store in job.input and sum(p.endswith(".h5") and "/cache/features/" in p and "/pools/" not in p and "/personalized/" not in p
                                          for p in job.input) == 1, job.label
        assert f"results/splits/{w['dataset']}/{w['category']}/{w['setting']}/run{w['run']}.json" in job.input


FUSION_MEMBERS = ["winclip", "patchcore", "anomalydino"]  # the default config's fusion


def test_the_fusion_score_job_reads_its_members_scores_maps_and_details_of_the_same_run(dag):
    (job,) = [j for j in dag.of_rule("score") if j.wildcards["scorer"] == "fusion"]
    run = "synthetic/textile/k1/run0"
    expected = {f"results/scores/{m}/{run}{suffix}" for m in FUSION_MEMBERS for suffix in (".parquet", ".maps.h5", ".json")}
    assert expected <= set(job.input)
    assert not [p for p in job.input if "/scores/" in p and p not in expected]
    assert ast.literal_eval(job.params["members"]) == FUSION_MEMBERS


def test_only_the_members_score_jobs_the_fusion_reads_score_a_validation_set(dag):
    asked = {"anomalies": 3, "defect_types": ["scratch", "spot", "cutpaste", "noise"], "normal_augmentations": 2}
    for job in dag.of_rule("score"):
        w = job.wildcards
        member = w["scorer"] in FUSION_MEMBERS and (w["dataset"], w["setting"]) == ("synthetic", "k1")
        assert ast.literal_eval(job.params["validation_set"]) == (asked if member else None), job.label
