"""Rules fit_run and fit_dataset: fit one scorer instance on one scope and write models/{scorer}/{scope}/."""

from fsad.devices import claim_device
from fsad.logs import job_logging
from fsad.scorers.fit import CategoryFiles, FitJob, FitScope, run_fit

smk = snakemake  # noqa: F821
wildcards = smk.wildcards
run_scope = "run" in wildcards.keys()
job = FitJob(
    smk.wildcards.scorer,
    method_module=smk.params.method_module,
    scope=FitScope(wildcards.dataset, wildcards.category, wildcards.setting, int(wildcards.run)) if run_scope else FitScope(wildcards.dataset),
    categories=[
        CategoryFiles(c["dataset"], c["category"], manifest, reference_pool, store)
        for c, manifest, reference_pool, store in zip(smk.params.categories, smk.input.manifests, smk.input.reference_pools, smk.input.features, strict=True)
    ],
    split_path=smk.input.split if run_scope else None,
    text_cache_dir=smk.params.text_cache,
    backbone_spec=smk.params.backbone,
    fit_params=smk.params.fit_params,
    weights_fallback=smk.params.weights_fallback,
    seed=smk.params.seed,
    out_model=smk.output.model,
    out_info=smk.output.info,
)
with job_logging(smk.log[0]), claim_device() as device:
    run_fit(job, device)
