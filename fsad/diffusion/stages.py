"""The jobs of the diffusion stages: read a split and a manifest, run a stage, write its directory atomically.

Outputs (each a directory written beside its target and renamed onto it):

- the base model ``models/{generator}/base_model/``: a diffusers pipeline directory, once per generator
  (:mod:`fsad.diffusion.models`); every other stage loads it, or a fine-tuned model linking to it;
- class images ``models/{generator}/{dataset}/{category}/class_images/``: ``NNNN.png`` + ``index.csv``;
- a fine-tuned model ``models/{generator}/{dataset}/{category}/{setting}/run{run}/`` (:mod:`fsad.diffusion.models`);
- a pool ``pools/{generator}/{dataset}/{category}/{setting}/run{run}/``: generated ``t2i_NNNN.png`` and ``i2i_NNNN.png``
  + ``index.csv`` listing the memory in order: the run's references (no file, ``image_path`` in the dataset), then
  the generated images, text-to-image and img2img interleaved, with each img2img image's prompt, seed and (under the
  personalization process) its SSIM choice;
- personalized test images ``personalized/{generator}/{dataset}/{category}/{setting}/run{run}/``: ``NNNN.png`` per
  test image (and ``NNNN.fixed.png`` under the fixed prompt) + ``index.csv`` with the prompt kept and the SSIMs.

Seeds derive from (config seed, stage, dataset, category[, setting, run], image), so the same config gives the same
images, and the tiny base model's weights from (config seed, ``tiny-base``), the same in every job.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fsad.data.images import read_image
from fsad.data.manifest import read_manifest
from fsad.data.splits import Split, read_split
from fsad.diffusion.config import prompt_text, stage_prompts
from fsad.diffusion.generation import image_to_image, square, text_to_image
from fsad.diffusion.image_sets import IMAGE_TO_IMAGE, REFERENCE, TEXT_TO_IMAGE, read_image_set, write_image_set
from fsad.diffusion.models import DTYPES, inference_dtype, load_finetuned, load_pipeline, save_base_model, save_finetuned
from fsad.diffusion.personalize import choose_by_ssim, personalize
from fsad.provenance import environment
from fsad.seeding import derive_seed

log = logging.getLogger(__name__)


def base_seed(seed: int) -> int:
    """Seed of the tiny base model's weights: one per config seed."""
    return derive_seed(seed, "tiny-base")


def base_model(name: str, seed: int, out_dir: str | Path) -> Path:
    """The generator's base model ``name`` saved as a diffusers pipeline directory (the tiny preset drawn from the config seed)."""
    started = time.perf_counter()
    path = save_base_model(name, base_seed(seed), out_dir)
    log.info("base model %r saved as a pipeline directory in %.1f s", name, time.perf_counter() - started)
    return path


