# Diffusion stages (One-to-Normal): per generator of the config's `generators:` (fsad/diffusion/schema.yaml), its
# base model saved once as a diffusers pipeline directory, class images once per category, a DreamBooth model per (dataset, category, setting, run) fine-tuned on that run's normal
# references, and from it the run's anomaly-free pool and its personalized test images; then the features of those
# images on the backbone of each scorer instance that reads them. Jobs run only when a score job's method declares it
# reads a generator's images (Method.generated). Each stage receives the generator's shared keys and its own section
# only: a changed pool parameter reruns the pool and what reads it, never DreamBooth. Input functions: rules/common.smk.


# The generation rules take one thread: on a GPU the work is on the GPU, and on the CPU the tiny preset's small
# operations run several times faster on one thread than on two threads of a shared 2-core machine.
# The base model as a pipeline directory (fsad/diffusion/models.py): the tiny preset drawn from the config seed, or the
# named model as diffusers loads it, in fp32. Written on the CPU; its one parameter is the base model's name.
rule base_model:
    output:
        base=directory(base_model_dir("{generator}")),
    params:
        base_model=generator_base_model,
        seed=config["seed"],
    log:
        f"{R}/logs/base_model/{{generator}}.log",
    threads: 1
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/base_model.py"


rule class_images:
    input:
        base=base_model_dir("{generator}"),
    output:
        images=directory(class_images_dir("{generator}", "{dataset}", "{category}")),
    params:
        generator=generator_stage("class_images"),
        seed=config["seed"],
    log:
        f"{R}/logs/class_images/{{generator}}/{{dataset}}/{{category}}.log",
    benchmark:
        f"{R}/benchmarks/class_images/{{generator}}/{{dataset}}/{{category}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/class_images.py"


rule generate_pool:
    input:
        unpack(generation_inputs),
    output:
        pool=directory(generated_dir("pools", "{generator}", "{dataset}", "{category}", "{setting}", "{run}")),
    params:
        generator=generator_stage("pool"),
        seed=config["seed"],
    log:
        f"{R}/logs/generate_pool/{{generator}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.log",
    benchmark:
        f"{R}/benchmarks/generate_pool/{{generator}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/generate_pool.py"


rule personalize:
    input:
        unpack(generation_inputs),
    output:
        personalized=directory(generated_dir("personalized", "{generator}", "{dataset}", "{category}", "{setting}", "{run}")),
    params:
        generator=generator_stage("personalization"),
        seed=config["seed"],
    log:
        f"{R}/logs/personalize/{{generator}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.log",
    benchmark:
        f"{R}/benchmarks/personalize/{{generator}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/personalize.py"


# Features of a run's generated images on one backbone: what that backbone and the instances reading them declare.
# A plain output (not an update): a rerun of the pool or personalization replaces every image, so the store is rebuilt.
rule extract_generated_features:
    input:
        images=generated_dir("{kind}", "{generator}", "{dataset}", "{category}", "{setting}", "{run}"),
    output:
        store=generated_store("{backbone}", "{kind}", "{generator}", "{dataset}", "{category}", "{setting}", "{run}"),
    params:
        backbone=backbone_spec,
        window_sizes=generated_feature_param("window_sizes"),
        layers=generated_feature_param("layers"),
        vv_layers=generated_feature_param("vv_layers"),
        mid_layers=generated_feature_param("mid_layers"),
        weights_fallback=config["weights_fallback"],
        seed=config["seed"],
    log:
        f"{R}/logs/extract_generated_features/{{backbone}}/{{kind}}/{{generator}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.log",
    benchmark:
        f"{R}/benchmarks/extract_generated_features/{{backbone}}/{{kind}}/{{generator}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.tsv"
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/extract_features.py"
