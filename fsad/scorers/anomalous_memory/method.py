"""The ``anomalous_memory`` method declaration (parameters in ``schema.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsad.scorers.method import FeatureNeeds, Method, Needs, Params, Report, generator_pool
from fsad.text.class_names import configured_class_name


# The paper's four tables' base names, in table order (report.py writes them).
TABLES = ("table1_one_sample", "table2_sub_scores_test", "table3_sub_scores_validation", "table4_weight_validation")


def _check(params: Params, config: dict[str, Any]) -> str | None:
    if params["score_weights"] != "baseline" and params["score_weights"] not in params["distributions"]:
        return f"score_weights is {params['score_weights']!r} but distributions are {params['distributions']}; use baseline or one of them"
    baseline = config["scorers"].get(params["baseline_scorer"])
    if baseline is None:
        return (
            f"baseline_scorer names {params['baseline_scorer']!r}, which is not a scorer instance of this config; "
            f"name the WinCLIP+ instance table 1 compares with"
        )
    if params["baseline_setting"] not in (baseline.get("settings") or [s["name"] for s in config["settings"]]):
        return f"baseline_setting {params['baseline_setting']!r} is not a setting scorer {params['baseline_scorer']!r} runs"
    return None


METHOD = Method(
    name="anomalous_memory",
    prompt_class_name=configured_class_name,
    score="fsad.scorers.anomalous_memory.scorer:score",
    schema=Path(__file__).with_name("schema.yaml"),
    features=lambda params: FeatureNeeds(window_sizes=tuple(params["window_sizes"])),
    needs=Needs(masks=True, anomalous_shots=1, min_validation_normals=lambda params: 1 if params["distributions"] else 0),
    report=Report(
        write="fsad.scorers.anomalous_memory.report:write_report",
        caption=Path(__file__).with_name("report.rst"),
        tables=TABLES,
        figures=("defect_size",),
    ),
    check=_check,
    generated=generator_pool,
)
