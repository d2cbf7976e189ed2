"""Incremental reruns: a config change reruns exactly the jobs it touches (through `snakemake --summary`)."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import yaml

from .conftest import TINY, snakemake

pytestmark = pytest.mark.slow

# Outputs that aggregate over jobs: they must update whenever any job's result changes or appears.
AGGREGATES = {"collect_metrics", "tables", "summary_table", "statistics_tables", "plots", "gallery", "method_report_anomalous_memory", "all"}
UPSTREAM = {"prepare_dataset", "draw_pool", "draw_split", "extract_features"}


def write_overlay(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def summary(workdir, *configfiles, env: dict | None = None) -> pd.DataFrame:
    """The `--summary` table of the config ``configfiles`` (the first one complete): one row per output file with its
    rule and the planned action."""
    proc = snakemake(workdir, "--summary", "--cores", "1", configfiles=configfiles, env=env)
    text = proc.stdout[proc.stdout.index("output_file") :]
    return pd.read_csv(io.StringIO(text), sep="\t")


def pending(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["plan"] != "no update"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished tiny run with a second backbone (used by anomalous_memory), in its own working directory."""
    workdir = tmp_path_factory.mktemp("reruns")
    base = write_overlay(
        workdir / "base.yaml",
        {
            "backbones": {
                "vitb16plus": yaml.safe_load(TINY.read_text())["backbones"]["vitb16plus"],
                "tiny2": {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112, "window_sizes": [2, 3]},
            },
            "scorers": {"anomalous_memory": {"backbone": "tiny2"}},
            # Room for a second run (anomalous, and k2 with its own two normals): pools are fixed per category, so their size is set up front.
            "reference_pool": {"normal": 4, "anomalous": 2},
        },
    )
    snakemake(workdir, "--cores", "2", configfiles=(TINY, base))
    return workdir, base


def rules_pending(workdir, *configfiles) -> set[str]:
    return set(pending(summary(workdir, TINY, *configfiles))["rule"])


def test_an_immediate_rerun_does_nothing(done):
    workdir, base = done
    assert rules_pending(workdir, base) == set()


def test_a_changed_scorer_parameter_reruns_only_that_scorers_jobs(done, tmp_path):
    workdir, base = done
    change = write_overlay(tmp_path / "c.yaml", {"scorers": {"winclip": {"temperature": 0.05}}})
    table = pending(summary(workdir, TINY, base, change))
    assert not set(table["rule"]) & UPSTREAM
    scored = table[table["rule"] == "score"]["output_file"]
    assert len(scored) and scored.str.contains("/scores/winclip/").all()
    assert set(table["rule"]) <= {"score", "evaluate"} | AGGREGATES


def test_a_changed_backbone_reruns_features_and_after_for_that_backbone_only(done, tmp_path):
    workdir, base = done
    overlay = yaml.safe_load(base.read_text())
    overlay["backbones"]["tiny2"]["image_size"] = 96
    table = pending(summary(workdir, TINY, write_overlay(tmp_path / "c.yaml", overlay)))
    assert not set(table["rule"]) & {"prepare_dataset", "draw_pool", "draw_split"}
    features = table[table["rule"] == "extract_features"]["output_file"]
    assert len(features) and not features.str.contains("/vitb16plus-").any()
    scored = table[table["rule"] == "score"]["output_file"]
    assert scored.str.contains("/scores/anomalous_memory/").all()


def test_a_new_setting_and_run_add_jobs_and_change_nothing_that_exists(done, tmp_path):
    workdir, base = done
    settings = yaml.safe_load((TINY.parents[3] / "config" / "config.yaml").read_text())["settings"]
    overlay = {
        "runs": 2,
        "settings": settings + [{"name": "k2", "normal_shots": 2}],
        "scorers": {"winclip": {"settings": ["zs", "k1", "k2"]}},
    }
    before = summary(workdir, TINY, base)
    after = pending(summary(workdir, TINY, base, write_overlay(tmp_path / "c.yaml", overlay)))
    existing = set(before["output_file"])
    touched = after[after["output_file"].isin(existing) & ~after["rule"].isin(AGGREGATES)]
    assert touched.empty, touched[["output_file", "rule", "status"]].to_string()
    assert (after["rule"] == "score").any()


