"""One contract for every method: each instance of the embedded default and the toy plugins, on the tiny backbone,
through fit -> score -> evaluate -> report, held to the same promises.

- every score file holds the split's test images once, the manifest's fields, finite scores and, for methods with
  maps, one map of the evaluation size per image, in the score file's order;
- a fit is made once and reused: a second score job of the same fit, and a rescoring after a changed score-only
  parameter, read it without redoing it;
- metrics and the benchmark tables equal a recomputation from the score files (sklearn, here);
- random weights are said everywhere a number is shown.

Instances come from ``config/config.yaml`` (a new built-in method needs an instance there, or the test says so) and
from ``tests/plugins`` (the toy methods): a new method gets the contract by being declared.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import average_precision_score, roc_auc_score

from fsad.data.splits import read_split
from fsad.score_files import read_score_keys
from fsad.schemas import load_schema
from fsad.scorers.registry import builtin_method_modules, get_method, method_params

from tests.unit.read_audit import is_read_mode, read_process_audits

from .conftest import ROOT, TINY, merged, snakemake, write_config
from .test_reruns import pending, summary, write_overlay

# The tiny run is a session fixture: under pytest-xdist (--dist loadgroup) its readers share one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
TINY_CONFIG = yaml.safe_load(TINY.read_text())
PLUGINS = ["toy_mean", "toy_mean_dataset"]
PLUGIN_ENV = {"PYTHONPATH": str(ROOT / "tests" / "plugins")}
# Every job of the contract run records what it reads (tests/unit/read_audit.py, through this sitecustomize).
AUDIT_PATH = str(ROOT / "tests" / "tools" / "read_audit")

# What the default's instances need to run on the tiny config (its datasets are synthetic and textile, its backbone
# the 2-block fsad-tiny): the smallest training, datasets the tiny config has, V-V tokens of its last block, PromptAD's
# memory in both of its blocks (blocks 4 and 9 of ViT-B/16+ in the default).
TINY_RUN = {
    "devprompt": {"epochs": 1, "synthetic_anomalies": 2},
    "promptad": {"epochs": 1, "vv_block": 2, "memory_blocks": [1, 2]},
    "faprompt": {"datasets": ["textile"], "vv_layers": [2], "epochs": 1},
    "anomalyclip": {"datasets": ["textile"], "vv_layers": [2], "epochs": 1},
    # the text maps train on another dataset than the evaluated one, as in the paper's protocol
    "one_to_normal": {"train_dataset": "synthetic", "text_map_epochs": 1},
}
TOYS = {
    "toy": {"method": "toy_mean", "backbone": "vitb16plus", "settings": ["k1"], "datasets": ["textile"], "epochs": 2},
    # two settings of one target dataset: two score jobs that read one dataset-scope fit
    "toy_cross": {"method": "toy_mean_dataset", "backbone": "vitb16plus", "settings": ["zs", "k1"], "datasets": ["textile"],
                  "train_dataset": "synthetic"},
}
# One parameter per method that only its score step reads, and a changed value: rescoring must not refit.
SCORE_ONLY_CHANGE = {
    "winclip": ("temperature", 0.05),
    "anomalous_memory": ("temperature", 0.05),
    "devprompt": ("smoothing_sigma", 2.0),
    "faprompt": ("sigma", 2.0),
    "one_to_normal": ("alpha", 0.5),
    "patchcore": ("sigma", 2.0),
    "anomalydino": ("sigma", 2.0),
    "fusion": ("n_draws", 20),
    "toy_mean": ("scale", 2.0),
    "toy_mean_dataset": ("scale", 3.0),
}
GENERATORS = {"tiny": {"class_images": {"count": 2, "steps": 4}, "dreambooth": {"steps": 4},
                       "pool": {"text_to_image": 2, "image_to_image": 1, "steps": 10}, "personalization": {"steps": 10}}}
OVERLAY = {
    "plugins": PLUGINS,
    "generators": GENERATORS,
    # a complete config (tests/workflow/conftest.py: write_config): the default's backbones the tiny config lacks (One-to-
    # Normal's, PatchCore's and AnomalyDINO's), One-to-Normal's generator (smaller), and every default instance as the
    # tiny config has it or the default defines it
    "backbones": {name: spec for name, spec in DEFAULT["backbones"].items() if name not in TINY_CONFIG["backbones"]},
    "scorers": {
        **{name: {**DEFAULT["scorers"][name], **TINY_CONFIG["scorers"].get(name, {}), **TINY_RUN.get(name, {})} for name in DEFAULT["scorers"]},
        **TOYS,
    },
}
OVERLAY["generators"] = {"tiny": merged(DEFAULT["generators"]["tiny"], GENERATORS["tiny"])}
INSTANCES = [*DEFAULT["scorers"], *TOYS]


def instance(name: str) -> dict:
    """The instance's config entry as the contract run sees it."""
    return OVERLAY["scorers"][name]


