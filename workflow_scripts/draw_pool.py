"""Rule draw_pool: fix a category's test subset and reference pools."""

from fsad.data.manifest import read_manifest
from fsad.data.splits import draw_pool
from fsad.io import write_json
from fsad.logs import job_logging

smk = snakemake  # noqa: F821
with job_logging(smk.log[0]) as log:
    pool = draw_pool(
        read_manifest(smk.input.manifest),
        dataset=smk.wildcards.dataset,
        category=smk.wildcards.category,
        seed=smk.params.seed,
        max_test=smk.params.max_test,
        normal_pool=smk.params.normal_pool,
        anomalous_pool=smk.params.anomalous_pool,
    )
    log.info("test %d, normal pool %d, anomalous pool %d", len(pool["test"]), len(pool["normal_pool"]), len(pool["anomalous_pool"]))
    write_json(smk.output.pool, pool)
