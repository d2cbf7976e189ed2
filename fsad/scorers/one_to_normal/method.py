"""The ``one_to_normal`` method declaration (parameters in ``schema.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsad.scorers.method import FeatureNeeds, Fit, Generated, Method, Needs, Params, Report
from fsad.text.class_names import configured_class_name

TABLES = ("kshot", "branch_ablation", "prompt_ablation", "transfer")


def _check(params: Params, config: dict[str, Any]) -> str | None:
    instances = config["scorers"]
    for pair in params["transfer"]:
        for role in ("without", "with"):
            if pair[role] not in instances:
                return f"transfer names {pair[role]!r} ({role}), which is not a scorer instance of this config"
        if instances[pair["with"]].get("generator") != params["generator"]:
            return f"transfer: scorer {pair['with']!r} does not read generator {params['generator']!r}; set its generator"
    return None


METHOD = Method(
    name="one_to_normal",
    prompt_class_name=configured_class_name,
    score="fsad.scorers.one_to_normal.scorer:score",
    schema=Path(__file__).with_name("schema.yaml"),
    features=lambda params: FeatureNeeds(layers=tuple(params["layers"])),
    needs=Needs(min_normal_shots=1),
    fit=Fit(run="fsad.scorers.one_to_normal.fit:fit", scope="dataset"),
    report=Report(
        write="fsad.scorers.one_to_normal.report:write_report",
        caption=Path(__file__).with_name("report.rst"),
        tables=TABLES,
        figures=("gallery",),
    ),
    check=_check,
    generated=lambda params: Generated(params["generator"], pool=True, personalized=True),
)
