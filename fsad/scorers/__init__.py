"""Scorers: one package per method (its declaration, schema, tensors, score step, fit and report), the declaration
types (:mod:`~fsad.scorers.method`), the registry that finds methods and validates their parameters, and the score
and fit jobs (:mod:`~fsad.scorers.run`, :mod:`~fsad.scorers.fit`) that build a method's context from files."""
