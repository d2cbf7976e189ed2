# Scores stage: one job per (scorer, dataset, category, setting, run). Only the scorer's own
# parameters reach it as params, so changing one scorer reruns that scorer alone.


rule score:
    input:
        split=rules.draw_split.output.split,
        manifest=rules.prepare_dataset.output.manifest,
        features=features_index,
    output:
        scores=score_path("{scorer}", "{dataset}", "{category}", "{setting}", "{run}"),
        maps=score_path("{scorer}", "{dataset}", "{category}", "{setting}", "{run}", ".maps.h5"),
        details=score_path("{scorer}", "{dataset}", "{category}", "{setting}", "{run}", ".json"),
    params:
        scorer_params=scorer_params,
        backbone=scorer_backbone_spec,
        features_store=scorer_features_store,
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
    script:
        "../workflow_scripts/score.py"
