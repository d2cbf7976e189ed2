"""Each config key replans exactly the stages it belongs to: one DAG build per key, against a base DAG, no job run.

The keys come from the schemas (config/schema.yaml, every dataset adapter's and every method's schema.yaml,
fsad/diffusion/schema.yaml): :func:`test_every_config_key_has_a_row` fails naming any key without a row here. Each row gives a changed value and
the jobs it must replan (and remove), as label patterns (``rule:wildcards``, see tests/dag/dag_build.py) written
from what each stage reads, never computed with rules/common.smk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from .dag_build import ROOT, build_dag, replan, select

# --- bases: the embedded default, and smaller overlays on it with one method family and a bystander ----------------

OFF = None  # dag_build.merged: None deletes the instance
ALL_INSTANCES = ("winclip", "anomalous_memory", "devprompt", "promptad", "faprompt", "anomalyclip", "one_to_normal", "patchcore", "anomalydino", "fusion")


def only(**instances: dict[str, Any]) -> dict[str, Any]:
    """An overlay that deletes every default instance but the ones given (merged into their entries), and the default's
    inspection (of patchcore)."""
    return {"scorers": {name: OFF for name in ALL_INSTANCES} | instances, "inspect": {"patchcore_demo": OFF}}


BASES: dict[str, dict[str, Any]] = {
    "default": {},
    # winclip on textile k1, and a bystander instance of the same method reading the same store.
    "winclip": only(
        winclip={"datasets": ["textile"], "settings": ["k1"]},
        winclip_b={"method": "winclip", "backbone": "vitb16plus", "datasets": ["textile"], "settings": ["k1"]},
    ),
    # anomalous_memory with the WinCLIP instance table 1 compares with, and a second one to name instead.
    "anomalous_memory": only(
        anomalous_memory={},
        winclip={"datasets": ["synthetic"], "settings": ["k1", "zs"]},
        winclip_b={"method": "winclip", "backbone": "vitb16plus", "datasets": ["synthetic"], "settings": ["k1"]},
    ),
    "devprompt": only(
        devprompt={"compare_with": ["promptad"]},
        promptad={"compare_with": ["devprompt"]},
    ),
    # a second dataset with masks, for a changed train_dataset
    "faprompt": {
        "datasets": [
            {"name": "textile", "kind": "textile"},
            {"name": "synthetic", "kind": "synthetic", "source": "textile"},
            {"name": "synthetic2", "kind": "synthetic", "source": "textile", "seed": 5},
        ],
        **only(
            faprompt={"datasets": ["textile"], "compare_scorers": ["anomalyclip"]},
            anomalyclip={"datasets": ["textile"]},
        ),
    },
    # patchcore and anomalydino, each with a bystander instance of its method reading the same store.
    "patchcore": only(
        patchcore={},
        patchcore_b={"method": "patchcore", "backbone": "tiny_cnn", "datasets": ["synthetic"], "settings": ["k1"]},
    ),
    # a fusion of winclip and patchcore on synthetic k1, and anomalydino beside it (not a member)
    "fusion": only(
        winclip={"datasets": ["synthetic"], "settings": ["k1"]},
        patchcore={},
        anomalydino={},
        fusion={"members": ["winclip", "patchcore"]},
    ),
    "anomalydino": only(
        anomalydino={},
        anomalydino_b={"method": "anomalydino", "backbone": "tiny_dino", "datasets": ["synthetic"], "settings": ["k1"]},
    ),
    # an inspection of WinCLIP on synthetic defects made from ELPV (two categories, mono and poly), with a second run
    "inspect": {
        "datasets": [d | {"source": "elpv"} if d["name"] == "synthetic" else d for d in yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["datasets"]],
        "runs": 2,
        "settings": [s | {"runs": 1} if s["name"] == "a1" else s for s in yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["settings"]],
        "scorers": only(winclip={"settings": ["zs", "k1"]})["scorers"],
        "inspect": {"patchcore_demo": OFF, "w": {"scorer": "winclip", "dataset": "synthetic", "category": "mono", "setting": "k1",
                                               "images": {"demo": 2}, "decision": "test_normals"}},
    },
    # one_to_normal and a WinCLIP bystander on the same backbone and dataset; a second generator to switch to.
    "one_to_normal": {
        "generators": {"tiny2": {"base_model": "tiny", "resolution": 64, "precision": "fp32", "pool": {"text_to_image": 2, "image_to_image": 2, "steps": 10}}},
        **only(
            one_to_normal={},
            winclip_t={"method": "winclip", "backbone": "tiny_tokens", "datasets": ["textile"], "settings": ["k1"]},
        ),
    },
}

# --- what a change reaches, as label patterns ----------------------------------------------------------------------

# Everything that reads metrics.csv: it changes whenever any score job reruns or appears.
AFTER_METRICS = ["collect_metrics:*", "tables:*", "summary_table:*", "plots:*", "method_report_*", "all:*"]
# An inspection reads its setup's score file (the demo folder is made from it) and the setup's inputs.
def inspection(name: str) -> list[str]:
    return [f"inspect_demo_images:{name}", f"inspect_features:*/{name}", f"inspect_score:{name}", "all:"]


# The default's inspection reads patchcore's synthetic/textile/k1 run.
INSPECT_DEMO = inspection("patchcore_demo")


def after_score(*instances: str) -> list[str]:
    return [p for name in instances for p in (f"score:{name}/*", f"evaluate:{name}/*", f"gallery:{name}/*")] + AFTER_METRICS


def after_fit(*instances: str) -> list[str]:
    return [f"fit_*:{name}/*" for name in instances] + after_score(*instances)


def report_of(instance: str) -> list[str]:
    return [f"method_report_{instance}:", "all:"]


NOTHING: list[str] = []
GENERATED = ["extract_generated_features:*"]
DIFFUSION_ALL = ["class_images:*", "dreambooth:*", "generate_pool:*", "personalize:*", *GENERATED, *after_score("one_to_normal")]
FROM_DREAMBOOTH = ["dreambooth:*", "generate_pool:*", "personalize:*", *GENERATED, *after_score("one_to_normal")]
FROM_POOL = ["generate_pool:*", "extract_generated_features:*/pools/*", *after_score("one_to_normal")]
FROM_PERSONALIZATION = ["personalize:*", "extract_generated_features:*/personalized/*", *after_score("one_to_normal")]


class Row(NamedTuple):
    key: str
    base: str
    change: dict[str, Any]
    replans: list[str]
    removes: list[str] = []


def scorer(instance: str, **values: Any) -> dict[str, Any]:
    return {"scorers": {instance: values}}


def method_rows(instance: str, base: str, kinds: dict[str, tuple[Any, list[str]]], method: str | None = None) -> list[Row]:
    """Rows ``scorers.<method>.<key>`` that change ``instance``'s key to the value given."""
    return [Row(f"scorers.{method or instance}.{key}", base, scorer(instance, **{key: value}), replans) for key, (value, replans) in kinds.items()]


