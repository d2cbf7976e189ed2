# Features stage: CLIP features of every image a category's jobs may need (test subset and reference pools)
# in one append-only HDF5 store per (backbone, dataset, category): the window sizes, block outputs and V-V
# tokens that the backbone and every scorer instance using it declare. The declared `.h5` is the store's small
# index (its features live in append-only shards under `<category>.shards/`, see fsad/features/store.py). It is an
# `update` output: Snakemake keeps it when the job reruns (so only what is missing is encoded, into a new shard)
# and rebuilds it when a job that reads it runs and it is gone. The JSON beside it records what the last update did.


rule extract_features:
    input:
        manifest=rules.prepare_dataset.output.manifest,
        pool=rules.draw_pool.output.pool,
    output:
        store=update(feature_file("{backbone}", "{dataset}", "{category}", ".h5")),
        index=feature_file("{backbone}", "{dataset}", "{category}", ".json"),
    params:
        backbone=backbone_spec,
        window_sizes=feature_param("window_sizes"),
        layers=feature_param("layers"),
        vv_layers=feature_param("vv_layers"),
        mid_layers=feature_param("mid_layers"),
        weights_fallback=config["weights_fallback"],
        seed=config["seed"],
    log:
        f"{R}/logs/extract_features/{{backbone}}/{{dataset}}/{{category}}.log",
    benchmark:
        f"{R}/benchmarks/extract_features/{{backbone}}/{{dataset}}/{{category}}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/extract_features.py"
