# Fit stage: everything learned. A learned artifact lives at `models/{owner}/{scope}`: the owner is a scorer instance
# whose method has a fit (prompts, a linear map) or a generator (its DreamBooth model); the scope is a run
# (`{dataset}/{category}/{setting}/run{run}`, from that run's few shots) or a training dataset (`{dataset}`), each
# with its own wildcards. Only the parameters a method declares as fit parameters reach its fit jobs, and only its
# DreamBooth section a DreamBooth job, so a score-only change never reruns a fit.


rule fit_run:
    input:
        unpack(fit_inputs),
    output:
        model=f"{model_dir('{scorer}', '{dataset}', '{category}', '{setting}', '{run}')}/model.safetensors",
        info=f"{model_dir('{scorer}', '{dataset}', '{category}', '{setting}', '{run}')}/fit.json",
    params:
        method_module=scorer_method_module,
        fit_params=fit_params,
        categories=fit_categories_param,
        backbone=scorer_backbone_spec,
        text_cache=scorer_text_cache,
        weights_fallback=config["weights_fallback"],
        seed=config["seed"],
    wildcard_constraints:
        scorer=_alternation(scorers_with_fit("run")),
    log:
        f"{R}/logs/fit/{{scorer}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.log",
    benchmark:
        f"{R}/benchmarks/fit/{{scorer}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/fit.py"


use rule fit_run as fit_dataset with:
    output:
        model=f"{model_dir('{scorer}', '{dataset}')}/model.safetensors",
        info=f"{model_dir('{scorer}', '{dataset}')}/fit.json",
    wildcard_constraints:
        scorer=_alternation(scorers_with_fit("dataset")),
    log:
        f"{R}/logs/fit/{{scorer}}/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/fit/{{scorer}}/{{dataset}}.tsv"


# One-to-Normal's DreamBooth model of a run, fine-tuned on the run's normal references (rules/diffusion.smk makes
# its class images and uses it).
rule dreambooth:
    input:
        unpack(dreambooth_inputs),
    output:
        model=directory(model_dir("{generator}", "{dataset}", "{category}", "{setting}", "{run}")),
    params:
        generator=generator_stage("dreambooth"),
        seed=config["seed"],
    log:
        f"{R}/logs/dreambooth/{{generator}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.log",
    benchmark:
        f"{R}/benchmarks/dreambooth/{{generator}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=120,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/dreambooth.py"
