"""Rule prepare_dataset: build data/{dataset}/manifest.csv."""

from fsad.data.manifest import write_manifest
from fsad.data.registry import prepare_dataset
from fsad.logs import job_logging

with job_logging(snakemake.log[0]) as log:  # noqa: F821
    manifest = prepare_dataset(snakemake.params.spec, snakemake.params.data_dir)  # noqa: F821
    log.info("%d images, %d anomalous, categories %s", len(manifest), manifest["label"].sum(), sorted(manifest["category"].unique()))
    write_manifest(manifest, snakemake.output.manifest)  # noqa: F821
