"""Batched sampling: text-to-image (class images, the pool) and img2img (the pool, personalization).

Every image gets its own ``torch.Generator`` seeded from its own seed, so its initial noise does not depend on the
batch it is sampled in, and images given the same seed (one query under several prompts) start from the same noise.
The rest of the computation is batched, and batched kernels may sum in another order for another batch: on the CPU
the same image sampled in another batch can differ in the last float bits, and by one 8-bit level in a few pixels
once saved. So the pipeline-call batch sizes are run settings (fsad.diffusion.config.RUN_SETTINGS): images are
reproducible at a fixed batch size, not bit for bit across batch sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    # CPU generators: the same seed gives the same noise on every device (diffusers moves the noise over).
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


def _in_batches(n: int, batch_size: int, call: Callable[[slice], Any]) -> list[Image.Image]:
    """The images of ``call(rows)`` for consecutive slices of ``batch_size`` rows out of ``n``, in order."""
    images: list[Image.Image] = []
    for start in range(0, n, batch_size):
        images += call(slice(start, start + batch_size)).images
    return images


def square(image: Image.Image, resolution: int) -> Image.Image:
    """RGB ``image`` resized to ``resolution`` x ``resolution`` (bicubic), the way CLIP's preprocessing squares images."""
    return image.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)


def text_to_image(
    pipeline: Any, prompts: Sequence[str], seeds: Sequence[int], steps: int, guidance_scale: float, resolution: int, batch_size: int
) -> list[Image.Image]:
    """One image per prompt (``resolution`` square), ``batch_size`` per pipeline call."""
    return _in_batches(
        len(prompts),
        batch_size,
        lambda rows: pipeline(
            list(prompts[rows]), height=resolution, width=resolution, num_inference_steps=steps, guidance_scale=guidance_scale, generator=_generators(seeds[rows])
        ),
    )


def image_to_image(
    pipeline: Any,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    seeds: Sequence[int],
    strength: float,
    steps: int,
    guidance_scale: float,
    batch_size: int,
) -> list[Image.Image]:
    """SDEdit (diffusers' img2img): each image noised to ``strength`` (``int(steps * strength)`` of ``steps``) and denoised under its prompt.

    Args:
        pipeline: a ``StableDiffusionPipeline``; its components are shared with an img2img pipeline.
        images: inputs already at the generator's resolution (:func:`square`).
    """
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**pipeline.components)
    img2img.set_progress_bar_config(disable=True)
    return _in_batches(
        len(images),
        batch_size,
        lambda rows: img2img(
            list(prompts[rows]), image=list(images[rows]), strength=strength, num_inference_steps=steps, guidance_scale=guidance_scale,
            generator=_generators(seeds[rows]),
        ),
    )
