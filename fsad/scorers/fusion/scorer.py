"""The ``fusion`` scorer: reads its members' scores (``ctx.members``), normalises them on the validation set and fuses.

Params (``schema.yaml`` beside this module, defaults filled in): ``members``, ``n_draws``, ``distributions``,
``score_weights`` (``equal`` or a distribution: which weights fill ``score`` and the fused map), ``validation`` (the
labelled set the members scored, :mod:`fsad.fusion.validation_set`).

Weights: :func:`fsad.fusion.validation.validate_weights` on the members' normalised validation scores, the
anomalous-samples paper's search with its draws and tie rule; the test labels reach only its oracle and per-draw
report, never the choice. Maps: the members that give maps, normalised on their validation maps, summed with their
weights (the same vector, restricted to them).

Columns: ``score``, one per member (its normalised score, named after it), ``score_equal`` and ``score_{distribution}``
per searched distribution. ``ScoreResult.extra`` holds the normalisers, the weights and the validation report.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fsad.fusion.validation import validate_weights
from fsad.scorers.base import MemberScores, ScoreResult, ScoringContext
from fsad.scorers.fusion.fusion_model import Normaliser, equal_weights, fuse_maps, fuse_scores, normalised_columns


def _validation_set(members: dict[str, MemberScores], label: str) -> tuple[list[str], np.ndarray]:
    """The validation ids and labels the members share (they score one set per run)."""
    first_name, first = next(iter(members.items()))
    for name, member in members.items():
        if member.validation_ids != first.validation_ids or not np.array_equal(member.validation_labels, first.validation_labels):
            raise ValueError(f"{label}: members {first_name!r} and {name!r} scored different validation sets; rerun their score jobs")
    return first.validation_ids, first.validation_labels


def score(ctx: ScoringContext) -> ScoreResult:
    """Fuse the members' scores of ``ctx.split.test`` with validated weights."""
    params = ctx.params
    names = list(params["members"])
    missing = [name for name in names if name not in ctx.members]
    if missing:
        raise ValueError(f"fusion of {ctx.split.label}: no scores of member(s) {missing}; the score job reads them from the members' files")
    members = {name: ctx.members[name] for name in names}
    _, validation_labels = _validation_set(members, ctx.split.label)
    normalisers = [Normaliser.fit(m.validation_scores, f"member {n!r} ({ctx.split.label})") for n, m in members.items()]
    validation_columns = normalised_columns([m.validation_scores for m in members.values()], normalisers)
    test_columns = normalised_columns([m.test["score"].to_numpy() for m in members.values()], normalisers)
    test_labels = ctx.manifest.loc[ctx.split.test, "label"].to_numpy()
    distributions = list(params["distributions"])
    search = validate_weights(validation_columns, validation_labels, test_columns, test_labels, names, distributions, params["n_draws"], ctx.seed)
    weights = {"equal": equal_weights(len(names))} | search.chosen
    chosen = weights[params["score_weights"]]

    columns: dict[str, object] = {"image_id": list(ctx.split.test), "score": fuse_scores(test_columns, chosen)}
    columns |= {name: test_columns[:, i] for i, name in enumerate(names)}
    columns |= {f"score_{key}": fuse_scores(test_columns, w) for key, w in weights.items()}

    with_maps = [i for i, m in enumerate(members.values()) if m.test_maps is not None and m.validation_maps is not None]
    if not with_maps:
        raise ValueError(f"fusion of {ctx.split.label}: none of the members {names} gives anomaly maps to fuse")
    map_normalisers = [Normaliser.fit(members[names[i]].validation_maps, f"maps of member {names[i]!r}") for i in with_maps]
    maps = fuse_maps([members[names[i]].test_maps for i in with_maps], map_normalisers, chosen[with_maps])
    extra = {
        "members": names,
        "score_weights": params["score_weights"],
        "weights": {key: [round(float(v), 6) for v in w] for key, w in weights.items()},
        "normalisers": {n: {"loc": z.loc, "scale": z.scale} for n, z in zip(names, normalisers)},
        "map_members": [names[i] for i in with_maps],
        "map_normalisers": {names[i]: {"loc": z.loc, "scale": z.scale} for i, z in zip(with_maps, map_normalisers)},
        "validation": search.report,
    }
    return ScoreResult(pd.DataFrame(columns), maps, extra)
