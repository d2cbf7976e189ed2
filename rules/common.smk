# Helpers of the other .smk files: config validation, names known before any job runs, input functions.
# What each scorer instance needs (features, masks, a fit, report tables) comes from its method's declaration
# (fsad/scorers/<method>/method.py); nothing here names a method.
import re
from functools import cache
from pathlib import Path

from snakemake.utils import validate

from fsad.backbones.spec import OPEN_CLIP, backbone_key, backbone_library, network_spec
from fsad.config import canonical, check_complete, check_config, check_datasets, member_validation
from fsad.data.registry import dataset_categories
from fsad.diffusion.config import check_models_from, generator_params, models_owner, stage_params
from fsad.scorers.registry import method_module, method_params, load_method

check_complete(config)
validate(config, schema="../config/schema.yaml")
check_datasets(config)  # each kind's options: fsad/data/adapters/<kind>.schema.yaml

R = config["results_dir"]
PLUGINS = config.get("plugins", [])
DATASETS = {d["name"]: d for d in config["datasets"]}
SETTINGS = {s["name"]: s for s in config["settings"]}
BACKBONE_DIRS = {name: backbone_key(name, spec) for name, spec in config["backbones"].items()}
SCORERS = dict(config["scorers"])
METHOD_MODULES = {name: method_module(spec["method"], PLUGINS) for name, spec in SCORERS.items()}
METHODS = {name: load_method(module) for name, module in METHOD_MODULES.items()}
PARAMS = {name: method_params(METHODS[name], spec, f"scorers.{name}") for name, spec in SCORERS.items()}
check_config(config, METHODS, PARAMS)
# (member, dataset, setting) -> the labelled validation set its score jobs also score, for the fusions that read them.
MEMBER_VALIDATION = member_validation(config, METHODS, PARAMS)
CATEGORIES = {name: dataset_categories(spec) for name, spec in DATASETS.items()}
# Generators (fsad/diffusion/schema.yaml): DreamBooth models, pools and personalized images that methods declare they read.
GENERATORS = {name: generator_params(spec, f"generators.{name}") for name, spec in config.get("generators", {}).items()}
check_models_from(GENERATORS)


def _alternation(names):
    return "|".join(sorted(map(re.escape, names))) or "^$"


wildcard_constraints:
    dataset=_alternation(DATASETS),
    setting=_alternation(SETTINGS),
    scorer=_alternation(SCORERS),
    backbone=_alternation(BACKBONE_DIRS.values()),
    category="[^/]+",
    run=r"\d+",
    generator=_alternation(GENERATORS),
    kind="pools|personalized",


def scorer_datasets(scorer):
    return SCORERS[scorer].get("datasets") or list(DATASETS)


def scorer_settings(scorer):
    return SCORERS[scorer].get("settings") or list(SETTINGS)


@cache
def score_jobs():
    """(scorer, dataset, category, setting, run) of every score job the config asks for."""
    return tuple(
        (scorer, dataset, category, setting, run)
        for scorer in SCORERS
        for dataset in scorer_datasets(scorer)
        for category in CATEGORIES[dataset]
        for setting in scorer_settings(scorer)
        for run in range(SETTINGS[setting].get("runs", config["runs"]))
    )


# --- features: what each (backbone, dataset) store holds -----------------------------------


def backbone_name(backbone_dir):
    return next(n for n, d in BACKBONE_DIRS.items() if d == backbone_dir)


def fit_datasets(scorer):
    """Datasets a dataset-scope fit of ``scorer`` trains on (none for other scopes)."""
    fit = METHODS[scorer].fit
    if fit is None or fit.scope != "dataset":
        return []
    return sorted({train_dataset(scorer, dataset) for dataset in scorer_datasets(scorer)})