def method_of(name: str):
    return get_method(instance(name)["method"], PLUGINS)


@pytest.fixture(scope="module")
def plugins_importable(monkeypatch_module):
    monkeypatch_module.syspath_prepend(PLUGIN_ENV["PYTHONPATH"])


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def contract_run(tiny_run, tmp_path_factory, plugins_importable):
    """The tiny run, copied (its data, splits and features are reused), then run with every instance."""
    workdir = tmp_path_factory.mktemp("contract") / "run"
    shutil.copytree(tiny_run[0], workdir)
    overlay = write_config(workdir / "contract.yaml", OVERLAY)
    audited = {"PYTHONPATH": f"{PLUGIN_ENV['PYTHONPATH']}:{AUDIT_PATH}", "FSAD_READ_AUDIT": str(workdir / "audit")}
    proc = snakemake(workdir, "--cores", "2", configfiles=(overlay,), env=audited)
    (workdir / "contract.log").write_text(proc.stdout + proc.stderr)
    return workdir, overlay


def score_jobs(name: str) -> list[tuple[str, str, str, int]]:
    """(dataset, category, setting, run) of the instance's score jobs, from the configs (categories: the tiny
    datasets each hold one, named after the dataset's source)."""
    entry = instance(name)
    datasets = entry.get("datasets") or [d["name"] for d in TINY_CONFIG["datasets"]]
    settings = {s["name"]: s for s in DEFAULT["settings"]}
    return [(dataset, "textile", setting, run) for dataset in datasets for setting in entry["settings"]
            for run in range(settings[setting].get("runs", DEFAULT["runs"]))]


def scores_dir(workdir: Path, name: str, dataset: str, category: str, setting: str, run: int) -> Path:
    return workdir / "results" / "scores" / name / dataset / category / setting / f"run{run}"


def test_every_built_in_method_is_in_the_contract_through_an_instance_of_the_default():
    methods = {entry["method"] for entry in DEFAULT["scorers"].values()}
    missing = set(builtin_method_modules()) - methods
    assert not missing, f"built-in methods without an instance in config/config.yaml, so outside the contract: {sorted(missing)}"
    for method, (key, value) in SCORE_ONLY_CHANGE.items():
        declared = get_method(method, PLUGINS)
        assert key not in (declared.stage_names("fit") if declared.fit else ()), f"{method}.{key} is a fit parameter"
        assert key in load_schema(declared.schema)["properties"], f"{method} has no parameter {key}"
        assert key not in declared.stage_names("report"), f"{method}.{key} is a report parameter"
    assert {instance(name)["method"] for name in INSTANCES} <= set(SCORE_ONLY_CHANGE), "give each method a score-only change"


@pytest.mark.parametrize("name", INSTANCES)
def test_each_score_file_holds_the_splits_test_images_once_with_finite_scores_and_maps_of_the_evaluation_size(contract_run, name):
    workdir, _ = contract_run
    results = workdir / "results"
    method = method_of(name)
    found = sorted(p.relative_to(results / "scores" / name).as_posix() for p in (results / "scores" / name).glob("*/*/*/run*.parquet"))
    expected = sorted(f"{d}/{c}/{s}/run{r}.parquet" for d, c, s, r in score_jobs(name))
    assert found == expected
    map_size = TINY_CONFIG["evaluation"]["map_size"]
    for dataset, category, setting, run in score_jobs(name):
        base = scores_dir(workdir, name, dataset, category, setting, run)
        split = read_split(results / "splits" / dataset / category / setting / f"run{run}.json")
        scores = pd.read_parquet(base.with_suffix(".parquet"))
        keys = read_score_keys(base.with_suffix(".parquet"))
        assert {k: keys[k] for k in ("scorer", "method", "dataset", "category", "setting", "run", "weights")} == {
            "scorer": name, "method": method.name, "dataset": dataset, "category": category, "setting": setting, "run": run, "weights": "random"}
        assert sorted(scores["image_id"]) == sorted(split.test) and scores["image_id"].is_unique
        manifest = pd.read_csv(results / "data" / dataset / "manifest.csv").set_index("image_id")
        assert list(scores["label"]) == list(manifest.loc[scores["image_id"], "label"])
        assert set(scores["weights"]) == {"random"}
        numeric = scores.select_dtypes("number").drop(columns=["label"])
        assert "score" in numeric and np.isfinite(numeric.to_numpy()).all()
        with h5py.File(base.with_suffix(".maps.h5")) as h5:
            if method.maps:
                assert h5["maps"].shape == (len(scores), map_size, map_size)
                assert [i.decode() for i in h5["image_ids"][:]] == list(scores["image_id"])
                assert np.isfinite(h5["maps"][:]).all()
            else:
                assert "maps" not in h5


