"""Monte-Carlo validation of sub-score weights (the anomalous-samples paper's Table 4), pure numpy.

For each distribution: draw ``n_draws`` weight vectors, keep the one with the best AUROC on the
validation set (augmentations of the training images) and apply it to the test set. The same draws
scored on the test set give the oracle (an upper bound, never used for the ``score`` column), and the
test AUROCs of the uniform draws give the "one random uniform draw" row (mean ± std over draws).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fsad.fusion.weights import draw_aurocs, draw_weights, monte_carlo_select, sub_score_aurocs
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
        distributions: names from :data:`fsad.fusion.weights.DISTRIBUTIONS`.
        n_draws: weight vectors drawn per distribution.
        seed: draws of distribution ``d`` use ``derive_seed(seed, "weights", d)``.

    Returns:
        the chosen weights and a report with ``validation_sub_score_auroc`` (name -> AUROC on the
        validation set) and, per distribution, ``weights``, ``draw_index``, ``validation_auroc``,
        ``oracle_weights``, ``oracle_test_auroc`` and ``test_auroc_per_draw``.
    """
    chosen: dict[str, np.ndarray] = {}
    per_distribution: dict[str, dict[str, object]] = {}
    for distribution in distributions:
        rng = np.random.default_rng(derive_seed(seed, "weights", distribution))
        draws = draw_weights(distribution, n_draws, len(names), rng)
        selected = monte_carlo_select(validation_scores, validation_labels, draws)
        test_aurocs = draw_aurocs(test_scores, test_labels, draws)
        oracle = int(np.nanargmax(test_aurocs)) if not np.isnan(test_aurocs).all() else None
        chosen[distribution] = selected.weights
        per_distribution[distribution] = {
            "weights": _floats(selected.weights),
            "draw_index": selected.index,
            "validation_auroc": round(selected.auroc, 6),
            "oracle_weights": None if oracle is None else _floats(draws[oracle]),
            "oracle_test_auroc": None if oracle is None else round(float(test_aurocs[oracle]), 6),
            "test_auroc_per_draw": _floats(test_aurocs),
        }
    report = {
        "sub_scores": list(names),
        "n_validation": int(len(validation_labels)),
        "n_validation_anomalous": int(np.sum(validation_labels)),
        "validation_sub_score_auroc": {k: None if np.isnan(v) else round(v, 6) for k, v in sub_score_aurocs(validation_scores, validation_labels, names).items()},
        "n_draws": n_draws,
        "distributions": per_distribution,
    }
    return WeightValidation(chosen, report)
