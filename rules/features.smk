# Features stage: WinCLIP features of every image a category's jobs may need (test subset and
# reference pools) in one append-only HDF5 store per (backbone, dataset, category). The store sits
# beside the declared output (an index JSON), so a rerun appends to it instead of starting over.


rule extract_features:
    input:
        manifest=rules.prepare_dataset.output.manifest,
        pool=rules.draw_pool.output.pool,
    output:
        index=feature_file("{backbone}", "{dataset}", "{category}", ".json"),
    params:
        store=features_store,
        backbone=backbone_spec,
        window_sizes=window_sizes,
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
    script:
        "../workflow_scripts/extract_features.py"
