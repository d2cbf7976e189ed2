# Scores stage: one job per (scorer instance, dataset, category, setting, run). Its inputs come from the
# instance's method declaration (a fitted model when the method has a fit); only the parameters its score
# step reads reach it as params, so changing one instance reruns that instance's jobs alone.


rule score:
    input:
        unpack(score_inputs),
    output:
        scores=score_path("{scorer}", "{dataset}", "{category}", "{setting}", "{run}"),
        maps=score_path("{scorer}", "{dataset}", "{category}", "{setting}", "{run}", ".maps.h5"),
        details=score_path("{scorer}", "{dataset}", "{category}", "{setting}", "{run}", ".json"),
    params:
        method_module=scorer_method_module,
        scorer_params=scorer_params,
        validation_set=scorer_validation_set,
        members=scorer_members,
        backbone=scorer_backbone_spec,
        text_cache=scorer_text_cache,
        map_size=config["evaluation"]["map_size"],
        weights_fallback=config["weights_fallback"],
        seed=config["seed"],
    log:
        f"{R}/logs/score/{{scorer}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.log",
    benchmark:
        f"{R}/benchmarks/score/{{scorer}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/score.py"
