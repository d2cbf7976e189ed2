"""The ``one_to_normal`` method declaration (parameters in ``schema.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsad.scorers.method import FeatureNeeds, Fit, Generated, Method, Needs, Params, Report
from fsad.text.class_names import configured_class_name

TABLES = ("kshot", "branch_ablation", "prompt_ablation", "prompt_study", "transfer")
# What the instances of a prompt study may differ in: their generator, and the generators in the personalization
# prompt set (the keys the appendix's study varies); the report-only keys of the instances themselves.
STUDY_INSTANCE_KEYS = ("generator", "transfer", "prompt_study", "gallery_categories")
STUDY_PROMPT_KEYS = ("prompts", "prompt_count")
# What the two instances of a transfer pair may differ in: the pool they read.
POOL_KEYS = ("generator", "generated_references")


def _without(spec: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in keys}


def _check_transfer(params: Params, instances: dict[str, Any], plugins: list[str]) -> str | None:
    """Each pair: two instances of one memory method on one backbone whose parameters (defaults filled in) are alike but
    for the pool, the ``with`` one reading this generator's; their settings and datasets may differ (a pool needs
    normal shots)."""
    from fsad.scorers.registry import get_method, method_params

    for pair in params["transfer"]:
        for role in ("without", "with"):
            if pair[role] not in instances:
                return f"transfer names {pair[role]!r} ({role}), which is not a scorer instance of this config"
        without, with_ = instances[pair["without"]], instances[pair["with"]]
        if with_.get("generator") != params["generator"]:
            return f"transfer: scorer {pair['with']!r} does not read generator {params['generator']!r}; set its generator"
        if (without["method"], without.get("backbone")) != (with_["method"], with_.get("backbone")):
            return f"transfer: scorers {pair['without']!r} and {pair['with']!r} must share their method and backbone"
        method = get_method(with_["method"], plugins)
        filled = {role: method_params(method, instances[pair[role]], f"scorers.{pair[role]}") for role in ("without", "with")}
        if not method.generated(filled["with"]).pool:
            return f"transfer: method {with_['method']!r} of scorer {pair['with']!r} declares no reference memory that reads a pool"
        if filled["without"]["generator"] or _without(filled["without"], POOL_KEYS) != _without(filled["with"], POOL_KEYS):
            return (f"transfer: scorers {pair['without']!r} and {pair['with']!r} must be alike but for {list(POOL_KEYS)}, "
                    f"{pair['without']!r} without a generator; make their other keys equal")
    return None


def _check_study(params: Params, config: dict[str, Any]) -> str | None:
    """The prompt study's instances: one_to_normal instances alike but for their generator, whose generators are alike
    but for the personalization prompt set."""
    instances, generators = config["scorers"], config.get("generators", {})
    study = params["prompt_study"]
    for entry in study:
        spec = instances.get(entry["scorer"])
        if spec is None or spec.get("method") != METHOD.name:
            return f"prompt_study names {entry['scorer']!r}, which is not a {METHOD.name} instance of this config"
    if not study:
        return None
    first = instances[study[0]["scorer"]]
    for entry in study[1:]:
        spec = instances[entry["scorer"]]
        if _without(spec, STUDY_INSTANCE_KEYS) != _without(first, STUDY_INSTANCE_KEYS):
            return f"prompt_study: {entry['scorer']!r} and {study[0]['scorer']!r} differ in more than {list(STUDY_INSTANCE_KEYS)}; make them alike"
        a, b = generators.get(spec.get("generator"), {}), generators.get(first.get("generator"), {})
        strip = lambda g: {**_without(g, ("models_from",)), "personalization": _without(g.get("personalization", {}), STUDY_PROMPT_KEYS)}  # noqa: E731
        if strip(a) != strip(b):
            return (f"prompt_study: the generators of {entry['scorer']!r} and {study[0]['scorer']!r} differ in more than "
                    f"personalization.{'/'.join(STUDY_PROMPT_KEYS)}; make them alike")
    return None



def _check(params: Params, config: dict[str, Any]) -> str | None:
    return _check_transfer(params, config["scorers"], config.get("plugins", [])) or _check_study(params, config)


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
