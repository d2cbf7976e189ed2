"""DevNet's deviation with DevPrompt's Top-K multiple-instance learning (pure torch).

Sources: DevPrompt (Poudineh & Lalonde) Eqs. 5-8; DevNet (Pang et al.) as its common implementations do
it: reference scores drawn from N(0, 1) (5,000 draws) give ``mu`` and ``sigma`` (``torch.std``, unbiased),
the hinge margin is ``a = 5``, and the Top-K module keeps ``max(int(P * ratio), 1)`` instances (``--topk 0.1``: "k
percentage of instances in the topk module"). The loss is Eq. 8's plain mean over the batch; DevNet's batches are half
normal and half anomalous, where that equals the class-balanced mean kept as an option.

Shapes: ``N`` images (bags), ``P`` patches (instances) per image.
"""

from __future__ import annotations

import torch


def reference_statistics(n_draws: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ``n_draws`` reference scores drawn from the N(0, 1) prior (scalars)."""
    reference = torch.randn(n_draws, generator=generator, dtype=torch.float64)
    return reference.mean().float(), reference.std().float()


def patch_deviations(scores: torch.Tensor, mu: torch.Tensor | float, sigma: torch.Tensor | float) -> torch.Tensor:
    """``d(p) = |s(p) - mu| / sigma`` (Eq. 5) of ``(..., P)`` patch scores; same shape."""
    return (scores - mu).abs() / sigma


def top_k_count(n_patches: int, ratio: float) -> int:
    """``K``: the number of patches the Top-K module keeps, ``max(int(P * ratio), 1)``."""
    return max(int(n_patches * ratio), 1)


def image_deviation(deviations: torch.Tensor, k: int) -> torch.Tensor:
    """``D(x)``: the mean of the ``k`` largest patch deviations (Eqs. 6-7); ``(N, P)`` -> ``(N,)``."""
    return deviations.topk(k, dim=-1).values.mean(dim=-1)


AVERAGES = ("batch", "balanced")


def deviation_loss(
    image_deviations: torch.Tensor, labels: torch.Tensor, margin: float = 5.0, normal_weight: float = 1.0, average: str = "batch"
) -> torch.Tensor:
    """``lambda (1 - y) |D(x)| + y max(0, a - D(x))`` (Eq. 8), averaged over the batch.

    ``average``: ``batch`` is Eq. 8's plain mean over the ``N`` images; ``balanced`` averages each class's terms on
    their own and then the two means, DevNet's batch mean when its halves are equal (a fit here has a few normal
    shots and more anomalous examples, which the plain mean weighs by their counts).

    Args:
        image_deviations: ``(N,)`` image deviations ``D``.
        labels: ``(N,)`` 1 for anomalous, 0 for normal images; both classes must be present.
        margin: ``a``, the Z-score an anomalous image's deviation has to reach.
        normal_weight: ``lambda``, the weight of the normal term.
    """
    anomalous = labels.bool()
    if anomalous.all() or not anomalous.any():
        raise ValueError("the deviation loss needs normal and anomalous images in its batch")
    normal_terms = normal_weight * image_deviations[~anomalous].abs()
    anomalous_terms = (margin - image_deviations[anomalous]).clamp(min=0)
    if average == "batch":
        return torch.cat([normal_terms, anomalous_terms]).mean()
    if average == "balanced":
        return (normal_terms.mean() + anomalous_terms.mean()) / 2
    raise ValueError(f"unknown deviation_average {average!r}; use one of {AVERAGES}")
