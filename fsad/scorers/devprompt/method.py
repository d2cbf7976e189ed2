"""The ``devprompt`` method declaration (parameters in ``schema.yaml``): DevPrompt, or PromptAD with ``deviation_loss: false``
(its text branch; with ``memory_blocks`` and ``cls_prompts`` the full method)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsad.scorers.method import Fit, FeatureNeeds, Method, Needs, Params, Report, generator_pool
from fsad.text.class_names import configured_class_name

SCHEMA = Path(__file__).with_name("schema.yaml")
# Report tables: per-category AUROC beside other instances (the paper's Tables 1-2), then the sensitivity
# tables of lambda, K and a (Tables 3-5), built from the metrics of sweep instances.
TABLES = ("pixel_auroc", "image_auroc", "sensitivity_lambda", "sensitivity_topk", "sensitivity_margin")


def _check(params: Params, config: dict[str, Any]) -> str | None:
    """Something to train; and the report's references: ``compare_with`` names instances of the config, each sensitivity
    entry a devprompt instance whose value of the swept parameter is the one given."""
    from fsad.scorers.registry import method_params

    if not params["deviation_loss"] and params["promptad_weight"] == 0:
        return "deviation_loss is false and promptad_weight is 0, so nothing would be trained; set either"
    if params["deviation_loss"] and (params["memory_blocks"] or params["cls_prompts"] is not None):
        return ("memory_blocks and cls_prompts are PromptAD's visual memory and image-level model, which fuse with its softmax "
                "scores; they need deviation_loss: false (leave them out for DevPrompt)")
    if params["generator"] and not params["memory_blocks"]:
        return "generator adds the pool's images to PromptAD's visual memory, and memory_blocks is []; set memory_blocks or drop generator"
    if params["cls_prompts"] is not None and params["promptad_weight"] == 0:
        return "cls_prompts trains PromptAD's image-level prompts with its losses, and promptad_weight is 0; set promptad_weight"
    scorers = config["scorers"]
    for name in params["compare_with"]:
        if name not in scorers:
            return f"compare_with names {name!r}, which is not a scorer instance of this config; name instances of this config"
    for parameter, instances in params["sensitivity"].items():
        for name, value in instances.items():
            if name not in scorers or scorers[name].get("method") != METHOD.name:
                return f"sensitivity.{parameter} names {name!r}, which is not a {METHOD.name} instance of this config"
            actual = method_params(METHOD, scorers[name], f"scorers.{name}")[parameter]
            if actual != value:
                return f"sensitivity.{parameter} gives {name!r} the value {value}, but that instance has {parameter}: {actual}; make them agree"
    return None


METHOD = Method(
    name="devprompt",
    prompt_class_name=configured_class_name,
    score="fsad.scorers.devprompt.scorer:score",
    schema=SCHEMA,
    features=lambda params: FeatureNeeds(
        vv_layers=() if params.get("vv_block") is None else (params["vv_block"],), mid_layers=tuple(params.get("memory_blocks", ()))
    ),
    needs=Needs(min_normal_shots=1),
    fit=Fit(run="fsad.scorers.devprompt.fit:fit", scope="run"),
    report=Report(
        write="fsad.scorers.devprompt.report:write_report",
        caption=Path(__file__).with_name("report.rst"),
        tables=TABLES,
    ),
    check=_check,
    generated=generator_pool,
)
