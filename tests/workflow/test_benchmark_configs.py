"""Paper benchmark configs: each dry-runs, and its job counts per rule follow from its protocol."""

from __future__ import annotations

import re

import pytest

from .conftest import ROOT, snakemake
from .slurm_cluster import write_cluster_profile

pytestmark = pytest.mark.slow

BENCHMARKS = ROOT / "config" / "benchmarks"
# Categories per dataset, from the datasets' own documentation (not from this project's code).
CATEGORIES = {"mvtec_ad": 15, "visa": 12, "sdd": 1, "btad": 3, "mpdd": 6, "elpv": 2}  # elpv: mono- and polycrystalline cells
# The seed papers' further datasets: DAGM 2007's ten classes, DTD-Synthetic's twelve textures, MNIST's ten digits and
# CIFAR-10's ten classes (one class against the rest each), the rest one class.
PAPER_DATASETS = {
    "aitex": 1, "dagm": 10, "dtd_synthetic": 12, "mnist": 10, "cifar10": 10, "brainmri": 1, "headct": 1, "br35h": 1,
    "isic2016": 1, "cvc_clinicdb": 1, "cvc_colondb": 1, "kvasir": 1, "tn3k": 1, "endo": 1, "lag": 1, "oct2017": 1,
    "resc": 1,
}  # fmt: skip
# Under InCTRL's partition (protocol: inctrl, convert_elpv.py), as FAPrompt and One-to-Normal: one category.
INCTRL_CATEGORIES = CATEGORIES | PAPER_DATASETS | {"elpv": 1}


def dry_run(workdir, *configfiles) -> tuple[dict[str, int], set[str]]:
    """A dry run's 'Job stats' table, as rule -> count, and the scorer instances its score jobs belong to."""
    proc = snakemake(workdir, "-n", "--cores", "8", configfiles=configfiles)
    text = proc.stdout + proc.stderr
    table = text[text.index("Job stats:") :].split("\n\n")[0]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}
    jobs = re.split(r"^(?:local)?rule ", text, flags=re.M)
    scorers = {m[1] for job in jobs if job.startswith("score:") for m in re.finditer(r"wildcards: scorer=([^,\s]+)", job)}
    return counts, scorers


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


def expected_cross_dataset(datasets, learned_instances, training_datasets, backbones=2):
    """Jobs of a zero-shot cross-dataset protocol (FAPrompt): every dataset in one zero-shot run, each learned instance
    fitted once per training dataset, one more instance (WinCLIP) beside them, features of every dataset per backbone.
    ELPV in InCTRL's partition: one category."""
    categories = sum(INCTRL_CATEGORIES[d] for d in datasets)
    scores = categories * (learned_instances + 1)
    return {
        "prepare_dataset": len(datasets),
        "draw_pool": categories,
        "extract_features": categories * backbones,
        "draw_split": categories,
        "fit_dataset": learned_instances * len(training_datasets),
        "score": scores,
        "evaluate": scores,
        "collect_metrics": 1,
    }


def expected_one_to_normal(datasets, settings, training_datasets, transfer_datasets, memory_datasets, studies, transfer_backbones, runs=5):
    """One-to-Normal's protocol: per run a DreamBooth model, its pool and personalized test images, class images once
    per category; the study instances (``studies``, 8 shots) personalize again from the same models and pools; the
    transfer pairs (``transfer_backbones``: the backbone of each memory method, PromptAD's with a fit per run) score
    ``transfer_datasets`` without and with the pool, the anomalous memory on ``memory_datasets`` at k8a1 (its own
    splits, models and pools). ELPV follows InCTRL's partition there (convert_elpv.py): one category."""
    count = lambda names: sum(INCTRL_CATEGORIES[d] for d in names)  # noqa: E731
    categories, transfer, memory = count(datasets), count(transfer_datasets) * len(settings) * runs, count(memory_datasets) * runs
    per_run = categories * len(settings) * runs
    study = categories * runs * studies
    clip_memory_backbones = len(set(transfer_backbones))  # stores of the transfer methods' backbones beside ViT-L-14's
    return {
        "prepare_dataset": len(datasets),
        "draw_pool": categories,
        "extract_features": categories + count(transfer_datasets) * clip_memory_backbones,
        "draw_split": per_run + memory,
        "base_model": 1,  # the generator's base model as a pipeline directory, once
        "class_images": categories,
        "dreambooth": per_run + memory,
        "generate_pool": per_run + memory,
        "personalize": per_run + study,
        # pools on ViT-L-14 (One-to-Normal and its studies), on each transfer backbone, the k8a1 ones on ViT-B;
        # personalized images on ViT-L-14, One-to-Normal's and each study generator's
        "extract_generated_features": per_run + transfer * clip_memory_backbones + memory + per_run + study,
        "fit_dataset": len(training_datasets) * (1 + studies),
        "fit_run": 2 * transfer,  # PromptAD without and with the pool
        "score": per_run + study + 2 * transfer * len(transfer_backbones) + 2 * memory,
        "evaluate": per_run + study + 2 * transfer * len(transfer_backbones) + 2 * memory,
        "collect_metrics": 1,
    }


