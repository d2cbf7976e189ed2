"""Rule fit: fit one scorer instance on one scope and write models/{scorer}/{fit_key}/."""

from fsad.devices import claim_device
from fsad.logs import job_logging
from fsad.scorers.fit import CategoryFiles, run_fit

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]), claim_device() as device:
    categories = [
        CategoryFiles(c["dataset"], c["category"], manifest, pool, store)
        for c, manifest, pool, store in zip(smk.params.categories, smk.input.manifests, smk.input.pools, smk.input.features, strict=True)
    ]
    run_fit(
        smk.wildcards.scorer,
        method_module=smk.params.method_module,
        fit_key=smk.wildcards.fit_key,
        categories=categories,
        split_path=smk.input.get("split"),
        text_cache_dir=smk.params.text_cache,
        backbone_spec=smk.params.backbone,
        fit_params=smk.params.fit_params,
        weights_fallback=smk.params.weights_fallback,
        seed=smk.params.seed,
        device=device,
        out_model=smk.output.model,
        out_info=smk.output.info,
    )
