"""The ``faprompt`` method declaration (parameters in ``schema.yaml``): FAPrompt, and AnomalyCLIP with ``cap`` and ``dap`` off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsad.scorers.method import FeatureNeeds, Fit, Method, Params, Report

SCHEMA = Path(__file__).with_name("schema.yaml")
TABLES = ("table1_image", "table2_pixel", "table3_ablation")


def _check(params: Params, config: dict[str, Any]) -> str | None:
    from fsad.data.registry import get_adapter

    kinds = {d["name"]: d["kind"] for d in config["datasets"]}
    choice = params["train_dataset"]
    for name in [choice] if isinstance(choice, str) else choice.values():
        if name in kinds and not get_adapter(kinds[name]).has_masks:
            return f"train_dataset names {name!r} ({kinds[name]}), which has no anomaly masks; faprompt trains on masks: name a dataset with masks"
    named = [*params["compare_scorers"], *(row["scorer"] for row in params["ablation"])]
    missing = sorted(set(named) - set(config["scorers"]))
    if missing:
        return f"compare_scorers / ablation name {missing}, which are not scorer instances of this config; add them or drop them from the list"
    return None


METHOD = Method(
    name="faprompt",
    score="fsad.scorers.faprompt.scorer:score",
    schema=SCHEMA,
    features=lambda params: FeatureNeeds(vv_layers=tuple(params["vv_layers"])),
    fit=Fit(run="fsad.scorers.faprompt.fit:fit", scope="dataset"),
    report=Report(
        write="fsad.scorers.faprompt.report:write_report",
        caption=Path(__file__).with_name("report.rst"),
        tables=TABLES,
    ),
    check=_check,
)