def store_needs(backbone_dir, readers, extra_window_sizes=()):
    """Sorted window sizes, layers, V-V layers and mid-block states a store of ``backbone_dir`` holds: the backbone's
    own (with ``extra_window_sizes``) plus what each scorer instance of ``readers`` declares."""
    spec = config["backbones"][backbone_name(backbone_dir)]
    needs = {
        "window_sizes": set(spec["window_sizes"]) | set(extra_window_sizes),
        "layers": set(spec.get("layers", [])),
        "vv_layers": set(spec.get("vv_layers", [])),
        "mid_layers": set(),  # asked by scorers only (PromptAD's memory_blocks)
    }
    for scorer in readers:
        declared = METHODS[scorer].features(PARAMS[scorer])
        for key in needs:
            needs[key] |= set(getattr(declared, key))
    return {key: sorted(values) for key, values in needs.items()}


@cache
def feature_needs(backbone_dir, dataset):
    """What the store of (backbone, dataset) holds: the backbone's own parts plus what every scorer instance on that
    backbone declares for that dataset (scored or trained on)."""
    name = backbone_name(backbone_dir)
    spec = config["backbones"][name]
    # a dataset's extra window sizes are CLIP windows: a timm backbone has none
    extra = DATASETS[dataset].get("extra_window_sizes", []) if backbone_library(spec) == OPEN_CLIP else []
    readers = [
        scorer for scorer in SCORERS
        if SCORERS[scorer]["backbone"] == name and dataset in {*scorer_datasets(scorer), *fit_datasets(scorer)}
    ]
    return store_needs(backbone_dir, readers, extra)


def feature_dir(backbone):
    """Everything cached for one backbone key: feature stores per category and ``_text`` prompt embeddings."""
    return f"{R}/cache/features/{backbone}"


def feature_file(backbone, dataset, category, suffix):
    """The feature store (``.h5``) or its index (``.json``, the declared output) of one category."""
    return f"{feature_dir(backbone)}/{dataset}/{category}{suffix}"


def backbone_spec(wildcards):
    """The network of a features job's backbone (found through its directory name): the keys that change numbers
    (fsad/backbones/spec.py), not the batch size or workers, which the job reads from the config."""
    return canonical(network_spec(config["backbones"][backbone_name(wildcards.backbone)]))


def feature_param(key):
    """Input function of one of :func:`feature_needs`' lists, for a features job's params."""
    return lambda wildcards: feature_needs(wildcards.backbone, wildcards.dataset)[key]


# --- score jobs -------------------------------------------------------------------------------


def score_path(scorer, dataset, category, setting, run, suffix=".parquet"):
    return f"{R}/scores/{scorer}/{dataset}/{category}/{setting}/run{run}{suffix}"


def metrics_part_path(scorer, dataset, category, setting, run):
    return f"{R}/metrics/parts/{scorer}/{dataset}/{category}/{setting}/run{run}.csv"


def backbone_dir_of_scorer(scorer):
    return BACKBONE_DIRS[SCORERS[scorer]["backbone"]]


def scorer_backbone_spec(wildcards):
    """The network of a scorer's backbone, for its text tower: no window sizes or layers (another instance's new
    layer reruns no score or fit of this one), no run settings."""
    return canonical(network_spec(config["backbones"][SCORERS[wildcards.scorer]["backbone"]]))


def scorer_text_cache(wildcards):
    """Prompt embeddings of the scorer's backbone: a cache keyed by content; a lost entry is encoded again."""
    return f"{feature_dir(backbone_dir_of_scorer(wildcards.scorer))}/_text"


def scorer_method_module(wildcards):
    return METHOD_MODULES[wildcards.scorer]


def scorer_params(wildcards):
    """The parameters the scorer's score step reads (defaults filled in); job selection and report-only keys are
    left out, so that adding a dataset or setting, or changing a report, reruns no score job."""
    return canonical(METHODS[wildcards.scorer].score_params(PARAMS[wildcards.scorer]))


