"""Rule score: run one scorer instance on one (dataset, category, setting, run)."""

from fsad.devices import claim_device
from fsad.logs import job_logging
from fsad.scorers.run import ScoreJob, run_scorer

smk = snakemake  # noqa: F821
job = ScoreJob(
    smk.wildcards.scorer,
    method_module=smk.params.method_module,
    split_path=smk.input.split,
    manifest_path=smk.input.manifest,
    features_store=smk.input.features,
    text_cache_dir=smk.params.text_cache,
    backbone_spec=smk.params.backbone,
    scorer_params=smk.params.scorer_params,
    map_size=smk.params.map_size,
    weights_fallback=smk.params.weights_fallback,
    seed=smk.params.seed,
    out_scores=smk.output.scores,
    out_maps=smk.output.maps,
    out_details=smk.output.details,
    model_path=smk.input.get("model"),
    validation_set=smk.params.validation_set,
    members=[
        {"scorer": scorer, "scores": scores, "maps": maps, "details": details}
        for scorer, scores, maps, details in zip(
            smk.params.members, smk.input.get("member_scores", []), smk.input.get("member_maps", []), smk.input.get("member_details", [])
        )
    ],
    generated={key: smk.input[key] for key in ("generated_pool", "generated_pool_features", "personalized", "personalized_features") if key in smk.input.keys()},
)
with job_logging(smk.log[0]), claim_device() as device:
    run_scorer(job, device)
