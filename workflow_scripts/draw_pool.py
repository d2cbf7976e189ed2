"""Rule draw_pool: fix a category's test subset and reference pools (with the shots file's images, when there is one)."""

from fsad.data.fixed_shots import read_shots
from fsad.data.manifest import read_manifest
from fsad.data.splits import draw_pool
from fsad.io import write_json
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]) as log:
    manifest = read_manifest(smk.input.manifest)
    category = smk.wildcards.category
    fixed = []
    if "shots" in smk.input.keys():  # noqa: SIM118 (`in` on a Namedlist tests its paths, not its names)
        shots = read_shots(smk.input.shots)
        shots.check_images(manifest, category)
        fixed = shots.images(category)
        log.info("fixed shots from %s: %d images of %s", smk.input.shots, len(fixed), category)
    pool = draw_pool(
        manifest,
        dataset=smk.wildcards.dataset,
        category=category,
        seed=smk.params.seed,
        max_test=smk.params.max_test,
        normal_pool=smk.params.normal_pool,
        anomalous_pool=smk.params.anomalous_pool,
        fixed_normals=fixed,
    )
    log.info("test %d, normal pool %d, anomalous pool %d", len(pool["test"]), len(pool["normal_pool"]), len(pool["anomalous_pool"]))
    write_json(smk.output.pool, pool)