def score_inputs(wildcards):
    """Named inputs of a score job: split, manifest, feature store, and the fitted model if the method has a fit."""
    inputs = {
        "split": f"{R}/splits/{wildcards.dataset}/{wildcards.category}/{wildcards.setting}/run{wildcards.run}.json",
        "manifest": f"{R}/data/{wildcards.dataset}/manifest.csv",
        "features": feature_file(backbone_dir_of_scorer(wildcards.scorer), wildcards.dataset, wildcards.category, ".h5"),
    }
    if METHODS[wildcards.scorer].fit is not None:
        inputs |= {"model": fitted_model(wildcards.scorer, wildcards.dataset, wildcards.category, wildcards.setting, wildcards.run)}
    return inputs | generated_inputs(wildcards) | member_inputs(wildcards)


def scorer_members(wildcards):
    """The instances a score job's method declares it reads (a fusion's members), in order; none for other methods."""
    return list(METHODS[wildcards.scorer].members(PARAMS[wildcards.scorer]).scorers)


def member_inputs(wildcards):
    """The score, maps and details files of the job's members on the same (dataset, category, setting, run)."""
    job = (wildcards.dataset, wildcards.category, wildcards.setting, wildcards.run)
    members = scorer_members(wildcards)
    if not members:
        return {}
    return {
        "member_scores": [score_path(member, *job) for member in members],
        "member_maps": [score_path(member, *job, ".maps.h5") for member in members],
        "member_details": [score_path(member, *job, ".json") for member in members],
    }


def scorer_validation_set(wildcards):
    """The validation set a fusion reading this instance on (dataset, setting) asks it to score, or None."""
    spec = MEMBER_VALIDATION.get((wildcards.scorer, wildcards.dataset, wildcards.setting))
    return None if spec is None else canonical(spec)


# --- generated images (rules/diffusion.smk) -----------------------------------------------------


def generated_dir(kind, generator, dataset, category, setting, run):
    """A run's pool (``kind`` pools) or personalized test images (``kind`` personalized): PNGs + index.csv."""
    return f"{R}/{kind}/{generator}/{dataset}/{category}/{setting}/run{run}"


def generated_store(backbone, kind, generator, dataset, category, setting, run):
    """The feature store of a run's pool or personalized images, beside the backbone's dataset stores."""
    return f"{feature_dir(backbone)}/{kind}/{generator}/{dataset}/{category}/{setting}/run{run}.h5"


def generated_inputs(wildcards):
    """The pool and personalized images (directories and feature stores) a score job's method declares it reads."""
    declared = METHODS[wildcards.scorer].generated(PARAMS[wildcards.scorer])
    backbone = backbone_dir_of_scorer(wildcards.scorer)
    inputs = {}
    for key, kind, name in (("pool", "pools", "generated_pool"), ("personalized", "personalized", "personalized")):
        if getattr(declared, key):
            run = (image_owner(declared.generator, kind), wildcards.dataset, wildcards.category, wildcards.setting, wildcards.run)
            inputs |= {name: generated_dir(kind, *run), f"{name}_features": generated_store(backbone, kind, *run)}
    return inputs


def image_owner(generator, kind):
    """The generator whose ``kind`` images ``generator``'s readers read: a pool comes from its models_from generator."""
    return models_owner(GENERATORS, generator) if kind == "pools" else generator


def generator_stage(stage):
    """Params of a stage's jobs: the generator's shared keys and the stage's section, defaults filled in."""
    return lambda wildcards: canonical(stage_params(GENERATORS[wildcards.generator], stage))


def base_model_dir(generator):
    """A generator's base model as a diffusers pipeline directory, written once; its fine-tuned models link to it."""
    return f"{R}/models/{generator}/base_model"


def generator_base_model(wildcards):
    """The base model a generator's base_model job saves: its only parameter (the config seed draws the tiny preset)."""
    return GENERATORS[wildcards.generator]["base_model"]


def class_images_dir(generator, dataset, category):
    """DreamBooth's prior-preservation images of a category, shared by its settings and runs."""
    return f"{R}/models/{generator}/{dataset}/{category}/class_images"


