"""One-to-normal personalization (paper section 3.3): each query is noised to strength ``t`` and denoised under
each normal-state prompt; the output chosen by SSIM against the query is the query's personalized image. The pool's
img2img part (section 3.4: "the same process as section 3.3", aimed at the references) runs the same choice
(:func:`choose_by_ssim`) against each reference, with several candidates per prompt when asked.

Eq. 2 writes ``c_q = arg min_c L(x_q, x_hat_c)`` with ``L`` = SSIM, which would keep the output *least* similar to
the query, while the text asks for the prompt that "most closely resembles the normal state" and the method's aim is
to keep the query's normal regions. ``selection: most_similar`` (the default) keeps the highest SSIM (reading L as
an SSIM *loss*, 1 - SSIM); ``least_similar`` is eq. 2 taken literally.

SSIM: scikit-image's ``structural_similarity`` with the settings of Wang et al. (2004) that its documentation gives
(11x11 Gaussian window of sigma 1.5, population covariances, K1 0.01, K2 0.03) on RGB in [0, 1], mean over channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from fsad.diffusion.generation import image_to_image

SELECTIONS = ("most_similar", "least_similar")


def ssim(query: Image.Image, candidate: Image.Image) -> float:
    """SSIM of two RGB images of the same size (Wang et al.'s settings, see the module docstring)."""
    from skimage.metrics import structural_similarity

    a = np.asarray(query.convert("RGB"), dtype=np.float64) / 255.0
    b = np.asarray(candidate.convert("RGB"), dtype=np.float64) / 255.0
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs images of one size, got {a.shape} and {b.shape}")
    return float(structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def select(similarities: Sequence[float], selection: str) -> int:
    """Index of the kept candidate: highest SSIM (``most_similar``) or lowest (``least_similar``); ties go to the first."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; use one of {SELECTIONS}")
    values = np.asarray(similarities, dtype=np.float64)
    return int(np.argmax(values) if selection == "most_similar" else np.argmin(values))


@dataclass
class Personalized:
    """One image's personalization: the kept image, its prompt and seed, every candidate's SSIM (in candidate order:
    seed by seed, prompt by prompt), and the fixed-prompt image."""

    image: Image.Image
    prompt: str
    ssim: float
    candidate_ssims: list[float]
    fixed_image: Image.Image | None = None
    fixed_ssim: float | None = None
    seed: int | None = None


def choose_by_ssim(
    pipeline: Any,
    target: Image.Image,
    prompts: Sequence[str],
    seeds: Sequence[int],
    fixed_prompt: str | None,
    strength: float,
    steps: int,
    guidance_scale: float,
    selection: str,
) -> Personalized:
    """Section 3.3's process for one image: ``target`` denoised under every prompt from every seed's noise (one pipeline
    call holding every candidate, ``len(seeds) * len(prompts)``, then the ``fixed_prompt``'s from ``seeds[0]``), the
    candidate chosen by SSIM against ``target`` (:func:`select`).

    Candidates of one seed start from the same noise, so they differ by their prompt only.
    """
    candidates = [(prompt, seed) for seed in seeds for prompt in prompts]
    every = [*candidates, (fixed_prompt, seeds[0])] if fixed_prompt is not None else candidates
    width = len(every)
    images = image_to_image(pipeline, [target] * width, [p for p, _ in every], [s for _, s in every], strength, steps, guidance_scale, width)
    similarities = [ssim(target, image) for image in images[: len(candidates)]]
    kept = select(similarities, selection)
    result = Personalized(images[kept], candidates[kept][0], similarities[kept], similarities, seed=int(candidates[kept][1]))
    if fixed_prompt is not None:
        result.fixed_image, result.fixed_ssim = images[-1], ssim(target, images[-1])
    return result


def personalize(
    pipeline: Any,
    queries: Sequence[Image.Image],
    seeds: Sequence[int],
    prompts: Sequence[str],
    fixed_prompt: str | None,
    strength: float,
    steps: int,
    guidance_scale: float,
    selection: str,
) -> list[Personalized]:
    """Personalize ``queries`` (already at the generator's resolution) under every prompt (:func:`choose_by_ssim`,
    one candidate per prompt from the noise of ``seeds[i]``).

    Each query is one pipeline call holding its candidates (and the ``fixed_prompt``'s, the prompt ablation's
    baseline), so a query's computation is the same whatever the other queries of the job. Batching queries together
    would be faster on a GPU, but on the CPU batched kernels sum in another order, so a query's result would depend on
    its neighbours (by one 8-bit level in a few pixels, enough to flip a close SSIM choice).
    """
    return [
        choose_by_ssim(pipeline, query, prompts, [seeds[q]], fixed_prompt, strength, steps, guidance_scale, selection)
        for q, query in enumerate(queries)
    ]
