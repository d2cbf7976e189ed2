# Fit stage: methods that learn something (prompts, a linear map, DreamBooth) fit it here, one job per scope
# their declaration names: a run (`{dataset}/{category}/{setting}/run{run}`) or a training dataset. Only the
# parameters the method declares as fit parameters reach a fit job, so a score-only change never reruns it.


rule fit:
    input:
        unpack(fit_inputs),
    output:
        model=model_path("{scorer}", "{fit_key}", "model.safetensors"),
        info=model_path("{scorer}", "{fit_key}", "fit.json"),
    params:
        method_module=scorer_method_module,
        fit_params=fit_params,
        categories=fit_categories_param,
        backbone=scorer_backbone_spec,
        text_cache=scorer_text_cache,
        weights_fallback=config["weights_fallback"],
        seed=config["seed"],
    wildcard_constraints:
        fit_key=r"[^/]+(/[^/]+/[^/]+/run\d+)?",
    log:
        f"{R}/logs/fit/{{scorer}}/{{fit_key}}.log",
    benchmark:
        f"{R}/benchmarks/fit/{{scorer}}/{{fit_key}}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/fit.py"
