"""Rule inspect_score: score an inspection's images with its saved setup; write scores, thresholds, overlays, gallery."""

from fsad.devices import claim_device
from fsad.inspect.run import InspectJob, run_inspect
from fsad.logs import job_logging
from fsad.scorers.run import rule_score_job

smk = snakemake  # noqa: F821
setup = rule_score_job(
    smk,
    smk.params.scorer,
    out_scores=smk.input.saved_scores,
    out_maps=smk.input.saved_maps,
    out_details="",
    generated={key: smk.input[key] for key in ("generated_pool", "generated_pool_features") if key in smk.input.keys()},
)
job = InspectJob(
    smk.wildcards.name,
    setup=setup,
    images_index=smk.input.images_index,
    images_store=smk.input.images_store,
    decision=smk.params.decision,
    fpr=smk.params.fpr,
    check_images=smk.params.check_images,
    out_scores=smk.output.scores,
    out_thresholds=smk.output.thresholds,
    out_unreadable=smk.output.unreadable,
    out_summary=smk.output.summary,
    out_overlays=smk.output.overlays,
    out_gallery=smk.output.gallery,
)
with job_logging(smk.log[0]), claim_device() as device:
    run_inspect(job, device)
