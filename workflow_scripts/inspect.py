"""Rule inspect_score: score an inspection's images with its saved setup; write scores, thresholds, overlays, gallery."""

from fsad.devices import claim_device
from fsad.inspect.run import InspectJob, run_inspect
from fsad.logs import job_logging
from fsad.scorers.run import ScoreJob

smk = snakemake  # noqa: F821
setup = ScoreJob(
    smk.params.scorer,
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
    out_scores=smk.input.saved_scores,
    out_maps=smk.input.saved_maps,
    out_details="",
    model_path=smk.input.get("model"),
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