# The default's datasets, with one field changed (lists replace: the whole list is given).
def datasets_with(which: str, /, **fields: Any) -> dict[str, Any]:
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["datasets"]
    return {"datasets": [d | fields if d["name"] == which else d for d in default]}


def dataset_replaced(which: str, /, **fields: Any) -> dict[str, Any]:
    """The default's datasets with entry ``which`` replaced by ``fields`` under the same name: another kind takes
    other options (its adapter's schema refuses the old kind's)."""
    return {"datasets": [{"name": which, **fields} if d["name"] == which else d for d in datasets_with(which)["datasets"]]}


def settings_with(which: str, /, **fields: Any) -> dict[str, Any]:
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["settings"]
    return {"settings": [s | fields if s["name"] == which else s for s in default]}


ELPV_DATA = ["prepare_dataset:elpv", "draw_pool:elpv/*", "draw_split:elpv/*", "extract_features:*/elpv/*"]
# elpv is scored by winclip, faprompt and anomalyclip, and one_to_normal's text maps train on it (its fit).
AFTER_ELPV = [*ELPV_DATA, "score:*/elpv/*", "evaluate:*/elpv/*", "gallery:*/elpv/*", *after_fit("one_to_normal"), *AFTER_METRICS]
SYNTHETIC_DATA = ["prepare_dataset:synthetic", "draw_pool:synthetic/*", "draw_split:synthetic/*", "extract_features:*/synthetic/*"]
# synthetic is scored by winclip, anomalous_memory, devprompt and promptad; faprompt and anomalyclip train on it.
AFTER_SYNTHETIC = [
    *SYNTHETIC_DATA, "score:*/synthetic/*", "evaluate:*/synthetic/*", "gallery:*/synthetic/*", "fit_*:*/synthetic*",
    *after_score("faprompt", "anomalyclip"), *AFTER_METRICS, *INSPECT_DEMO,
]
TEXTILE_DATA = ["prepare_dataset:textile", "draw_pool:textile/*", "draw_split:textile/*", "extract_features:*/textile/*"]
# textile is scored by winclip, faprompt, anomalyclip, one_to_normal (with its generated images).
AFTER_TEXTILE = [
    *TEXTILE_DATA, "score:*/textile/textile/*", "evaluate:*/textile/textile/*", "gallery:*/textile/textile/*",
    "dreambooth:*", "generate_pool:*", "personalize:*", *GENERATED, *AFTER_METRICS,
]
# A backbone's numbers change: its stores move to a new directory (new jobs, the old ones removed) and every reader reruns.
VITB_STORES = ["extract_features:vitb16plus/*"]
AFTER_VITB = [*VITB_STORES, "fit_*:devprompt/*", "fit_*:promptad/*", "fit_*:faprompt/*", "fit_*:anomalyclip/*",
              *after_score("winclip", "anomalous_memory", "devprompt", "promptad", "faprompt", "anomalyclip")]
TINY_STORES = ["extract_features:tiny_tokens/*", *GENERATED]
AFTER_TINY = [*TINY_STORES, *after_fit("one_to_normal")]
EVERY_SEEDED = ["*", "!prepare_dataset:*"]
SETTING_K1 = ["draw_split:*/k1/*", "fit_*:devprompt/*", "fit_*:promptad/*", "dreambooth:*", "generate_pool:*", "personalize:*",
              *GENERATED, "score:*/k1/*", "evaluate:*/k1/*", "gallery:*/k1", *AFTER_METRICS, *INSPECT_DEMO]
# runs: 2 adds run1 of k1 and a1 (zs keeps its own runs: 1), and the aggregates read the new files.
RUN1 = ["draw_split:*/k1/1", "fit_run:*/1", "dreambooth:*/1", "generate_pool:*/1", "personalize:*/1",
        "extract_generated_features:*/1", "score:*/1", "evaluate:*/1", *AFTER_METRICS]

FUSION_SCORE = ["score:fusion/*", "evaluate:fusion/*", "gallery:fusion/*", "statistics_tables:synthetic", *AFTER_METRICS]
# the members' validation set: each member's score job on synthetic k1 reruns, and the fusion that reads them
FUSION_VALIDATION = [*after_score("winclip", "patchcore", "fusion"), "statistics_tables:synthetic"]