def test_a_new_dataset_adds_jobs_and_changes_nothing_that_exists(done, tmp_path):
    workdir, base = done
    tiny = yaml.safe_load(TINY.read_text())
    overlay = {"datasets": tiny["datasets"] + [{"name": "elpv", "kind": "elpv", "categories": ["mono"]}]}
    before = summary(workdir, TINY, base)
    after = pending(summary(workdir, TINY, base, write_overlay(tmp_path / "c.yaml", overlay)))
    touched = after[after["output_file"].isin(set(before["output_file"])) & ~after["rule"].isin(AGGREGATES)]
    assert touched.empty, touched[["output_file", "rule", "status"]].to_string()
    assert after["output_file"].str.contains("/elpv/").any()


def test_reordered_yaml_keys_and_equal_floats_rerun_nothing(done, tmp_path):
    workdir, base = done
    reordered = tmp_path / "tiny_reordered.yaml"
    text = TINY.read_text()
    data = yaml.safe_load(text)
    # Reverse every mapping's key order and spell anomalous_memory's default coverage_threshold 0.5 as 0.50.
    def reverse(obj):
        if isinstance(obj, dict):
            return {k: reverse(obj[k]) for k in reversed(list(obj))}
        if isinstance(obj, list):
            return [reverse(v) for v in obj]
        return obj

    data["scorers"]["anomalous_memory"]["coverage_threshold"] = "COVERAGE"
    # spelled 0.50 in the file (yaml.safe_dump would write 0.5)
    reordered.write_text(yaml.safe_dump(reverse(data), sort_keys=False).replace("COVERAGE", "0.50").replace("'0.50'", "0.50"))
    base_reordered = tmp_path / "base_reordered.yaml"
    base_reordered.write_text(yaml.safe_dump(reverse(yaml.safe_load(base.read_text())), sort_keys=False))
    proc = snakemake(workdir, "--summary", "--cores", "1", configfiles=(reordered, base_reordered))
    table = pd.read_csv(io.StringIO(proc.stdout[proc.stdout.index("output_file") :]), sep="\t")
    assert pending(table).empty, pending(table)[["output_file", "rule", "status"]].to_string()


def test_batch_sizes_and_workers_are_run_settings_that_rerun_nothing(done, tmp_path):
    workdir, base = done
    overlay = yaml.safe_load(base.read_text())
    overlay["backbones"]["vitb16plus"] |= {"batch_size": 3, "workers": 2}
    overlay["backbones"]["tiny2"] |= {"batch_size": 1, "workers": 0}
    table = pending(summary(workdir, TINY, write_overlay(tmp_path / "c.yaml", overlay)))
    assert table.empty, table[["output_file", "rule", "status"]].to_string()


def test_a_changed_precision_replans_that_backbones_features_and_what_reads_them_only(done, tmp_path):
    workdir, base = done
    overlay = yaml.safe_load(base.read_text())
    overlay["backbones"]["tiny2"]["precision"] = "bf16"
    before = summary(workdir, TINY, base)
    table = pending(summary(workdir, TINY, write_overlay(tmp_path / "c.yaml", overlay)))
    features = table[table["rule"] == "extract_features"]["output_file"]
    # a new directory of tiny2 (the precision is part of its hash), one store per category anomalous_memory reads
    assert len(features) == len(before[(before["rule"] == "extract_features") & before["output_file"].str.contains("/tiny2-")])
    assert features.str.contains("/tiny2-").all() and not features.isin(set(before["output_file"])).any()
    scored = table[table["rule"] == "score"]["output_file"]
    assert len(scored) and scored.str.contains("/scores/anomalous_memory/").all()
    assert set(table["rule"]) <= {"extract_features", "score", "evaluate"} | AGGREGATES


def test_a_layer_one_backbone_caches_reruns_nothing_on_another_backbone(done, tmp_path):
    """Score and fit jobs receive the network only (no layers or window sizes): a layer cached for tiny2's stores
    reruns their features jobs and their readers, never winclip's jobs on vitb16plus."""
    workdir, base = done
    overlay = yaml.safe_load(base.read_text())
    overlay["backbones"]["tiny2"]["layers"] = [1]
    table = pending(summary(workdir, TINY, write_overlay(tmp_path / "c.yaml", overlay)))
    features = table[table["rule"] == "extract_features"]["output_file"]
    assert len(features) and features.str.contains("/tiny2-").all()
    assert not table["output_file"].str.contains("/scores/winclip/").any()
    assert set(table["rule"]) <= {"extract_features", "score", "evaluate"} | AGGREGATES
