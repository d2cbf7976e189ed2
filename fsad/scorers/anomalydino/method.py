"""The ``anomalydino`` method declaration (parameters in ``schema.yaml``)."""

from pathlib import Path

from fsad.scorers.method import Method, Needs, generator_pool
from fsad.scorers.per_category_report import report

METHOD = Method(
    name="anomalydino",
    score="fsad.scorers.anomalydino.scorer:score",
    schema=Path(__file__).with_name("schema.yaml"),
    needs=Needs(min_normal_shots=1),
    generated=generator_pool,
    report=report(Path(__file__).with_name("report.rst")),
)