def expected_devprompt(datasets, sweep_dataset, sweep_instances, learned_instances=3, backbones=2, runs=3, fusions=1):
    """DevPrompt's one-normal-shot protocol (k1 only): WinCLIP+, DevPrompt, PromptAD in full and its textual branch
    alone (``learned_instances``) on every dataset, the sweep instances (lambda, K, a) on ``sweep_dataset``; every
    DevPrompt/PromptAD score job reads its own run's fit. Features of every category on both backbones (DevPrompt's
    256 px, PromptAD's and WinCLIP+'s 240 px). ``fusions`` instances fuse WinCLIP+, DevPrompt and PromptAD on every
    dataset and run (no fit)."""
    counts = expected(datasets, ["k1"], [datasets], [], runs)
    categories = sum(CATEGORIES[d] for d in datasets)
    fits = (learned_instances * categories + sweep_instances * CATEGORIES[sweep_dataset]) * runs
    fused = fusions * categories * runs
    return counts | {"extract_features": categories * backbones, "fit_run": fits, "score": counts["score"] + fits + fused,
                     "evaluate": counts["evaluate"] + fits + fused}


def expected_baselines(datasets, settings, instances, backbones, runs=3):
    """The few-shot baselines' protocol: every instance on every dataset, setting and run, no fit; one store per
    category on each backbone (PatchCore's CNN, AnomalyDINO's ViT at two sizes)."""
    counts = expected(datasets, settings, [datasets] * instances, [], runs)
    return counts | {"extract_features": counts["extract_features"] * backbones}


# The papers' dataset lists: FAPrompt's 19 (Sec. 4.1), One-to-Normal's 11 (Sec. 4.1, Tables 4 and 5).
FAPROMPT_DATASETS = [
    "mvtec_ad", "visa", "dagm", "dtd_synthetic", "aitex", "sdd", "btad", "mpdd", "elpv",
    "brainmri", "headct", "lag", "br35h", "cvc_colondb", "cvc_clinicdb", "kvasir", "endo", "isic2016", "tn3k",
]  # fmt: skip
ONE_TO_NORMAL_DATASETS = ["mvtec_ad", "visa", "sdd", "aitex", "elpv", "oct2017", "brainmri", "headct", "resc", "mnist", "cifar10"]
# winclip.yaml and winclip_anomalous_samples.yaml run the paper's and anomalib's prompt presets as two instances side by side.
# devprompt.yaml: sweeps of lambda (0.1, 0.01), K (20, 30 %) and a (1, 3, 7, 9) beside the default on VisA; DevPrompt at
# 256 px on its own backbone entry, PromptAD in full and text-only at 240 px.
# faprompt.yaml: FAPrompt, AnomalyCLIP and four ablation instances, trained on MVTec AD and (for MVTec AD) on VisA, and
# FAPrompt and AnomalyCLIP in the public codes' mode on a backbone entry of their own (bilinear position grid, no ln_post).
CASES = {
    "winclip.yaml": expected(["mvtec_ad", "visa"], ["zs", "k1", "k2", "k4"], [["mvtec_ad", "visa"]] * 2, []),
    "anomalous_samples.yaml": expected(["visa", "mvtec_ad", "sdd"], ["k1"], [["visa", "mvtec_ad", "sdd"]], ["visa", "mvtec_ad", "sdd"]),
    "winclip_anomalous_samples.yaml": expected(
        ["mvtec_ad", "visa", "sdd"], ["zs", "k1", "k2", "k4"], [["mvtec_ad", "visa", "sdd"], ["mvtec_ad", "visa"]], ["mvtec_ad", "visa", "sdd"]
    ),
    "faprompt.yaml": expected_cross_dataset(FAPROMPT_DATASETS, 8, ["mvtec_ad", "visa"], backbones=3),
    "devprompt.yaml": expected_devprompt(["mvtec_ad", "visa"], "visa", 8),
    # the studies: 1, 3, 5, 10 prompts and the empty fixed prompt; transfer: WinCLIP+ and PromptAD (ViT-B), PatchCore, AnomalyDINO
    "one_to_normal.yaml": expected_one_to_normal(
        ONE_TO_NORMAL_DATASETS, ["k2", "k4", "k8"], ["mvtec_ad", "visa"],
        ["mvtec_ad", "visa", "sdd", "headct"], ["mvtec_ad", "visa"], studies=5, transfer_backbones=["vitb16plus", "vitb16plus", "wrn50", "dinov2"]),
    # fewshot_baselines.yaml: PatchCore on wide_resnet50_2, AnomalyDINO on DINOv2 ViT-S/14 at 448 and at 672 px
    "fewshot_baselines.yaml": expected_baselines(["mvtec_ad", "visa"], ["k1", "k2", "k4", "k8"], instances=3, backbones=3),
}