def run_files(wildcards):
    """The split and the manifest of a run's generation job."""
    return {
        "split": f"{R}/splits/{wildcards.dataset}/{wildcards.category}/{wildcards.setting}/run{wildcards.run}.json",
        "manifest": f"{R}/data/{wildcards.dataset}/manifest.csv",
    }


def dreambooth_inputs(wildcards):
    """The generator's base model, the run's split and manifest, and the category's class images unless prior
    preservation is off."""
    inputs = run_files(wildcards) | {"base": base_model_dir(wildcards.generator)}
    if GENERATORS[wildcards.generator]["dreambooth"]["prior_loss_weight"] > 0:
        inputs["class_images"] = class_images_dir(wildcards.generator, wildcards.dataset, wildcards.category)
    return inputs


def generation_inputs(wildcards):
    """A pool's or personalization's inputs: the run's split, manifest and fine-tuned model."""
    owner = models_owner(GENERATORS, wildcards.generator)
    return run_files(wildcards) | {"model": model_dir(owner, wildcards.dataset, wildcards.category, wildcards.setting, wildcards.run)}


@cache
def generated_feature_needs(backbone_dir, kind, generator, dataset):
    """What the store of a run's pool or personalized images holds: the backbone's own parts plus what every scorer
    instance on that backbone that reads those images declares."""
    key = "pool" if kind == "pools" else "personalized"
    readers = []
    for scorer in SCORERS:
        declared = METHODS[scorer].generated(PARAMS[scorer])
        reads = declared.generator is not None and image_owner(declared.generator, kind) == generator
        if SCORERS[scorer]["backbone"] == backbone_name(backbone_dir) and reads and getattr(declared, key) and dataset in scorer_datasets(scorer):
            readers.append(scorer)
    return store_needs(backbone_dir, readers)


def generated_feature_param(part):
    return lambda wildcards: generated_feature_needs(wildcards.backbone, wildcards.kind, wildcards.generator, wildcards.dataset)[part]


# --- learned artifacts (rules/fit.smk): method fits and DreamBooth models ----------------------


def model_dir(owner, dataset, category=None, setting=None, run=None):
    """Where a learned artifact of ``owner`` (a scorer instance or a generator) lives: ``models/{owner}/{dataset}``
    for a dataset-scope model, ``models/{owner}/{dataset}/{category}/{setting}/run{run}`` for a run-scope one."""
    if category is None:
        return f"{R}/models/{owner}/{dataset}"
    return f"{R}/models/{owner}/{dataset}/{category}/{setting}/run{run}"


def scorers_with_fit(scope):
    """Scorer instances whose method fits one model per ``scope`` (run or dataset)."""
    return [scorer for scorer in SCORERS if METHODS[scorer].fit is not None and METHODS[scorer].fit.scope == scope]


def train_dataset(scorer, dataset):
    """The dataset a dataset-scope fit trains on when ``scorer`` is tested on ``dataset``: ``train_dataset`` is one
    name, or a mapping from target dataset to training dataset (``default`` for the others)."""
    choice = PARAMS[scorer]["train_dataset"]
    return choice if isinstance(choice, str) else choice.get(dataset, choice.get("default"))


def fitted_model(scorer, dataset, category, setting, run):
    """The model one score job reads: its run's, or that of the dataset its instance trains on."""
    if METHODS[scorer].fit.scope == "dataset":
        return f"{model_dir(scorer, train_dataset(scorer, dataset))}/model.safetensors"
    return f"{model_dir(scorer, dataset, category, setting, run)}/model.safetensors"


def fit_categories(wildcards):
    """(dataset, category) pairs a fit learns from: its run's category, or every category of its training dataset."""
    if "run" in wildcards.keys():
        return [(wildcards.dataset, wildcards.category)]
    return [(wildcards.dataset, category) for category in CATEGORIES[wildcards.dataset]]