def _pixels(images: list[Image.Image], resolution: int) -> torch.Tensor:
    """``(N, 3, S, S)`` in [-1, 1] (DreamBooth's normalisation) of the images squared to ``resolution``."""
    arrays = [np.asarray(square(image, resolution), dtype=np.float32) / 127.5 - 1.0 for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _run_images(split: Split, manifest_path: str | Path, ids: list[str]) -> list[Image.Image]:
    manifest = read_manifest(manifest_path, split.category).set_index("image_id")
    return [read_image(manifest.at[i, "image_path"]) for i in ids]


def _normal_refs(split: Split) -> list[str]:
    if not split.normal_refs:
        raise ValueError(f"split {split.label} has no normal references to fine-tune on; generators need settings with normal_shots >= 1")
    return split.normal_refs


def class_images(
    params: dict[str, Any], base_dir: str | Path, dataset: str, category: str, seed: int, device: str, out_dir: str | Path
) -> pd.DataFrame:
    """The base model's (the pipeline directory ``base_dir``'s) images of the class prompt (prior preservation), ``class_images.count`` of them."""
    section = params["class_images"]
    prompt = prompt_text(section["prompt"], category, params["class_name_mode"])
    pipeline = load_pipeline(str(base_dir), device, inference_dtype(params["precision"], device))
    seeds = [derive_seed(seed, "class_images", dataset, category, i) for i in range(section["count"])]
    started = time.perf_counter()
    images = text_to_image(pipeline, [prompt] * len(seeds), seeds, section["steps"], section["guidance_scale"], params["resolution"], section["batch_size"])
    seconds = time.perf_counter() - started
    log.info("class images: %d of %r in %.1f s (%.2f images/s)", len(images), prompt, seconds, len(images) / seconds)
    names = [f"{i:04d}.png" for i in range(len(images))]
    index = pd.DataFrame({"image_id": [n.removesuffix(".png") for n in names], "file": names, "prompt": prompt, "seed": seeds})
    write_image_set(out_dir, index, dict(zip(names, images)))
    return index


def dreambooth(
    params: dict[str, Any],
    base_dir: str | Path,
    split_path: str | Path,
    manifest_path: str | Path,
    class_dir: str | Path | None,
    seed: int,
    device: str,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Fine-tune the base model (the pipeline directory ``base_dir``) on the run's normal references (with the class
    images when ``prior_loss_weight > 0``); save a pipeline directory that links to ``base_dir``'s unchanged parts."""
    from fsad.diffusion.dreambooth import train_dreambooth

    section = params["dreambooth"]
    split = read_split(split_path)
    refs = _normal_refs(split)
    resolution = params["resolution"]
    instance_pixels = _pixels(_run_images(split, manifest_path, refs), resolution)
    class_pixels, class_prompt = None, None
    if section["prior_loss_weight"] > 0:
        if class_dir is None:
            raise ValueError(f"dreambooth of {split.label}: prior_loss_weight > 0 needs the class images directory")
        class_index = read_image_set(class_dir)
        class_pixels = _pixels([read_image(path) for path in class_index["file"]], resolution)
        class_prompt = class_index["prompt"].iloc[0]
    on_cuda = torch.device(device).type == "cuda"
    # Frozen parts in the run's precision, the trained UNet in fp32 under autocast (accelerate's mixed precision).
    pipeline = load_pipeline(str(base_dir), device, inference_dtype(params["precision"], device))
    pipeline.unet.to(torch.float32)
    instance_prompt = prompt_text(params["instance_prompt"], split.category, params["class_name_mode"])
    autocast = DTYPES[params["precision"]] if on_cuda and params["precision"] != "fp32" else None
    training = train_dreambooth(
        pipeline, instance_pixels, class_pixels, instance_prompt, class_prompt, section, derive_seed(seed, "dreambooth", split.label), autocast
    )
    info = {
        "base_model": params["base_model"],
        "base_seed": base_seed(seed),
        "split": split.label,
        "instance_prompt": instance_prompt,
        "class_prompt": class_prompt,
        "normal_refs": refs,
        "class_images": 0 if class_pixels is None else len(class_pixels),
        "parameters": params,
        "trainable_parameters": training.trainable_parameters,
        "seconds": round(training.seconds, 3),
        "seconds_per_step": round(training.seconds / len(training.losses), 4),
        "device": str(device),
        "environment": environment(),
        "loss_per_step": [round(v, 6) for v in training.losses],
        "instance_loss_per_step": [round(v, 6) for v in training.instance_losses],
        "prior_loss_per_step": [round(v, 6) for v in training.prior_losses],
    }
    save_finetuned(pipeline.unet, section["training"] == "lora", info, base_dir, out_dir)
    log.info("dreambooth %s: %d steps in %.1f s, final loss %.5f", split.label, len(training.losses), training.seconds, training.losses[-1])
    return info


def pool(params: dict[str, Any], split_path: str | Path, manifest_path: str | Path, model_dir: str | Path, seed: int, device: str, out_dir: str | Path) -> pd.DataFrame:
    """The run's anomaly-free pool: its references, then generated normals (text-to-image and img2img interleaved).

    The img2img images come from the references in turn: under ``image_to_image_process: personalization`` each is the
    SSIM choice against its reference among ``candidates_per_prompt`` candidates per prompt of the pool's prompt set
    (:func:`fsad.diffusion.personalize.choose_by_ssim`); under ``single_prompt`` the one img2img image under the
    instance prompt. The first candidate seed of each image is single_prompt's seed, so the two differ by the process only.
    """
    section = params["pool"]
    split = read_split(split_path)
    refs = _normal_refs(split)
    pipeline = load_finetuned(model_dir, device, inference_dtype(params["precision"], device))
    name = lambda template: prompt_text(template, split.category, params["class_name_mode"])  # noqa: E731
    prompt = name(params["instance_prompt"])
    resolution = params["resolution"]
    n_t2i, n_i2i = section["text_to_image"], section["image_to_image"]
    started = time.perf_counter()
    t2i_seeds = [derive_seed(seed, "pool", split.label, TEXT_TO_IMAGE, i) for i in range(n_t2i)]
    t2i = text_to_image(pipeline, [prompt] * n_t2i, t2i_seeds, section["steps"], section["guidance_scale"], resolution, section["batch_size"])
    sources = [refs[i % len(refs)] for i in range(n_i2i)]
    references = dict(zip(refs, (square(image, resolution) for image in _run_images(split, manifest_path, refs))))
    candidate_seeds = [
        [derive_seed(seed, "pool", split.label, IMAGE_TO_IMAGE, i, *((c,) if c else ())) for c in range(section["candidates_per_prompt"])]
        for i in range(n_i2i)
    ]
    i2i_rows = [{"image_id": f"i2i_{i:04d}", "kind": IMAGE_TO_IMAGE, "source": src} for i, src in enumerate(sources)]
    if section["image_to_image_process"] == "personalization":
        prompts = [name(p) for p in stage_prompts(params, "pool")]
        i2i = []
        for row, source, seeds in zip(i2i_rows, sources, candidate_seeds):
            chosen = choose_by_ssim(
                pipeline, references[source], prompts, seeds, None, section["strength"], section["steps"], section["guidance_scale"], section["selection"]
            )
            row |= {"prompt": chosen.prompt, "seed": chosen.seed, "ssim": chosen.ssim, "candidate_ssims": ";".join(f"{v:.6f}" for v in chosen.candidate_ssims)}
            i2i.append(chosen.image)
    else:
        i2i_seeds = [seeds[0] for seeds in candidate_seeds]
        i2i = image_to_image(
            pipeline, [references[s] for s in sources], [prompt] * n_i2i, i2i_seeds, section["strength"], section["steps"], section["guidance_scale"], section["batch_size"]
        )
        for row, s in zip(i2i_rows, i2i_seeds):
            row |= {"prompt": prompt, "seed": s}
    seconds = time.perf_counter() - started
    if n_t2i + n_i2i:
        log.info("pool %s: %d generated in %.1f s (%.2f images/s)", split.label, n_t2i + n_i2i, seconds, (n_t2i + n_i2i) / seconds)

    # ssim, candidate_ssims: the SSIM choice of a personalization-process img2img image ('' elsewhere)
    no_choice = {"ssim": "", "candidate_ssims": ""}
    rows = [{"image_id": r, "kind": REFERENCE, "file": "", "source": r, "prompt": "", "seed": "", **no_choice} for r in refs]
    generated = {}
    t2i_rows = [{"image_id": f"t2i_{i:04d}", "kind": TEXT_TO_IMAGE, "source": "", "prompt": prompt, "seed": s} for i, s in enumerate(t2i_seeds)]
    for row, image in _interleave(list(zip(t2i_rows, t2i)), list(zip(i2i_rows, i2i))):
        rows.append(no_choice | row | {"file": f"{row['image_id']}.png"})
        generated[rows[-1]["file"]] = image
    index = pd.DataFrame(rows, columns=["image_id", "kind", "file", "source", "prompt", "seed", "ssim", "candidate_ssims"])
    write_image_set(out_dir, index, generated)
    return index


def _interleave(a: list, b: list) -> list:
    """``a0, b0, a1, b1, ...`` then the longer list's rest: a memory cut to any size mixes both kinds."""
    mixed = [item for pair in zip(a, b) for item in pair]
    return mixed + a[len(b) :] + b[len(a) :]


def personalization(
    params: dict[str, Any], split_path: str | Path, manifest_path: str | Path, model_dir: str | Path, seed: int, device: str, out_dir: str | Path
) -> pd.DataFrame:
    """Every test image of the run, personalized by the run's fine-tuned model."""
    section = params["personalization"]
    split = read_split(split_path)
    pipeline = load_finetuned(model_dir, device, inference_dtype(params["precision"], device))
    name = lambda template: prompt_text(template, split.category, params["class_name_mode"])  # noqa: E731
    prompts = [name(p) for p in stage_prompts(params, "personalization")]
    fixed = name(section["fixed_prompt"]) if section["fixed_prompt"] is not None else None
    queries = [square(image, params["resolution"]) for image in _run_images(split, manifest_path, split.test)]
    seeds = [derive_seed(seed, "personalization", split.label, image_id) for image_id in split.test]
    started = time.perf_counter()
    results = personalize(pipeline, queries, seeds, prompts, fixed, section["strength"], section["steps"], section["guidance_scale"], section["selection"])
    seconds = time.perf_counter() - started
    generations = len(results) * (len(prompts) + (fixed is not None))
    log.info("personalized %d test images (%d generations) in %.1f s (%.2f images/s)", len(results), generations, seconds, generations / seconds)

    rows, images = [], {}
    for n, (image_id, result) in enumerate(zip(split.test, results)):
        row = {"image_id": image_id, "file": f"{n:04d}.png", "prompt": result.prompt, "ssim": result.ssim,
               "candidate_ssims": ";".join(f"{v:.6f}" for v in result.candidate_ssims), "fixed_file": "", "fixed_ssim": ""}
        images[row["file"]] = result.image
        if result.fixed_image is not None:
            row |= {"fixed_file": f"{n:04d}.fixed.png", "fixed_ssim": result.fixed_ssim}
            images[row["fixed_file"]] = result.fixed_image
        rows.append(row)
    index = pd.DataFrame(rows)
    write_image_set(out_dir, index, images)
    return index