ROWS: list[Row] = [
    *method_rows("fusion", "fusion", {
        "members": (["patchcore", "winclip"], FUSION_SCORE),
        "n_draws": (20, FUSION_SCORE),
        "distributions": (["uniform", "normal"], FUSION_SCORE),
        "score_weights": ("equal", FUSION_SCORE),
        "validation": ({"anomalies": 2}, FUSION_VALIDATION),
    }),
    # top level
    Row("results_dir", "default", {"results_dir": "elsewhere"}, ["*"], ["*", "!all:"]),  # the target rule has no output
    Row("seed", "default", {"seed": 1}, EVERY_SEEDED),
    Row("weights_fallback", "default", {"weights_fallback": "error"},
        ["*", "!prepare_dataset:*", "!draw_pool:*", "!draw_split:*", "!base_model:*", "!class_images:*", "!dreambooth:*", "!generate_pool:*", "!personalize:*"]),
    Row("max_test_per_category", "default", {"max_test_per_category": 5}, ["*", "!prepare_dataset:*", "!base_model:*", "!class_images:*"]),
    Row("reference_pool.normal", "default", {"reference_pool": {"normal": 4}}, ["*", "!prepare_dataset:*", "!base_model:*", "!class_images:*"]),
    Row("reference_pool.anomalous", "default", {"reference_pool": {"anomalous": 2}}, ["*", "!prepare_dataset:*", "!base_model:*", "!class_images:*"]),
    # a1 keeps one run (its anomalous pool holds one image): its own runs key wins, as zs's does
    Row("runs", "default", {"runs": 2, **settings_with("a1", runs=1)}, RUN1),
    Row("plugins", "default", {"plugins": ["toy_mean"]}, NOTHING),
    Row("evaluation.map_size", "default", {"evaluation": {"map_size": 64}}, ["score:*", "evaluate:*", "gallery:*", *AFTER_METRICS, *INSPECT_DEMO]),
    Row("evaluation.pro_fpr_limit", "default", {"evaluation": {"pro_fpr_limit": 0.2}}, ["evaluate:*", *AFTER_METRICS]),
    # the statistics tables read the score files, never metrics.csv: only they (and the target rule) replan. A switch of
    # a column keeps the intervals table (the other column stays); a switch of a table drops the jobs of its old outputs.
    *[Row(f"evaluation.statistics.{key}", "default", {"evaluation": {"statistics": {key: False}}}, ["statistics_tables:*", "all:"])
      for key in ("confidence_intervals", "fpr_at_95_tpr")],
    *[Row(f"evaluation.statistics.{key}", "default", {"evaluation": {"statistics": {key: False}}}, ["statistics_tables:*", "all:"], ["statistics_tables:*"])
      for key in ("paired_tests", "per_defect_type")],
    Row("evaluation.statistics.n_bootstrap", "default", {"evaluation": {"statistics": {"n_bootstrap": 50}}}, ["statistics_tables:*", "all:"]),
    Row("evaluation.statistics.level", "default", {"evaluation": {"statistics": {"level": 0.9}}}, ["statistics_tables:*", "all:"]),
    # inspect: a new entry adds its jobs only; the setup's keys redo the whole inspection, the decision keys only its scoring
    Row("inspect", "inspect", {"inspect": {"v": {"scorer": "winclip", "dataset": "elpv", "category": "mono", "setting": "zs", "images": {"demo": 2},
                                                "decision": "test_f1_max"}}}, inspection("v")),
    Row("inspect.scorer", "inspect", {**scorer("winclip_b", method="winclip", backbone="vitb16plus", datasets=["synthetic"], settings=["k1"]),
                                      "inspect": {"w": {"scorer": "winclip_b"}}}, [*after_score("winclip_b"), *inspection("w")]),
    Row("inspect.dataset", "inspect", {"inspect": {"w": {"dataset": "elpv"}}}, inspection("w")),
    Row("inspect.category", "inspect", {"inspect": {"w": {"category": "poly"}}}, inspection("w")),
    Row("inspect.setting", "inspect", {"inspect": {"w": {"setting": "zs"}}}, inspection("w")),
    Row("inspect.run", "inspect", {"inspect": {"w": {"run": 1}}}, inspection("w")),
    Row("inspect.images", "inspect", {"inspect": {"w": {"images": {"demo": 3}}}}, inspection("w")),
    Row("inspect.decision", "inspect", {"inspect": {"w": {"decision": "test_f1_max"}}}, ["inspect_score:w", "all:"]),
    Row("inspect.fpr", "inspect", {"inspect": {"w": {"fpr": 0.1}}}, ["inspect_score:w", "all:"]),
    Row("inspect.check_images", "inspect", {"inspect": {"w": {"check_images": 2}}}, ["inspect_score:w", "all:"]),
    # datasets: a new entry adds its jobs only; each field replans that dataset's jobs and what reads them
    Row("datasets", "default", {"datasets": [*yaml.safe_load((ROOT / "config/config.yaml").read_text())["datasets"], {"name": "more", "kind": "synthetic", "seed": 3}]},
        ["*:more*", "*/more/*", *AFTER_METRICS]),
    Row("datasets.name", "default",
        {**datasets_with("elpv", name="cells"), "scorers": {"faprompt": {"datasets": ["textile", "cells"]}, "anomalyclip": {"datasets": ["textile", "cells"]},
                                                            "one_to_normal": {"train_dataset": "cells"}}},
        ["*cells*", *after_fit("one_to_normal")], ["*elpv*"]),
    Row("datasets.kind", "default", dataset_replaced("elpv", kind="mvtec_ad", categories=["bottle"]), ["*elpv*", *after_fit("one_to_normal"), *AFTER_METRICS],
        ["*elpv*", "!prepare_dataset:*", "!tables:*", "!plots:*", "!statistics_tables:*", "!fit_*:*"]),
    Row("datasets.root", "default", datasets_with("elpv", root="/data/elpv"), AFTER_ELPV),
    Row("datasets.categories", "default", datasets_with("elpv", categories=["poly"]), ["*elpv*", *after_fit("one_to_normal"), *AFTER_METRICS], ["*elpv*", "!prepare_dataset:*", "!tables:*", "!plots:*", "!statistics_tables:*", "!fit_*:*"]),
    Row("datasets.extra_window_sizes", "default", datasets_with("elpv", extra_window_sizes=[5]),
        ["extract_features:vitb16plus/elpv/*", "extract_features:tiny_tokens/elpv/*", "score:*/elpv/*", "evaluate:*/elpv/*", "gallery:*/elpv/*", *after_fit("one_to_normal"), *AFTER_METRICS]),
    # the papers' shots: an input of the pools and splits (never of the preparation), and of what reads them
    Row("datasets.shots_file", "default", datasets_with("synthetic", shots_file=str(ROOT / "tests" / "dag" / "shots_file.yaml")),
        [p for p in AFTER_SYNTHETIC if p != "prepare_dataset:synthetic"]),
    Row("datasets.anomaly_threshold", "default", datasets_with("elpv", anomaly_threshold=0.7), AFTER_ELPV),
    # InCTRL's protocol makes ELPV the one category elpv: mono's jobs give way to elpv/elpv's, as for another category
    Row("datasets.protocol", "default", datasets_with("elpv", protocol="inctrl", categories=["elpv"]), ["*elpv*", *after_fit("one_to_normal"), *AFTER_METRICS], ["*elpv*", "!prepare_dataset:*", "!tables:*", "!plots:*", "!statistics_tables:*", "!fit_*:*"]),
    # the source names the category: synthetic/textile's jobs give way to synthetic/mono's
    Row("datasets.source", "default", {**datasets_with("synthetic", source="elpv"), "inspect": {"patchcore_demo": {"category": "mono"}}}, AFTER_SYNTHETIC,
        ["*synthetic/textile*"]),
    Row("datasets.seed", "default", datasets_with("synthetic", seed=9), AFTER_SYNTHETIC),
    Row("datasets.copies", "default", {**datasets_with("synthetic", copies=2), "inspect": {"patchcore_demo": {"category": "textile1"}}}, ["*synthetic*", "fit_*:devprompt/*", "fit_*:promptad/*", "fit_*:faprompt/*", "fit_*:anomalyclip/*", *after_score("faprompt", "anomalyclip"), *AFTER_METRICS, *INSPECT_DEMO], ["*synthetic*", "!prepare_dataset:*", "!tables:*", "!plots:*", "!statistics_tables:*", "!fit_*:faprompt/*", "!fit_*:anomalyclip/*"]),
    Row("datasets.n_train_normals", "default", datasets_with("synthetic", n_train_normals=4), AFTER_SYNTHETIC),
    Row("datasets.n_test_normals", "default", datasets_with("synthetic", n_test_normals=4), AFTER_SYNTHETIC),
    Row("datasets.n_anomalies", "default", datasets_with("synthetic", n_anomalies=4), AFTER_SYNTHETIC),
    Row("datasets.image_size", "default", datasets_with("synthetic", image_size=96), AFTER_SYNTHETIC),
    Row("datasets.defect_types", "default", datasets_with("synthetic", defect_types=["scratch"]), AFTER_SYNTHETIC),
    # settings: shots replan that setting's splits and what reads them
    # every default instance names its settings: a new setting no instance selects adds no job
    Row("settings", "default", {"settings": [*yaml.safe_load((ROOT / "config/config.yaml").read_text())["settings"], {"name": "k2", "normal_shots": 2}]},
        NOTHING),
    Row("settings.name", "default", {**settings_with("a1", name="anom1"), "scorers": {"anomalous_memory": {"settings": ["anom1"]}}},
        ["*anom1*", *AFTER_METRICS], ["*a1*"]),
    Row("settings.normal_shots", "default", settings_with("k1", normal_shots=2), SETTING_K1),
    Row("settings.anomalous_shots", "default", {**settings_with("zs", anomalous_shots=1, validation_normals=1),
                                                 "scorers": {"winclip": {"settings": ["k1"]}, "faprompt": {"settings": ["zs"]}}},
        ["draw_split:*/zs/*", "score:*/zs/*", "evaluate:*/zs/*", "gallery:*/zs", *AFTER_METRICS], ["*winclip/*/zs/*", "gallery:winclip/*/zs", "draw_split:synthetic/*/zs/*"]),  # only winclip read synthetic's zs split
    Row("settings.validation_normals", "default", settings_with("k1", validation_normals=2), SETTING_K1),
    Row("settings.runs", "default", settings_with("k1", runs=2), RUN1),
    # backbones: the network moves the stores; what a store holds extends it; run settings replan nothing
    Row("backbones", "default", {"backbones": {"spare": {"arch": "fsad-tiny"}}}, NOTHING),
    # naming open_clip, the library an entry without one has, keeps its feature directory
    Row("backbones.library", "default", {"backbones": {"tiny_tokens": {"library": "open_clip"}}}, NOTHING),
    Row("backbones.arch", "default", {"backbones": {"tiny_tokens": {"arch": "ViT-B-16"}}}, AFTER_TINY + ["score:winclip_t/*"], TINY_STORES),
    Row("backbones.pretrained", "default", {"backbones": {"tiny_tokens": {"pretrained": "openai"}}}, AFTER_TINY, TINY_STORES),
    Row("backbones.image_size", "default", {"backbones": {"tiny_tokens": {"image_size": 96}}}, AFTER_TINY, TINY_STORES),
    Row("backbones.quick_gelu", "default", {"backbones": {"tiny_tokens": {"quick_gelu": True}}}, AFTER_TINY, TINY_STORES),
    # resize: promptad feeds other pixels, a store of its own
    Row("backbones.resize", "default", {"backbones": {"tiny_tokens": {"resize": "promptad"}}}, AFTER_TINY, TINY_STORES),
    # the public codes' position-embedding resize and image embedding: other features, a store of their own
    Row("backbones.pos_embed_resize", "default", {"backbones": {"tiny_tokens": {"pos_embed_resize": "bilinear"}}}, AFTER_TINY, TINY_STORES),
    Row("backbones.image_embedding", "default", {"backbones": {"tiny_tokens": {"image_embedding": "no_ln_post"}}}, AFTER_TINY, TINY_STORES),
    Row("backbones.precision", "default", {"backbones": {"vitb16plus": {"precision": "bf16"}}}, AFTER_VITB, VITB_STORES),
    Row("backbones.storage_dtype", "default", {"backbones": {"vitb16plus": {"storage_dtype": "float32"}}}, AFTER_VITB, VITB_STORES),
    Row("backbones.window_sizes", "default", {"backbones": {"tiny_tokens": {"window_sizes": [2]}}}, AFTER_TINY),
    # a block no instance reads yet: the stores extend in place (no new directory), and every reader reruns
    Row("backbones.layers", "default", {"backbones": {"vitb16plus": {"layers": [5]}}}, AFTER_VITB),
    Row("backbones.vv_layers", "default", {"backbones": {"tiny_tokens": {"vv_layers": [2]}}}, AFTER_TINY),
    Row("backbones.batch_size", "default", {"backbones": {"vitb16plus": {"batch_size": 2}}}, NOTHING),
    Row("backbones.workers", "default", {"backbones": {"vitb16plus": {"workers": 3}}}, NOTHING),
    # scorer instances: what selects jobs (checked on the bystander winclip_b of the winclip base)
    Row("scorers", "winclip", {"scorers": {"winclip_c": {"method": "winclip", "backbone": "vitb16plus", "datasets": ["textile"], "settings": ["k1"]}}},
        [*after_score("winclip_c")]),
    Row("scorers.method", "winclip", {"plugins": ["toy_mean"], **scorer("winclip_b", method="toy_mean")}, after_fit("winclip_b"),
        ["gallery:winclip_b/*"]),  # the toy method writes no maps, so no gallery
    Row("scorers.backbone", "winclip", scorer("winclip_b", backbone="tiny_tokens"), ["extract_features:tiny_tokens/textile/*", *after_score("winclip_b")]),
    Row("scorers.settings", "winclip", scorer("winclip_b", settings=["k1", "zs"]), ["draw_split:textile/textile/zs/*", "score:winclip_b/*/zs/*", "evaluate:winclip_b/*/zs/*", "gallery:winclip_b/*/zs", *AFTER_METRICS]),
    Row("scorers.datasets", "winclip", scorer("winclip_b", datasets=["textile", "synthetic"]), [*SYNTHETIC_DATA, "score:winclip_b/synthetic/*", "evaluate:winclip_b/synthetic/*", "gallery:winclip_b/synthetic/*", *AFTER_METRICS]),
    # generators: a stage's keys replan that stage and what reads its images; run settings nothing
    Row("generators", "one_to_normal", {"generators": {"spare": {"base_model": "tiny"}}}, NOTHING),
    # the base model's job reads the base model's name only
    Row("generators.base_model", "one_to_normal", {"generators": {"tiny": {"base_model": "other/model"}}}, ["base_model:tiny", *DIFFUSION_ALL]),
    # a generator reading tiny's models and pool, another prompt set: its personalization alone is new (no DreamBooth)
    Row("generators.models_from", "one_to_normal",
        {"generators": {"tiny_p": {**yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["generators"]["tiny"], "models_from": "tiny",
                                   "personalization": {"prompts": "physical", "prompt_count": 2}}},
         "scorers": {"one_to_normal": {"generator": "tiny_p"}}},
        ["personalize:tiny_p/*", "extract_generated_features:*/personalized/tiny_p/*", *after_score("one_to_normal")],
        ["personalize:tiny/*", "extract_generated_features:*/personalized/tiny/*"]),
    *[Row(f"generators.{key}", "one_to_normal", {"generators": {"tiny": {key: value}}}, DIFFUSION_ALL)
      for key, value in {"resolution": 32, "precision": "bf16", "instance_prompt": "a photo of clean {}", "class_name_mode": "verbatim"}.items()],
    *[Row(f"generators.class_images.{key}", "one_to_normal", {"generators": {"tiny": {"class_images": {key: value}}}}, DIFFUSION_ALL)
      for key, value in {"count": 3, "prompt": "a {}", "steps": 5, "guidance_scale": 3.0}.items()],
    Row("generators.class_images.batch_size", "one_to_normal", {"generators": {"tiny": {"class_images": {"batch_size": 2}}}}, NOTHING),
    *[Row(f"generators.dreambooth.{key}", "one_to_normal", {"generators": {"tiny": {"dreambooth": {key: value}}}}, FROM_DREAMBOOTH)
      for key, value in {"steps": 5, "learning_rate": 1.0e-3, "batch_size": 2, "training": "lora", "max_grad_norm": 0.5, "adam_weight_decay": 0.0}.items()],
    # read by LoRA training only: a full fine-tune's job does not receive them (fsad.diffusion.config.OTHER_MODE_KEYS)
    *[Row(f"generators.dreambooth.{key}", "one_to_normal", {"generators": {"tiny": {"dreambooth": {key: value}}}}, NOTHING)
      for key, value in {"lora_rank": 8, "lora_learning_rate": 3.0e-4}.items()],
    Row("generators.dreambooth.prior_loss_weight", "one_to_normal", {"generators": {"tiny": {"dreambooth": {"prior_loss_weight": 0.0}}}}, FROM_DREAMBOOTH, ["class_images:*"]),
    *[Row(f"generators.dreambooth.augment.{key}", "one_to_normal", {"generators": {"tiny": {"dreambooth": {"augment": {key: value}}}}}, FROM_DREAMBOOTH)
      for key, value in {"hflip": False, "vflip": True, "rotation_degrees": 5.0, "crop_scale": 0.9}.items()],
    *[Row(f"generators.dreambooth.{key}", "one_to_normal", {"generators": {"tiny": {"dreambooth": {key: value}}}}, NOTHING)
      for key, value in {"log_every": 3, "gradient_checkpointing": True}.items()],
    *[Row(f"generators.pool.{key}", "one_to_normal", {"generators": {"tiny": {"pool": {key: value}}}}, FROM_POOL)
      for key, value in {"text_to_image": 2, "image_to_image": 2, "strength": 0.5, "steps": 10, "guidance_scale": 3.0,
                         "image_to_image_process": "single_prompt", "prompts": "physical", "prompt_count": 2, "candidates_per_prompt": 2,
                         "selection": "least_similar"}.items()],
    Row("generators.pool.batch_size", "one_to_normal", {"generators": {"tiny": {"pool": {"batch_size": 2}}}}, NOTHING),
    *[Row(f"generators.personalization.{key}", "one_to_normal", {"generators": {"tiny": {"personalization": {key: value}}}}, FROM_PERSONALIZATION)
      for key, value in {"prompts": ["a photo of {}"], "prompt_count": 2, "fixed_prompt": None, "strength": 0.5, "steps": 10, "guidance_scale": 3.0,
                         "selection": "least_similar"}.items()],
    # method parameters, one instance's key at a time
    *method_rows("winclip", "winclip", {
        "prompt_preset": ("anomalib", after_score("winclip")),
        "temperature": (0.05, after_score("winclip")),
        "class_name_mode": ("verbatim", after_score("winclip")),
        "text_normalisation": ("raw_mean", after_score("winclip")),
        "generated_references": (2, after_score("winclip")),
        # the store of textile holds the new window size: both instances reading it rerun
        "window_sizes": ([2, 3, 5], ["extract_features:vitb16plus/textile/*", *after_score("winclip", "winclip_b")]),
        "generator": ("tiny", ["base_model:tiny", "class_images:*", "dreambooth:*", "generate_pool:*", "extract_generated_features:vitb16plus/pools/*", *after_score("winclip")]),
    }),
    *method_rows("anomalous_memory", "anomalous_memory", {
        **{key: (value, after_score("anomalous_memory")) for key, value in {
            "prompt_preset": "anomalib", "temperature": 0.05, "coverage_threshold": 0.3, "partial_windows": "normal", "text_normalisation": "raw_mean",
            "class_name_mode": "verbatim", "n_augmentations": 3, "n_draws": 7, "distributions": ["uniform"], "score_weights": "normal"}.items()},
        "window_sizes": ([2, 3, 5], ["extract_features:vitb16plus/synthetic/*", *after_score("anomalous_memory", "winclip", "winclip_b")]),
        "generated_references": (2, after_score("anomalous_memory")),
        "baseline_scorer": ("winclip_b", report_of("anomalous_memory")),
        "baseline_setting": ("zs", report_of("anomalous_memory")),
    }),
    *method_rows("devprompt", "devprompt", {
        **{key: (value, after_fit("devprompt")) for key, value in {
            "deviation_loss": False, "n_ctx": 2, "n_prompts": 2, "n_abnormal_ctx": 2, "n_learned_abnormal": 2, "normal_states": ["good {}"],
            "abnormal_states": ["bad {}"], "class_states": False, "class_name_mode": "verbatim", "logit_scale": 50.0, "deviation_score": "contrast",
            "lambda_dev": 0.5, "topk_ratio": 0.2, "margin": 2.0, "reference_draws": 10, "synthetic_anomalies": 2, "defect_types": ["spot"],
            "min_defect_patches": 1, "epochs": 1, "lr": 0.01, "momentum": 0.5, "weight_decay": 0.0, "lr_min": 0.0, "promptad_weight": 0.5,
            "alignment_weight": 0.01, "triplet_margin": 0.5, "deviation_average": "balanced"}.items()},
        "smoothing_sigma": (2.0, after_score("devprompt")),
        # the V-V block is cached in synthetic's store, which promptad's fit and score read too
        "vv_block": (11, ["extract_features:vitb16plus/synthetic/*", *after_fit("devprompt", "promptad")]),
        "compare_with": ([], report_of("devprompt")),
        "sensitivity": ({"lambda_dev": {"devprompt": 1.0}}, report_of("devprompt")),
        "sensitivity_metric": ("image_auroc", report_of("devprompt")),
    }),
    # PromptAD's memory and image-level model (deviation_loss false only): the default's promptad instance; a new
    # memory block extends synthetic's store, which devprompt's fit and score read too (as for vv_block)
    *method_rows("promptad", "devprompt", {
        "memory_blocks": ([3, 9], ["extract_features:vitb16plus/synthetic/*", *after_fit("devprompt", "promptad")]),
        "cls_prompts": (2, after_fit("promptad")),
        "sub_scores": ([], report_of("promptad")),
        # the pool joins the visual memory at scoring time: its generation and features, then promptad's scores; no fit
        "generated_references": (2, after_score("promptad")),
        "generator": ("tiny", ["base_model:tiny", "class_images:*", "dreambooth:*", "generate_pool:*", "extract_generated_features:vitb16plus/pools/*", *after_score("promptad")]),
    }, method="devprompt"),
    *method_rows("faprompt", "faprompt", {
        **{key: (value, after_fit("faprompt")) for key, value in {
            "train_split": "all", "cap": False, "normal_tokens": 3, "abnormal_tokens": 3, "abnormal_prompts": 3, "normal_words": "item.",
            "abnormal_words": "broken item.", "deep_prompt_depth": 3, "deep_prompt_tokens": 2, "dap": False, "dap_patches": 3,
            "dap_selection": "first", "dap_reduction": 4, "temperature": 0.1, "image_score": "code", "static_map_weight": 2.0,
            "prior_map_weight": 0.25, "image_ce_weight": 0.5, "image_focal_weight": 0.5, "image_focal_input": "logit", "orthogonal_weight": 0.2,
            "prior_weight": 0.5, "prior_reduction": "sum", "focal_gamma": 1.0, "lr": 0.01, "betas": [0.9, 0.99], "batch_size": 2, "epochs": 1,
            "loss_size": 16, "measure_encoding": True}.items()},
        "sigma": (2.0, after_score("faprompt")),
        # the fit trains on synthetic2: a new fit and synthetic2's data and store; the old fit goes
        "train_dataset": ("synthetic2", ["*synthetic2*", *after_fit("faprompt")]),
        # the V-V layers are cached in textile's (scored) and synthetic's (trained on) stores, which anomalyclip reads too
        "vv_layers": ([11], ["extract_features:vitb16plus/*", *after_fit("faprompt", "anomalyclip")]),
        "compare_scorers": ([], report_of("faprompt")),
        "ablation": ([{"label": "FAPrompt", "scorer": "faprompt"}], report_of("faprompt")),
    }),
    *method_rows("patchcore", "patchcore", {
        **{key: (value, after_score("patchcore")) for key, value in {
            "embedding": "original", "coreset_ratio": 0.5, "neighbours": 3, "image_score": "max", "sigma": 2.0, "generated_references": 2}.items()},
        # a stage no instance read yet: synthetic's store of the CNN extends, and both instances reading it rerun
        "layers": ([1, 2, 3], ["extract_features:tiny_cnn/synthetic/*", *after_score("patchcore", "patchcore_b")]),
        "generator": ("tiny", ["base_model:tiny", "class_images:*", "dreambooth:*", "generate_pool:*", "extract_generated_features:tiny_cnn/pools/*", *after_score("patchcore")]),
    }),
    *method_rows("anomalydino", "anomalydino", {
        **{key: (value, after_score("anomalydino")) for key, value in {
            "rotations": False, "masking": True, "mask_threshold": 5.0, "mask_references": True, "top_fraction": 0.05, "sigma": 2.0,
            "generated_references": 2}.items()},
        "generator": ("tiny", ["base_model:tiny", "class_images:*", "dreambooth:*", "generate_pool:*", "extract_generated_features:tiny_dino/pools/*", *after_score("anomalydino")]),
    }),
    *method_rows("one_to_normal", "one_to_normal", {
        **{key: (value, after_fit("one_to_normal")) for key, value in {
            "prompt_preset": "anomalib", "temperature": 0.05, "text_normalisation": "raw_mean", "class_name_mode": "verbatim",
            "text_map_epochs": 1, "text_map_lr": 0.01, "text_map_batch_size": 4, "text_map_focal_gamma": 1.0}.items()},
        **{key: (value, after_score("one_to_normal")) for key, value in {"alpha": 0.5, "beta": 1.0, "memory_size": 3}.items()},
        # layers are cached in textile's and elpv's stores (and the generated images'): winclip_t reads textile's
        "layers": ([1], [*TINY_STORES, *after_fit("one_to_normal"), *after_score("winclip_t")]),
        "train_dataset": ("synthetic", ["*synthetic*", *after_fit("one_to_normal")]),
        "generator": ("tiny2", ["base_model:tiny2", "*:tiny2/*", *GENERATED, *after_score("one_to_normal")]),
        "prompt_study": ([{"label": "3 prompts", "scorer": "one_to_normal"}], report_of("one_to_normal")),
        "gallery_categories": (1, report_of("one_to_normal")),
    }),
    # the pool needs normal shots to fine-tune on: a setting with one normal and one anomalous reference, its splits
    Row("scorers.anomalous_memory.generator", "anomalous_memory",
        {"settings": [*yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["settings"], {"name": "k1a1", "normal_shots": 1, "anomalous_shots": 1, "validation_normals": 1}],
         "scorers": {"anomalous_memory": {"generator": "tiny", "settings": ["k1a1"]}}},
        ["draw_split:synthetic/*/k1a1/*", "base_model:tiny", "class_images:*", "dreambooth:*", "generate_pool:*", "extract_generated_features:vitb16plus/pools/*",
         *after_score("anomalous_memory")],
        ["draw_split:synthetic/*/a1/*", "score:anomalous_memory/*/a1/*", "evaluate:anomalous_memory/*/a1/*", "gallery:anomalous_memory/*/a1"]),
    # a transfer pair: winclip_t and its twin reading tiny's pool (a new instance: its score jobs, the pool's windows)
    Row("scorers.one_to_normal.transfer", "one_to_normal",
        {"scorers": {"one_to_normal": {"transfer": [{"without": "winclip_t", "with": "winclip_tp"}]},
                     "winclip_tp": {"method": "winclip", "backbone": "tiny_tokens", "datasets": ["textile"], "settings": ["k1"], "generator": "tiny"}}},
        ["extract_generated_features:tiny_tokens/pools/*", *after_score("winclip_tp"), *report_of("one_to_normal"), "score:one_to_normal/*", "evaluate:one_to_normal/*", "gallery:one_to_normal/*"]),
]

