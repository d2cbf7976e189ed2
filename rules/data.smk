# Data stage: download/prepare each dataset into a manifest, fix each category's test subset and
# reference pools, then draw each (setting, run)'s references.


# Bookkeeping rules run on the submitting host: a cluster job would cost more in queue time than it computes.
localrules:
    draw_pool,
    draw_split,


rule prepare_dataset:
    output:
        manifest=f"{R}/data/{{dataset}}/manifest.csv",
    params:
        spec=dataset_spec,
        data_dir=dataset_dir,
    log:
        f"{R}/logs/prepare_dataset/{{dataset}}.log",
    resources:
        runtime=240,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/prepare_dataset.py"


rule draw_pool:
    input:
        unpack(shots_input),
        manifest=rules.prepare_dataset.output.manifest,
    output:
        pool=f"{R}/splits/{{dataset}}/{{category}}/pool.json",
    params:
        seed=config["seed"],
        max_test=config["max_test_per_category"],
        normal_pool=config["reference_pool"]["normal"],
        anomalous_pool=config["reference_pool"]["anomalous"],
    log:
        f"{R}/logs/draw_pool/{{dataset}}/{{category}}.log",
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/draw_pool.py"


rule draw_split:
    input:
        unpack(shots_input),
        pool=rules.draw_pool.output.pool,
    output:
        split=f"{R}/splits/{{dataset}}/{{category}}/{{setting}}/run{{run}}.json",
    params:
        setting=setting_spec,
    log:
        f"{R}/logs/draw_split/{{dataset}}/{{category}}/{{setting}}/run{{run}}.log",
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/draw_split.py"
