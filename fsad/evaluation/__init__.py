"""Evaluation and reporting: metrics per score file (:mod:`~fsad.evaluation.metrics`, :mod:`~fsad.evaluation.collect`),
the one aggregation and table layer every table goes through (:mod:`~fsad.evaluation.tables`), the summary, plots and
galleries."""