def fit_inputs(wildcards):
    """Named inputs of a fit job: manifests, reference pools and feature stores of its categories, and its run's split (scope run)."""
    pairs = fit_categories(wildcards)
    backbone = backbone_dir_of_scorer(wildcards.scorer)
    inputs = {
        "manifests": [f"{R}/data/{dataset}/manifest.csv" for dataset, _ in pairs],
        "reference_pools": [f"{R}/splits/{dataset}/{category}/pool.json" for dataset, category in pairs],
        "features": [feature_file(backbone, dataset, category, ".h5") for dataset, category in pairs],
    }
    if "run" in wildcards.keys():
        inputs |= {"split": run_files(wildcards)["split"]}
    return inputs


def fit_categories_param(wildcards):
    """Dataset and category of each input category, in input order."""
    return [{"dataset": dataset, "category": category} for dataset, category in fit_categories(wildcards)]


def fit_params(wildcards):
    """Only the parameters the method declares as fit parameters: a score-only change never reruns a fit."""
    return canonical(METHODS[wildcards.scorer].fit_params(PARAMS[wildcards.scorer]))


# --- targets ----------------------------------------------------------------------------------


# Dataset keys that choose what the feature stores hold, or which images the splits take, not which images the
# dataset has (``shots_file`` reaches the split rules as an input file).
NOT_PREPARATION_DATASET_KEYS = ("extra_window_sizes", "shots_file")


def dataset_spec(wildcards):
    """What a dataset's preparation reads: its entry without the feature-only and split-only keys (a new window size
    reruns the features and their readers, a shots file the pools and splits, never the manifest)."""
    return canonical({k: v for k, v in DATASETS[wildcards.dataset].items() if k not in NOT_PREPARATION_DATASET_KEYS})


def shots_input(wildcards):
    """The dataset's shots file (``shots_file``: the papers' fixed shots), for the pool and split rules; none when its
    shots are drawn, so a config without one plans exactly as before the option existed."""
    path = DATASETS[wildcards.dataset].get("shots_file")
    return {"shots": path} if path else {}


def dataset_dir(wildcards):
    return f"{R}/data/{wildcards.dataset}"


def setting_spec(wildcards):
    """A setting's shot counts; its run count only adds or removes jobs, so it is left out."""
    return canonical({k: v for k, v in SETTINGS[wildcards.setting].items() if k != "runs"})


def all_metric_parts(wildcards=None):
    return [metrics_part_path(*job) for job in score_jobs()]


def datasets_scored():
    return sorted({dataset for _, dataset, *_ in score_jobs()})


def dataset_score_files(wildcards):
    return [score_path(*job) for job in score_jobs() if job[1] == wildcards.dataset]


def report_scorers():
    """Scorer instances whose method writes its own tables and figures."""
    return [scorer for scorer in SCORERS if METHODS[scorer].report is not None]


def method_report_dirs(scorer):
    """Where an instance's report writes: its tables, their HTML pages, its figures."""
    return {"tables_dir": f"{R}/tables/{scorer}", "html_dir": f"{R}/tables/html/{scorer}", "figures_dir": f"{R}/plots/{scorer}"}


def method_report_outputs(scorer):
    declared, dirs = METHODS[scorer].report, method_report_dirs(scorer)
    tables = {f"{table}.{ext}": f"{dirs['tables_dir']}/{table}.{ext}" for table in declared.tables for ext in ("md", "csv", "tex")}
    tables |= {f"{table}.html": f"{dirs['html_dir']}/{table}.html" for table in declared.tables}
    figures = {f"{figure}.png": f"{dirs['figures_dir']}/{figure}.png" for figure in declared.figures}
    return tables, figures


def statistics_options():
    """The config's ``evaluation.statistics`` as :class:`fsad.evaluation.paired_tables.StatisticsOptions`."""
    from fsad.evaluation.paired_tables import StatisticsOptions

    return StatisticsOptions(**config["evaluation"]["statistics"])


def statistics_outputs(dataset="{dataset}"):
    """Named files of a dataset's statistics tables (those switched on): ``{table}.{md,csv,tex}`` and their HTML pages."""
    outputs = {}
    for table in statistics_options().tables():
        outputs |= {f"{table}_{ext}": f"{R}/tables/statistics/{dataset}/{table}.{ext}" for ext in ("md", "csv", "tex")}
        outputs[f"{table}_html"] = f"{R}/tables/html/statistics/{dataset}/{table}.html"
    return outputs