def test_every_benchmark_config_has_a_job_count_case():
    assert sorted(p.name for p in BENCHMARKS.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_dry_run_job_counts_follow_the_protocol(name, tmp_path):
    import yaml

    counts, scorers = dry_run(tmp_path, BENCHMARKS / name)
    # a benchmark runs the instances it names, and nothing of the demo's config
    assert scorers == set(yaml.safe_load((BENCHMARKS / name).read_text())["scorers"]), f"{name}: score jobs of {sorted(scorers)}"
    for rule, count in CASES[name].items():
        assert counts.get(rule) == count, f"{name}: {rule} has {counts.get(rule)} jobs, the protocol implies {count}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_configs_use_pretrained_weights_and_refuse_random_ones(name):
    import yaml

    config = yaml.safe_load((BENCHMARKS / name).read_text())
    assert config["weights_fallback"] == "error"
    assert all(b["pretrained"] not in ("none", "") for b in config["backbones"].values())
    assert all(g.get("base_model") != "tiny" for g in (config.get("generators") or {}).values())  # tiny: random weights


def test_all_benchmarks_plan_at_most_100_slurm_submissions(tmp_path):
    """Through profiles/slurm, winclip_anomalous_samples.yaml's jobs travel in group jobs: one submission per download, per 4 categories'
    feature extractions and per 12 score jobs with their evaluations (the profile's group-components)."""
    # the profile without its account (the account check would ask a cluster's sacctmgr)
    profile = write_cluster_profile(tmp_path / "profile", ROOT / "profiles/slurm/profile.yaml")
    proc = snakemake(tmp_path / "run", "-n", "--profile", str(tmp_path / "profile"), configfiles=(BENCHMARKS / "winclip_anomalous_samples.yaml",))
    text = proc.stdout + proc.stderr
    groups = re.findall(r"^\[[^\]]+\] Group job (\w+) ", text, re.M)
    # Jobs outside groups (group members are indented); the dry run prints local rules (draw_split, tables, ...) the
    # same way, so only the rules that run on the cluster are counted (tests/workflow/test_slurm.py counts real sbatch calls).
    cluster_rules = {"prepare_dataset", "extract_features", "fit_run", "fit_dataset", "score", "evaluate"}
    single = [rule for rule in re.findall(r"^rule (\w+):$", text, re.M) if rule in cluster_rules]
    per_group = {name: int(n) for name, n in (entry.split("=") for entry in profile["group-components"])}
    protocol = CASES["winclip_anomalous_samples.yaml"]
    assert single == ["prepare_dataset"] * protocol["prepare_dataset"]
    assert groups.count("features") == -(-protocol["extract_features"] // per_group["features"])
    assert groups.count("scores") == -(-protocol["score"] // per_group["scores"])
    assert len(groups) + len(single) <= 100


@pytest.mark.parametrize("name", ["default", *sorted(CASES)])
def test_snakemake_lint_reports_nothing(name, tmp_path):
    """`snakemake --lint` on the embedded default and on every benchmark config: no lint at all, false positives included."""
    configfiles = () if name == "default" else (BENCHMARKS / name,)
    proc = snakemake(tmp_path, "--lint", configfiles=configfiles, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in output, output[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in output


# The seed papers' further datasets, categories from their own documentation: DAGM 2007's ten classes, DTD-Synthetic's
# twelve textures, MNIST's ten digits and CIFAR-10's ten classes (one class against the rest each), the rest one class.


def test_the_papers_further_datasets_plan_zero_shot_jobs_per_documented_category(tmp_path):
    """winclip.yaml's two zero-shot instances on every further dataset (the test-only ones run zero-shot only)."""
    import yaml

    overlay = tmp_path / "paper_datasets.yaml"
    overlay.write_text(yaml.safe_dump({
        "datasets": [{"name": kind, "kind": kind} for kind in PAPER_DATASETS],
        "scorers": {"winclip": {"settings": ["zs"]}, "winclip_anomalib": {"settings": ["zs"]}},
    }))  # fmt: skip
    counts, scorers = dry_run(tmp_path / "run", BENCHMARKS / "winclip.yaml", overlay)
    assert scorers == {"winclip", "winclip_anomalib"}
    categories = sum(PAPER_DATASETS.values())
    assert counts["prepare_dataset"] == len(PAPER_DATASETS)
    assert counts["draw_pool"] == counts["extract_features"] == counts["draw_split"] == categories
    assert counts["score"] == counts["evaluate"] == 2 * categories


@pytest.mark.parametrize(
    ("name", "method", "datasets"), [("faprompt.yaml", "faprompt", FAPROMPT_DATASETS), ("one_to_normal.yaml", "one_to_normal", ONE_TO_NORMAL_DATASETS)]
)
def test_paper_benchmarks_list_every_dataset_of_their_paper_and_their_learned_instances_score_them_all(name, method, datasets):
    import yaml

    config = yaml.safe_load((BENCHMARKS / name).read_text())
    assert [d["name"] for d in config["datasets"]] == datasets
    # the paper's method in every instance (one_to_normal.yaml's transfer pairs of other methods run on a subset)
    named = {instance: spec.get("datasets") for instance, spec in config["scorers"].items() if spec["method"] == method and "datasets" in spec}
    assert named and all(listed == datasets for listed in named.values()), named