def fit_keys(name: str) -> list[str]:
    method = method_of(name)
    if method.fit is None:
        return []
    if method.fit.scope == "dataset":
        return [instance(name)["train_dataset"]]
    return sorted({f"{d}/{c}/{s}/run{r}" for d, c, s, r in score_jobs(name)})


def fit_jobs_run(log: str) -> list[str]:
    """``scorer/scope`` of every fit job a Snakemake log says it started (scope: a dataset, or dataset/category/setting/run<n>)."""
    started = []
    for block in re.split(r"^(?:local)?rule fit_(?:run|dataset):$", log, flags=re.M)[1:]:
        wildcards = block.split("wildcards:", 1)[1].splitlines()[0]
        fields = dict(part.strip().split("=", 1) for part in wildcards.split(","))
        scope = [fields["dataset"]] + ([fields["category"], fields["setting"], f"run{fields['run']}"] if "run" in fields else [])
        started.append("/".join([fields["scorer"], *scope]))
    return sorted(started)


def fitted_instances() -> list[str]:
    """Instances whose method has a fit (the toy plugins imported for the look, at collection)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(PLUGIN_ENV["PYTHONPATH"])
        return [name for name in INSTANCES if method_of(name).fit is not None]


@pytest.mark.parametrize("name", fitted_instances())
def test_each_fit_is_made_once_on_what_its_declaration_names_and_read_by_its_score_jobs(contract_run, name):
    workdir, _ = contract_run
    results = workdir / "results"
    method = method_of(name)
    models = results / "models" / name
    assert sorted(p.parent.relative_to(models).as_posix() for p in models.glob("**/fit.json")) == fit_keys(name)
    log = (workdir / "contract.log").read_text()
    assert [job for job in fit_jobs_run(log) if job.startswith(f"{name}/")] == [f"{name}/{key}" for key in fit_keys(name)]
    params = method_params(method, instance(name))
    for key in fit_keys(name):
        info = json.loads((models / key / "fit.json").read_text())
        assert info["weights"] == "random" and info["scope"] == method.fit.scope
        assert info["parameters"] == method.fit_params(params)
        trained = key if method.fit.scope == "dataset" else "/".join(key.split("/")[:2])
        assert info["trained_on"] == ([f"{key}/textile"] if method.fit.scope == "dataset" else [trained])
        assert all(np.isfinite(np.asarray(v, dtype=float)).all() for v in [info["loss_per_epoch"]])
    # every score job read its own fit (a dataset-scope fit: one for all of them)
    for dataset, category, setting, run in score_jobs(name):
        key = fit_keys(name)[0] if method.fit.scope == "dataset" else f"{dataset}/{category}/{setting}/run{run}"
        details = json.loads(scores_dir(workdir, name, dataset, category, setting, run).with_suffix(".json").read_text())
        assert details["model"] == f"results/models/{name}/{key}/model.safetensors"


def masks_at(paths: pd.Series, size: int) -> np.ndarray:
    """Ground truth at the maps' size (nearest neighbour, as the evaluation documents); normal images: all zero."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("L").resize((size, size), Image.Resampling.NEAREST)) > 0 if isinstance(p, str) and p
                     else np.zeros((size, size), bool) for p in paths])


