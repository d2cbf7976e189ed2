"""The ``patchcore`` method declaration (parameters in ``schema.yaml``)."""

from pathlib import Path

from fsad.scorers.method import FeatureNeeds, Method, Needs, generator_pool
from fsad.scorers.per_category_report import report

METHOD = Method(
    name="patchcore",
    score="fsad.scorers.patchcore.scorer:score",
    schema=Path(__file__).with_name("schema.yaml"),
    features=lambda params: FeatureNeeds(layers=tuple(params["layers"])),
    needs=Needs(min_normal_shots=1),
    generated=generator_pool,
    report=report(Path(__file__).with_name("report.rst")),
)
