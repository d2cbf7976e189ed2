"""Rule score: run one scorer instance on one (dataset, category, setting, run)."""

from fsad.devices import claim_device
from fsad.logs import job_logging
from fsad.scorers.run import rule_score_job, run_scorer

smk = snakemake  # noqa: F821
job = rule_score_job(
    smk,
    smk.wildcards.scorer,
    out_scores=smk.output.scores,
    out_maps=smk.output.maps,
    out_details=smk.output.details,
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
