# Helpers every rule uses: config validation, names known before any job runs, input functions.
import json
import re
from pathlib import Path

from snakemake.utils import validate

from fsad.config import check_config, canonical
from fsad.data.registry import dataset_categories, get_adapter
from fsad.features.cache import backbone_key

validate(config, schema="../config/schema.yaml")
check_config(config)

R = config["results_dir"]
DATASETS = {d["name"]: d for d in config["datasets"]}
CATEGORIES = {name: dataset_categories(spec) for name, spec in DATASETS.items()}
SETTINGS = {s["name"]: s for s in config["settings"]}
BACKBONE_DIRS = {name: backbone_key(name, spec) for name, spec in config["backbones"].items()}
SCORERS = {name: spec for name, spec in config["scorers"].items() if spec.get("enabled", True)}


def _alternation(names):
    return "|".join(sorted(map(re.escape, names))) or "^$"


wildcard_constraints:
    dataset=_alternation(DATASETS),
    setting=_alternation(SETTINGS),
    scorer=_alternation(SCORERS),
    backbone=_alternation(BACKBONE_DIRS.values()),
    category="[^/]+",
    run=r"\d+",


def scorer_datasets(scorer):
    return SCORERS[scorer].get("datasets") or list(DATASETS)


def scorer_settings(scorer):
    return SCORERS[scorer].get("settings") or list(SETTINGS)


def score_jobs():
    """(scorer, dataset, category, setting, run) of every score job the config asks for."""
    return [
        (scorer, dataset, category, setting, run)
        for scorer in SCORERS
        for dataset in scorer_datasets(scorer)
        for category in CATEGORIES[dataset]
        for setting in scorer_settings(scorer)
        for run in range(SETTINGS[setting].get("runs", config["runs"]))
    ]


def score_path(scorer, dataset, category, setting, run, suffix=".parquet"):
    return f"{R}/scores/{scorer}/{dataset}/{category}/{setting}/run{run}{suffix}"


def metrics_part_path(scorer, dataset, category, setting, run):
    return f"{R}/metrics/parts/{scorer}/{dataset}/{category}/{setting}/run{run}.csv"


# --- input functions and params -------------------------------------------------------------


def backbone_dir_of_scorer(wildcards):
    return BACKBONE_DIRS[SCORERS[wildcards.scorer]["backbone"]]


def backbone_spec(wildcards):
    """The backbone entry of a features job (found through its directory name)."""
    name = next(n for n, d in BACKBONE_DIRS.items() if d == wildcards.backbone)
    return canonical(config["backbones"][name])


def window_sizes(wildcards):
    name = next(n for n, d in BACKBONE_DIRS.items() if d == wildcards.backbone)
    sizes = set(config["backbones"][name]["window_sizes"]) | set(DATASETS[wildcards.dataset].get("extra_window_sizes", []))
    return sorted(sizes)


def feature_dir(backbone):
    """Everything cached for one backbone key: feature stores per category and ``_text`` prompt embeddings."""
    return f"{R}/cache/features/{backbone}"


def feature_file(backbone, dataset, category, suffix):
    """The feature store (``.h5``) or its index (``.json``, the declared output) of one category."""
    return f"{feature_dir(backbone)}/{dataset}/{category}{suffix}"


def features_index(wildcards):
    return feature_file(backbone_dir_of_scorer(wildcards), wildcards.dataset, wildcards.category, ".json")


def scorer_features_store(wildcards):
    return feature_file(backbone_dir_of_scorer(wildcards), wildcards.dataset, wildcards.category, ".h5")


def scorer_text_cache(wildcards):
    return f"{feature_dir(backbone_dir_of_scorer(wildcards))}/_text"


def scorer_backbone_spec(wildcards):
    return canonical(config["backbones"][SCORERS[wildcards.scorer]["backbone"]])


def scorer_params(wildcards):
    """The scorer's own parameters; job-selection keys are left out so that adding a dataset or setting reruns nothing."""
    spec = {k: v for k, v in SCORERS[wildcards.scorer].items() if k not in ("enabled", "settings", "datasets", "backbone")}
    return canonical(spec)


def dataset_spec(wildcards):
    return canonical(DATASETS[wildcards.dataset])


def all_metric_parts(wildcards=None):
    return [metrics_part_path(*job) for job in score_jobs()]


def all_score_files(wildcards=None):
    return [score_path(*job) for job in score_jobs()]


def dataset_dir(wildcards):
    return f"{R}/data/{wildcards.dataset}"


def setting_spec(wildcards):
    """A setting's shot counts; its run count only adds or removes jobs, so it is left out."""
    return canonical({k: v for k, v in SETTINGS[wildcards.setting].items() if k != "runs"})


def features_store(wildcards):
    return feature_file(wildcards.backbone, wildcards.dataset, wildcards.category, ".h5")


def datasets_scored():
    return sorted({dataset for _, dataset, *_ in score_jobs()})


def all_targets():
    targets = [f"{R}/metrics/metrics.csv"]
    for dataset in datasets_scored():
        targets += [f"{R}/tables/{dataset}.{ext}" for ext in ("md", "csv", "tex")]
        targets += [f"{R}/plots/roc_{dataset}.png", f"{R}/plots/auroc_{dataset}.png"]
    targets += [f"{R}/tables/summary.{ext}" for ext in ("md", "csv", "tex")]
    targets += html_tables()
    targets += [f"{R}/plots/gallery/{scorer}/{dataset}/{category}/{setting}.png" for scorer, dataset, category, setting, run in score_jobs() if run == 0]
    if anomalous_jobs():
        targets += [f"{R}/tables/anomalous_samples/table1_one_sample.md", f"{R}/plots/defect_size.png"]
    return targets


def dataset_score_files(wildcards):
    return [score_path(*job) for job in score_jobs() if job[1] == wildcards.dataset]


# --- the anomalous-samples paper's tables ----------------------------------------------------


def anomalous_jobs():
    return [job for job in score_jobs() if job[0] == "anomalous_memory"]


def anomalous_datasets(wildcards=None):
    return sorted({job[1] for job in anomalous_jobs()})


def anomalous_score_files(wildcards):
    return [score_path(*job) for job in anomalous_jobs()]


def anomalous_detail_files(wildcards):
    return [score_path(*job, ".json") for job in anomalous_jobs()]


def anomalous_manifests(wildcards):
    return [f"{R}/data/{dataset}/manifest.csv" for dataset in anomalous_datasets()]


def anomalous_sub_scores(wildcards):
    from fsad.scorers.anomalous_memory.torch_model import sub_score_names

    return sub_score_names(SCORERS["anomalous_memory"]["window_sizes"])
