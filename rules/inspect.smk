# Inspect stage: new images scored with one saved setup (config `inspect:`; `snakemake inspect` runs every entry).
# The images go into a feature store of their own on the setup's backbone (an `update` output, so a rerun encodes only
# new files); the inspect job runs the setup's score step on them and decides with a threshold the setup has seen.


localrules:
    inspect,
    inspect_demo_images,


rule inspect:
    input:
        inspect_outputs(),


# A demonstration folder ({demo: N}): N test images of the setup's own run and one file that is not an image.
rule inspect_demo_images:
    input:
        unpack(inspect_demo_inputs),
    output:
        images=directory(f"{R}/inspect/{{name}}/images"),
    params:
        demo_count=lambda wildcards: INSPECTIONS[wildcards.name]["images"]["demo"],
    wildcard_constraints:
        name=_alternation(INSPECTIONS),
    log:
        f"{R}/logs/inspect/{{name}}/demo_images.log",
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/inspect_demo_images.py"


rule inspect_features:
    input:
        images=inspect_images,
    output:
        store=update(f"{R}/cache/features/{{backbone}}/inspect/{{name}}.h5"),
        index=f"{R}/cache/features/{{backbone}}/inspect/{{name}}.json",
    params:
        backbone=backbone_spec,
        window_sizes=inspect_feature_param("window_sizes"),
        layers=inspect_feature_param("layers"),
        vv_layers=inspect_feature_param("vv_layers"),
        mid_layers=inspect_feature_param("mid_layers"),
        weights_fallback=config["weights_fallback"],
        seed=config["seed"],
    wildcard_constraints:
        name=_alternation(INSPECTIONS),
    log:
        f"{R}/logs/inspect/{{name}}/features_{{backbone}}.log",
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/inspect_features.py"


rule inspect_score:
    input:
        unpack(inspect_inputs),
    output:
        scores=f"{R}/inspect/{{name}}/scores.csv",
        thresholds=f"{R}/inspect/{{name}}/thresholds.csv",
        unreadable=f"{R}/inspect/{{name}}/unreadable.csv",
        summary=f"{R}/inspect/{{name}}/summary.json",
        overlays=directory(f"{R}/inspect/{{name}}/overlays"),
        gallery=report(
            f"{R}/inspect/{{name}}/gallery.html",
            caption="../report/inspect.rst",
            category="Inspect",
            labels={"inspection": "{name}"},
        ),
    params:
        scorer=lambda wildcards: INSPECTIONS[wildcards.name]["scorer"],
        method_module=inspect_setup_param(scorer_method_module),
        scorer_params=inspect_setup_param(scorer_params),
        backbone=inspect_setup_param(scorer_backbone_spec),
        text_cache=inspect_setup_param(scorer_text_cache),
        map_size=config["evaluation"]["map_size"],
        weights_fallback=config["weights_fallback"],
        seed=config["seed"],
        decision=lambda wildcards: INSPECTIONS[wildcards.name]["decision"],
        fpr=lambda wildcards: INSPECTIONS[wildcards.name]["fpr"],
        check_images=lambda wildcards: INSPECTIONS[wildcards.name]["check_images"],
    wildcard_constraints:
        name=_alternation(INSPECTIONS),
    log:
        f"{R}/logs/inspect/{{name}}/inspect.log",
    benchmark:
        f"{R}/benchmarks/inspect/{{name}}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/inspect.py"
