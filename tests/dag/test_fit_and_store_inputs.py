"""Each fit trains on the data its declaration names, each store holds what its readers declare, each score job reads
its own backbone's store: checked on the embedded default's DAG (no job run). Expectations are the default's
instances as config/config.yaml writes them, not what rules/common.smk computes."""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path

import pytest

from .dag_build import build_dag

# instance -> (dataset, category) pairs its fit's stores and pools come from, and the run split it reads (run scope)
FIT_DATA = {
    "faprompt": ({("synthetic", "textile")}, None),  # train_dataset: synthetic
    "anomalyclip": ({("synthetic", "textile")}, None),
    "one_to_normal": ({("elpv", "mono")}, None),  # train_dataset: elpv (categories: [mono])
    "devprompt": ({("synthetic", "textile")}, "synthetic/textile/k1/run0"),  # scope run: the run's own split
    "promptad": ({("synthetic", "textile")}, "synthetic/textile/k1/run0"),
}
# (backbone, dataset) -> what the store must hold at least: the backbone's own and every reader's declaration
STORE_HOLDS = {
    ("vitb16plus", "textile"): {"window_sizes": {2, 3}, "vv_layers": {12}},  # winclip; faprompt/anomalyclip scored
    ("vitb16plus", "elpv"): {"window_sizes": {2, 3}, "vv_layers": {12}},
    ("vitb16plus", "synthetic"): {"window_sizes": {2, 3, 7}, "vv_layers": {12}},  # anomalous_memory; faprompt trains here
    ("tiny_tokens", "textile"): {"layers": {1, 2}},  # one_to_normal scored
    ("tiny_tokens", "elpv"): {"layers": {1, 2}},  # one_to_normal's fit
}
BACKBONE_OF = {"one_to_normal": "tiny_tokens"}  # every other default instance is on vitb16plus


@pytest.fixture(scope="module")
def dag():
    return build_dag()


def _pairs(paths, kind):
    """(dataset, category) of each feature store (``.../features/<backbone>/<dataset>/<category>.h5``) or pool."""
    if kind == "features":
        return {(Path(p).parent.name, Path(p).stem) for p in paths if p.endswith(".h5")}
    return {(Path(p).parents[1].name, Path(p).parent.name) for p in paths if p.endswith("pool.json")}


@pytest.mark.parametrize("instance", sorted(FIT_DATA))
def test_each_fit_trains_on_the_data_its_declaration_names(dag, instance):
    (job,) = [job for job in dag.of_rule("fit") if job.wildcards["scorer"] == instance]
    pairs, split = FIT_DATA[instance]
    stores = [p for p in job.input if "/cache/features/" in p]
    assert _pairs(stores, "features") == pairs
    assert _pairs(job.input, "pools") == pairs
    assert {Path(p).parent.name for p in job.input if p.endswith("manifest.csv")} == {d for d, _ in pairs}
    backbone = BACKBONE_OF.get(instance, "vitb16plus")
    assert all(Path(p).parents[1].name.rsplit("-", 1)[0] == backbone for p in stores)
    splits = sorted(p for p in job.input if "/splits/" in p and not p.endswith("pool.json"))
    assert splits == ([f"results/splits/{split}.json"] if split else [])


@pytest.mark.parametrize("store", sorted(STORE_HOLDS), ids=lambda s: "/".join(s))
def test_each_store_holds_what_every_reader_declares(dag, store):
    backbone, dataset = store
    (job,) = [j for j in dag.of_rule("extract_features") if j.label.startswith(f"extract_features:{backbone}/{dataset}/")]
    for part, needed in STORE_HOLDS[store].items():
        held = set(ast.literal_eval(job.params[part]))
        assert needed <= held, f"{store} {part}: holds {sorted(held)}, readers need {sorted(needed)}"


def test_a_store_holds_nothing_no_reader_declares(dag):
    # tiny_tokens declares no windows and only one_to_normal (layers) reads it: no windows, no V-V layers
    for job in dag.labelled("extract_features:tiny_tokens/*"):
        assert ast.literal_eval(job.params["window_sizes"]) == [] and ast.literal_eval(job.params["vv_layers"]) == []


def test_each_score_job_reads_the_store_of_its_own_backbone(dag):
    scores = dag.of_rule("score")
    assert {job.wildcards["scorer"] for job in scores} >= set(FIT_DATA) | {"winclip", "anomalous_memory"}
    for job in scores:
        (store,) = [p for p in job.input if "/cache/features/" in p and p.endswith(".h5") and "/pools/" not in p and "/personalized/" not in p]
        path = Path(store)
        assert path.parents[1].name.rsplit("-", 1)[0] == BACKBONE_OF.get(job.wildcards["scorer"], "vitb16plus"), job.label
        assert (path.parent.name, path.stem) == (job.wildcards["dataset"], job.wildcards["category"]), job.label


def test_builds_in_one_process_leak_nothing_into_each_other(dag):
    """A build after another config's build plans the same jobs as the first build of that config."""
    build_dag({"seed": 5, "runs": 2, "reference_pool": {"anomalous": 2}, "scorers": {"promptad": {"enabled": False}, "devprompt": {"compare_with": ["winclip"]}}})
    again = build_dag(workdir=Path(tempfile.mkdtemp()))
    assert {k: (j.params, j.input) for k, j in again.jobs.items()} == {k: (j.params, j.input) for k, j in dag.jobs.items()}
