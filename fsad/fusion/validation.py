"""Monte-Carlo validation of sub-score weights (the anomalous-samples paper's Table 4), pure numpy.

For each distribution: draw ``n_draws`` weight vectors, keep the one with the best AUROC on the
validation set (augmentations of the training images) and apply it to the test set. Test labels never
reach that choice. The same draws scored on the test set give the oracle (an upper bound, never used
for the ``score`` column), and the test AUROCs of the uniform draws give the "one random uniform draw"
row (mean ± std over draws).

Ties: with ten augmented images many draws reach validation AUROC 1.0. Both the choice and the oracle
break ties by :data:`fsad.fusion.score_weights.TIE_BREAK` (largest validation margin, then lowest index), and
the report records how many draws tied (``n_tied``) and which (``tied_draws``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fsad.fusion.score_weights import TIE_BREAK, Selection, draw_weights, monte_carlo_select, sub_score_aurocs
from fsad.seeding import derive_seed


@dataclass
class WeightValidation:
    """Chosen weights per distribution and the report saved with the scores.

    Attributes:
        chosen: distribution -> ``(S,)`` weights selected on the validation set.
        report: JSON-serialisable details (see :func:`validate_weights`).
    """

    chosen: dict[str, np.ndarray]
    report: dict[str, object] = field(default_factory=dict)


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 6) for v in np.asarray(values, dtype=np.float64)]


def _margin(value: float) -> float | str:
    """JSON-safe margin: infinite margins (classes constant within themselves) as ``"inf"`` / ``"-inf"``."""
    return round(float(value), 6) if np.isfinite(value) else str(float(value))


def _oracle(test_scores: np.ndarray, test_labels: np.ndarray, draws: np.ndarray) -> Selection | None:
    """The draws' best on the test set (same tie rule), or None when the test set holds a single class."""
    if len(np.unique(test_labels)) < 2:
        return None
    return monte_carlo_select(test_scores, test_labels, draws)


def validate_weights(
    validation_scores: np.ndarray,
    validation_labels: np.ndarray,
    test_scores: np.ndarray,
    test_labels: np.ndarray,
    names: list[str],
    distributions: list[str],
    n_draws: int,
    seed: int,
) -> WeightValidation:
    """Select weights per distribution on the validation set; report oracle and random-draw AUROCs on the test set.

    Args:
        validation_scores: ``(V, S)`` sub-scores of the augmented training images.
        validation_labels: ``(V,)`` 0 normal / 1 anomalous.
        test_scores: ``(N, S)`` sub-scores of the test images.
        test_labels: ``(N,)``; only used for the oracle and random-draw rows.
        names: the ``S`` sub-score names.
        distributions: names from :data:`fsad.fusion.score_weights.DISTRIBUTIONS`.
        n_draws: weight vectors drawn per distribution.
        seed: draws of distribution ``d`` use ``derive_seed(seed, "weights", d)``.

    Returns:
        the chosen weights and a report with ``validation_sub_score_auroc`` (name -> AUROC on the
        validation set), ``tie_break`` (the rule) and, per distribution, ``weights``, ``draw_index``,
        ``validation_auroc``, ``validation_margin``, ``n_tied`` and ``tied_draws`` (draws at the best
        validation AUROC), ``oracle_weights``, ``oracle_draw_index``, ``oracle_test_auroc`` and
        ``test_auroc_per_draw``.
    """
    chosen: dict[str, np.ndarray] = {}
    per_distribution: dict[str, dict[str, object]] = {}
    for distribution in distributions:
        rng = np.random.default_rng(derive_seed(seed, "weights", distribution))
        draws = draw_weights(distribution, n_draws, len(names), rng)
        selected = monte_carlo_select(validation_scores, validation_labels, draws)
        oracle = _oracle(test_scores, test_labels, draws)
        chosen[distribution] = selected.weights
        per_distribution[distribution] = {
            "weights": _floats(selected.weights),
            "draw_index": selected.index,
            "validation_auroc": round(selected.auroc, 6),
            "validation_margin": _margin(selected.margins[selected.index]),
            "n_tied": len(selected.tied),
            "tied_draws": selected.tied,
            "oracle_weights": None if oracle is None else _floats(oracle.weights),
            "oracle_draw_index": None if oracle is None else oracle.index,
            "oracle_test_auroc": None if oracle is None else round(oracle.auroc, 6),
            "test_auroc_per_draw": _floats(np.full(n_draws, np.nan) if oracle is None else oracle.aurocs),
        }
    report = {
        "sub_scores": list(names),
        "n_validation": int(len(validation_labels)),
        "n_validation_anomalous": int(np.sum(validation_labels)),
        "validation_sub_score_auroc": {k: None if np.isnan(v) else round(v, 6) for k, v in sub_score_aurocs(validation_scores, validation_labels, names).items()},
        "n_draws": n_draws,
        "tie_break": TIE_BREAK,
        "distributions": per_distribution,
    }
    return WeightValidation(chosen, report)
