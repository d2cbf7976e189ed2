"""Normalise members' scores and maps on the validation set and sum them with weights (pure numpy, no files).

Each member's scores live on their own scale (a cosine similarity, a distance, a probability), so a weighted sum
needs one scale first: a member's values are z-scored with the mean and standard deviation of its own validation
values (``(value - mean) / std``; scores over the validation images, maps over all their pixels). The statistics come
from the validation set only, so no test image moves them; a positive affine map leaves each member's AUROC as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normaliser:
    """``(value - loc) / scale`` of one member, fitted on its validation values."""

    loc: float
    scale: float

    @classmethod
    def fit(cls, validation_values: np.ndarray, what: str) -> "Normaliser":
        """Mean and std (ddof 0) of ``validation_values`` (any shape); refuses constant values, which have no scale."""
        values = np.asarray(validation_values, dtype=np.float64)
        scale = float(values.std())
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"{what}: its validation values are constant ({values.ravel()[:1]}), so they give no scale to normalise by")
        return cls(float(values.mean()), scale)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.loc) / self.scale


def equal_weights(n_members: int) -> np.ndarray:
    """``(M,)``: 1 / M each, the baseline the searched weights are compared with."""
    return np.full(n_members, 1 / n_members)


def normalised_columns(values: list[np.ndarray], normalisers: list[Normaliser]) -> np.ndarray:
    """``(N, M)``: member ``m``'s ``(N,)`` values through its normaliser, one column per member."""
    return np.stack([normaliser(v) for v, normaliser in zip(values, normalisers)], axis=1)


def fuse_scores(columns: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(N,)``: ``(N, M)`` normalised scores times ``(M,)`` weights."""
    return np.asarray(columns, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)


def fuse_maps(maps: list[np.ndarray], normalisers: list[Normaliser], weights: np.ndarray) -> np.ndarray:
    """``(N, S, S)``: the sum over members of weight times normalised ``(N, S, S)`` map (float32)."""
    fused = np.zeros(maps[0].shape, dtype=np.float64)
    for member_maps, normaliser, weight in zip(maps, normalisers, weights):
        fused += weight * normaliser(member_maps)
    return fused.astype(np.float32)