def dataset_maps_files(wildcards):
    return [score_path(*job, ".maps.h5") for job in score_jobs() if job[1] == wildcards.dataset]


def all_targets():
    targets = [f"{R}/metrics/metrics.csv"]
    for dataset in datasets_scored():
        targets += [f"{R}/tables/{dataset}.{ext}" for ext in ("md", "csv", "tex")]
        targets += [f"{R}/plots/roc_{dataset}.png", f"{R}/plots/auroc_{dataset}.png"]
    targets += [f"{R}/tables/summary.{ext}" for ext in ("md", "csv", "tex")]
    targets += [f"{R}/tables/html/{name}.html" for name in [*datasets_scored(), "summary"]]
    targets += [
        f"{R}/plots/gallery/{scorer}/{dataset}/{category}/{setting}.png"
        for scorer, dataset, category, setting, run in score_jobs()
        if run == 0 and METHODS[scorer].maps
    ]
    targets += [path for dataset in datasets_scored() for path in statistics_outputs(dataset).values()]
    for scorer in report_scorers():
        tables, figures = method_report_outputs(scorer)
        targets += [*tables.values(), *figures.values()]
    return targets + inspect_outputs()


# --- inspect (rules/inspect.smk): new images scored with one saved setup ----------------------

from types import SimpleNamespace

from fsad.inspect.config import check_inspections

INSPECTIONS = dict(config.get("inspect", {}))
check_inspections(config, METHODS, PARAMS, score_jobs())


def inspect_setup(name):
    """The score job an inspection reuses, as the wildcards of that job (scorer, dataset, category, setting, run)."""
    entry = INSPECTIONS[name]
    return SimpleNamespace(scorer=entry["scorer"], dataset=entry["dataset"], category=entry["category"], setting=entry["setting"], run=str(entry["run"]))


def inspect_dir(name):
    return f"{R}/inspect/{name}"


def inspect_images(wildcards):
    """The inspection's folder: the configured one, or its demonstration folder made by rule inspect_demo_images."""
    images = INSPECTIONS[wildcards.name]["images"]
    return f"{inspect_dir(wildcards.name)}/images" if isinstance(images, dict) else images


def inspect_store(name, suffix):
    """The feature store (``.h5``) or its index (``.json``) of an inspection's images, on its scorer's backbone."""
    return f"{feature_dir(backbone_dir_of_scorer(INSPECTIONS[name]['scorer']))}/inspect/{name}{suffix}"


def inspect_feature_param(part):
    """What an inspection's store holds: the backbone's own parts plus what its scorer instance declares."""
    return lambda wildcards: store_needs(wildcards.backbone, [INSPECTIONS[wildcards.name]["scorer"]])[part]


def inspect_inputs(wildcards):
    """The setup's score-job inputs, its saved scores and maps, and the inspection's feature store."""
    setup = inspect_setup(wildcards.name)
    saved = (setup.scorer, setup.dataset, setup.category, setup.setting, setup.run)
    return score_inputs(setup) | {
        "saved_scores": score_path(*saved),
        "saved_maps": score_path(*saved, ".maps.h5"),
        "images_store": inspect_store(wildcards.name, ".h5"),
        "images_index": inspect_store(wildcards.name, ".json"),
    }


def inspect_demo_inputs(wildcards):
    setup = inspect_setup(wildcards.name)
    return {"saved_scores": score_path(setup.scorer, setup.dataset, setup.category, setup.setting, setup.run)}


def inspect_setup_param(function):
    """A score-job param function (:func:`scorer_params`, ...) evaluated for an inspection's setup."""
    return lambda wildcards: function(inspect_setup(wildcards.name))


def inspect_outputs():
    return [f"{inspect_dir(name)}/gallery.html" for name in INSPECTIONS]