REMOVALS = {
    "scorers.faprompt.train_dataset": ["fit_*:faprompt/synthetic"],
    "scorers.one_to_normal.train_dataset": ["fit_*:one_to_normal/elpv", "prepare_dataset:elpv", "draw_pool:elpv/*", "extract_features:*/elpv/*"],
    "scorers.one_to_normal.generator": ["base_model:tiny", "*:tiny/*", "extract_generated_features:*/tiny/*"],
}
ROWS = [row._replace(removes=REMOVALS.get(row.key, row.removes)) for row in ROWS]


# --- the keys the schemas declare -----------------------------------------------------------------------------------


def schema_keys(schema: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted keys of a schema: every property, recursing into object properties, array items and mapping values."""
    keys = set()
    for name, sub in schema.get("properties", {}).items():
        keys.add(prefix + name)
        keys |= schema_keys(sub, f"{prefix}{name}.")
        if isinstance(sub.get("items"), dict):
            keys |= schema_keys(sub["items"], f"{prefix}{name}.")
        if isinstance(sub.get("additionalProperties"), dict):
            keys |= schema_keys(sub["additionalProperties"], f"{prefix}{name}.")
    return keys


def declared_keys() -> set[str]:
    from fsad.data.registry import adapters
    from fsad.diffusion.config import SCHEMA as GENERATOR_SCHEMA
    from fsad.schemas import load_schema
    from fsad.scorers.registry import builtin_method_modules, load_method

    config = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    keys = schema_keys(config)
    # a dataset's options, declared by its kind's adapter (fsad/data/adapters/<kind>.schema.yaml)
    keys |= {f"datasets.{key}" for adapter in adapters().values() for key in schema_keys(adapter.option_schema())}
    # a section that only holds sub-keys has no row of its own
    keys -= {"reference_pool", "evaluation", "evaluation.statistics"}
    keys |= {f"generators.{key}" for key in schema_keys(yaml.safe_load(Path(GENERATOR_SCHEMA).read_text()))}
    keys -= {"generators.class_images", "generators.dreambooth", "generators.pool", "generators.personalization", "generators.dreambooth.augment"}
    for module in builtin_method_modules().values():
        method = load_method(module)
        schema = load_schema(method.schema)  # its included fragments' properties too
        keys |= {f"scorers.{method.name}.{name}" for name in schema["properties"]}
    return keys


def test_every_config_key_has_a_row():
    rows = {row.key for row in ROWS}
    keys = declared_keys()
    assert not keys - rows, f"config keys without a row in tests/dag/test_replan_table.py: {sorted(keys - rows)}"
    assert not rows - keys, f"rows for keys no schema declares: {sorted(rows - keys)}"
    assert len(rows) == len(ROWS), "two rows for one key"


@pytest.fixture(autouse=True)
def plugins_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "plugins"))


def with_score_readers(expected: set[str], labels: set[str], config: dict[str, Any], removed: set[str] = frozenset()) -> set[str]:
    """``expected`` plus the jobs that read the score files of its score jobs beyond the per-instance chain the rows
    name: each dataset's statistics tables (they read every score file of the dataset, so a removed one counts too) and
    a fusion's score chain (it reads its members' files of the same dataset, category, setting and run)."""
    scores = {label.split(":", 1)[1] for label in expected if label.startswith("score:")}
    gone = {label.split(":", 1)[1] for label in removed if label.startswith("score:")}
    readers = {f"statistics_tables:{job.split('/')[1]}" for job in scores | gone}
    for name, entry in config["scorers"].items():
        if entry and entry.get("method") == "fusion":
            for job in scores:
                instance, rest = job.split("/", 1)
                if instance in entry["members"]:
                    readers |= {f"score:{name}/{rest}", f"evaluate:{name}/{rest}", f"statistics_tables:{rest.split('/')[0]}"}
                    if rest.endswith("/0"):  # the gallery shows run 0
                        readers.add(f"gallery:{name}/{rest.rsplit('/', 1)[0]}")
    return expected | (readers & labels)


@pytest.mark.parametrize("row", ROWS, ids=[row.key for row in ROWS])
def test_a_changed_key_replans_exactly_its_stages(row: Row):
    base = build_dag(BASES[row.base])
    new = build_dag(BASES[row.base], row.change)
    plan = replan(base, new)
    labels = {job.label for job in new.jobs.values()}
    expected_removed = select({job.label for job in base.jobs.values()}, row.removes)
    expected = with_score_readers(select(labels, row.replans), labels, new.config, expected_removed)
    missing, extra = sorted(expected - plan.replanned), sorted(plan.replanned - expected)
    assert not missing and not extra, f"{row.key}: replans {plan.by_rule()}\nmissing {missing}\nunexpected {extra}"
    assert plan.removed == expected_removed, f"{row.key}: removes {sorted(plan.removed)}, expected {sorted(expected_removed)}"
    if row.replans:
        assert plan.replanned, f"{row.key}: the change replans nothing"


def test_deleting_an_instance_removes_its_jobs_and_replans_only_what_reads_metrics():
    """A config runs the instances it lists: without winclip_b its jobs go, and nothing upstream reruns."""
    base = build_dag(BASES["winclip"])
    new = build_dag(BASES["winclip"], {"scorers": {"winclip_b": None}})
    plan = replan(base, new)
    labels = {job.label for job in new.jobs.values()}
    assert plan.replanned == select(labels, [*AFTER_METRICS, "statistics_tables:*"]), plan.by_rule()  # it read winclip_b's scores too
    assert plan.removed == select({job.label for job in base.jobs.values()}, ["score:winclip_b/*", "evaluate:winclip_b/*", "gallery:winclip_b/*"])