@pytest.mark.parametrize("name", INSTANCES)
def test_metrics_equal_a_recomputation_from_the_score_files(contract_run, name):
    workdir, _ = contract_run
    results = workdir / "results"
    metrics = pd.read_csv(results / "metrics" / "metrics.csv")
    mine = metrics[metrics["scorer"] == name]
    assert set(mine["weights"]) == {"random"}
    for dataset, category, setting, run in score_jobs(name):
        rows = mine[(mine["dataset"] == dataset) & (mine["category"] == category) & (mine["setting"] == setting) & (mine["run"] == run)]
        value = rows.set_index("metric")["value"]
        base = scores_dir(workdir, name, dataset, category, setting, run)
        scores = pd.read_parquet(base.with_suffix(".parquet"))
        labels = scores["label"].to_numpy()
        assert value["image_auroc"] == pytest.approx(roc_auc_score(labels, scores["score"]), abs=1e-9)
        assert value["image_ap"] == pytest.approx(average_precision_score(labels, scores["score"]), abs=1e-9)
        subs = [c for c in scores.select_dtypes("number").columns if c not in ("score", "label")]
        for column in subs:
            assert value[f"image_auroc:{column}"] == pytest.approx(roc_auc_score(labels, scores[column]), abs=1e-9)
        assert not {m for m in value.index if m.startswith("image_auroc:")} - {f"image_auroc:{c}" for c in subs}
        manifest = pd.read_csv(results / "data" / dataset / "manifest.csv", keep_default_na=False).set_index("image_id")
        has_masks = method_of(name).maps and (manifest.loc[scores["image_id"], "mask_path"] != "").any()
        if has_masks:
            with h5py.File(base.with_suffix(".maps.h5")) as h5:
                maps = h5["maps"][:]
            masks = masks_at(manifest.loc[scores["image_id"], "mask_path"], maps.shape[-1])
            assert value["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-6)
        else:
            assert "pixel_auroc" not in value.index or np.isnan(value["pixel_auroc"])


def test_the_benchmark_tables_hold_the_mean_of_the_recomputed_metrics(contract_run):
    workdir, _ = contract_run
    results = workdir / "results"
    for dataset in [d["name"] for d in TINY_CONFIG["datasets"]]:
        table = pd.read_csv(results / "tables" / f"{dataset}.csv", index_col=0)
        for name in INSTANCES:
            for d, category, setting, run in score_jobs(name):
                if d != dataset:
                    continue
                scores = pd.read_parquet(scores_dir(workdir, name, d, category, setting, run).with_suffix(".parquet"))
                expected = 100 * roc_auc_score(scores["label"], scores["score"])
                cell = table.loc["mean", f"{name} / {setting} / I-AUROC"]
                assert float(str(cell).split("±")[0]) == pytest.approx(expected, abs=0.051), (name, dataset, setting)
                assert table.loc["mean", "weights"].startswith("random")
    summary = pd.read_csv(results / "tables" / "summary.csv")
    for name in INSTANCES:
        for dataset, category, setting, run in score_jobs(name):
            scores = pd.read_parquet(scores_dir(workdir, name, dataset, category, setting, run).with_suffix(".parquet"))
            row = summary[(summary["dataset"] == dataset) & (summary["scorer"] == name) & (summary["setting"] == setting)]
            assert len(row) == 1 and row["weights"].item().startswith("random")
            assert float(str(row["I-AUROC"].item()).split("±")[0]) == pytest.approx(100 * roc_auc_score(scores["label"], scores["score"]), abs=0.051)


def test_every_table_and_report_says_the_numbers_come_from_random_weights(contract_run):
    from fsad.evaluation.tables import RANDOM_WEIGHTS_NOTE

    results = contract_run[0] / "results"
    tables = sorted((results / "tables").glob("**/*.md")) + sorted((results / "tables").glob("**/*.tex"))
    method_tables = {p.parent.name for p in tables if p.parent != results / "tables"}
    assert {name for name in INSTANCES if method_of(name).report is not None} <= method_tables | {"html"}
    note = {".md": RANDOM_WEIGHTS_NOTE, ".tex": RANDOM_WEIGHTS_NOTE.replace("—", "---")}
    silent = [p.relative_to(results).as_posix() for p in tables if note[p.suffix] not in p.read_text()]
    assert not silent, f"tables without the random-weights note: {silent}"
    pages = sorted((results / "tables" / "html").glob("**/*.html"))
    assert pages and not [p.name for p in pages if "random" not in p.read_text()]
    for csv in sorted((results / "tables").glob("**/*.csv")):
        assert "random" in csv.read_text(), csv


@pytest.fixture(scope="module")
def rescored(contract_run, tmp_path_factory):
    """A copy of the contract run, run again with one score-only parameter changed in every instance."""
    workdir = tmp_path_factory.mktemp("rescored") / "run"
    shutil.copytree(contract_run[0], workdir, symlinks=True)
    changes = {name: dict([SCORE_ONLY_CHANGE[instance(name)["method"]]]) for name in INSTANCES}
    overlay = write_config(workdir / "contract.yaml", OVERLAY)
    change = write_overlay(workdir / "score_only.yaml", {"scorers": changes})
    before = {p: p.stat().st_mtime_ns for p in (workdir / "results" / "models").glob("**/*") if p.is_file()}
    planned = pending(summary(workdir, overlay, change, env=PLUGIN_ENV))
    # the score files only: what reads them (metrics, reports) is pinned by the contract run itself
    targets = [str(scores_dir(workdir, name, *job).with_suffix(".parquet").relative_to(workdir)) for name in INSTANCES for job in score_jobs(name)]
    proc = snakemake(workdir, "--cores", "2", *targets, configfiles=(overlay, change), env=PLUGIN_ENV)
    return workdir, planned, before, proc.stdout + proc.stderr


def test_a_score_only_change_rescores_every_instance_and_reuses_every_fit_untouched(contract_run, rescored):
    workdir, planned, before, log = rescored
    assert not {"fit_run", "fit_dataset"} & set(planned["rule"]) and fit_jobs_run(log) == []
    assert before and {p: p.stat().st_mtime_ns for p in before} == before
    for name in INSTANCES:
        for job in score_jobs(name):
            old = pd.read_parquet(scores_dir(contract_run[0], name, *job).with_suffix(".parquet"))
            new = pd.read_parquet(scores_dir(workdir, name, *job).with_suffix(".parquet"))
            with h5py.File(scores_dir(contract_run[0], name, *job).with_suffix(".maps.h5")) as a, \
                 h5py.File(scores_dir(workdir, name, *job).with_suffix(".maps.h5")) as b:
                maps_moved = "maps" in a and not np.allclose(a["maps"][:], b["maps"][:])
            assert maps_moved or not np.allclose(old["score"], new["score"]), (name, job)


# Job scripts that learn or generate, and so must never read a test image of the split they serve.
LEARNING_SCRIPTS = ("fit.py", "dreambooth.py", "generate_pool.py", "class_images.py")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def job_audits(workdir: Path) -> list[tuple[str, dict]]:
    """(script, audit) of every Snakemake job process of the contract run (tests/unit/read_audit.py's reports)."""
    jobs = []
    for record in read_process_audits(workdir / "audit"):
        scripts = [a for a in record["argv"] if "/.snakemake/scripts/" in a]
        if scripts:
            jobs.append((scripts[0].rsplit("/", 1)[1].split(".", 1)[1], record))
    return jobs


def test_no_stage_that_learns_or_generates_reads_a_test_image_of_its_split_or_of_the_evaluated_dataset(contract_run):
    workdir, _ = contract_run
    results = workdir / "results"
    owners = {}  # image or mask file -> (dataset, image id, kind)
    for manifest_path in (results / "data").glob("*/manifest.csv"):
        manifest = pd.read_csv(manifest_path, keep_default_na=False)
        for row in manifest.itertuples():
            owners[str(Path(row.image_path).resolve())] = (manifest_path.parent.name, row.image_id, "image")
            if row.mask_path:
                owners[str(Path(row.mask_path).resolve())] = (manifest_path.parent.name, row.image_id, "mask")
    jobs = [(script, record) for script, record in job_audits(workdir) if script in LEARNING_SCRIPTS]
    # the audit saw every such job of the run: the fits of the trained instances and One-to-Normal's diffusion stages
    assert sorted(script for script, _ in jobs) == sorted(["class_images.py", "dreambooth.py", "generate_pool.py"] + ["fit.py"] * 7)
    for script, record in jobs:
        read = {str(Path(o["path"]).resolve()) for o in record["opened"] if is_read_mode(o["mode"])} | {str(Path(p).resolve()) for p in record["pil"]}
        data_read = [owners[p] for p in read if p in owners]
        split_files = [p for p in read if "/splits/" in p and p.endswith(".json") and not p.endswith("pool.json")]
        loaded = {(store_dataset(store), i) for store, ids in record["loads"].items() for i in ids}
        if script == "class_images.py":
            assert not data_read and not loaded, f"class images read dataset files {data_read}"
            continue
        if split_files:  # run scope: the run's references only, never its test images or any mask
            (split_file,) = split_files
            split = read_split(split_file)
            dataset = split.dataset
            assert not {i for d, i, _ in data_read if d == dataset} & set(split.test), (script, split_file)
            assert not {i for d, i in loaded if d == dataset} & set(split.test), (script, split_file)
            assert not [m for m in data_read if m[2] == "mask" and m[1] in split.test]
            if script == "dreambooth.py":  # the audit saw the references it trains on
                assert {i for _, i, kind in data_read if kind == "image"} == set(split.normal_refs)
        else:  # dataset scope: the training dataset's files only
            assert script == "fit.py"
            datasets = {d for d, _, _ in data_read} | {store_dataset(store) for store in record["loads"]}
            assert datasets == {"synthetic"}, (record["argv"], datasets)


def store_dataset(store: str) -> str:
    """The dataset of a feature store path ``.../cache/features/<backbone>/<dataset>/<category>.h5``."""
    return Path(store).parent.name
