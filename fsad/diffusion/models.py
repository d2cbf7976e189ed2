"""Load base and fine-tuned Stable Diffusion pipelines; save them atomically as diffusers pipeline directories.

Every model is a directory that ``diffusers.DiffusionPipeline.from_pretrained(dir)`` loads:

- a generator's base model ``models/{generator}/base_model/``: the whole pipeline, written once by
  ``save_pretrained`` (the ``tiny`` preset's random components, or the named model as diffusers loaded it);
- a fine-tuned model ``models/{generator}/{dataset}/{category}/{setting}/run{run}/``: the base's
  ``model_index.json``, what DreamBooth trained, and a relative symbolic link to the base's directory of each
  component it left unchanged. Full fine-tuning writes ``unet/`` (``config.json`` +
  ``diffusion_pytorch_model.safetensors``) and links ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler``;
  LoRA training writes ``pytorch_lora_weights.safetensors`` (the UNet's LoRA layers, as
  ``train_dreambooth_lora.py`` saves them, for ``load_lora_weights(dir)``) and links every component, the UNet
  too. ``dreambooth.json`` records the training.

The links are what the Hugging Face cache itself does (its snapshots link to blobs), so diffusers reads through
them like any local directory, and a run's model costs one UNet (3.4 GB fp32 for SD1.5) instead of a whole
pipeline (4.3 GB). They are relative, so moving the results directory as a whole keeps them; ``cp -rL`` makes a
stand-alone copy of one model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from fsad.diffusion.tiny import TINY, tiny_components
from fsad.io import atomic_directory

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
UNET_DIR = "unet"
LORA_FILE = "pytorch_lora_weights.safetensors"
INFO_FILE = "dreambooth.json"
PIPELINE_INDEX = "model_index.json"


class BaseModelUnavailableError(RuntimeError):
    """The base model can be neither found locally nor downloaded."""


def inference_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the pipeline's weights: ``precision`` on CUDA; float32 on the CPU, where half precision is slow or missing."""
    return DTYPES[precision] if torch.device(device).type == "cuda" else torch.float32


def _how_to_provide(base_model: str) -> str:
    return (
        f"To provide {base_model!r}: run once with network access (diffusers downloads it into the Hugging Face cache, "
        f"~/.cache/huggingface or $HF_HOME), or download it elsewhere (`hf download {base_model}`) and set the generator's "
        f"base_model to that directory. For tests and the embedded default, base_model: tiny builds random small components."
    )


def load_pipeline(base_model: str, device: torch.device | str, dtype: torch.dtype, seed: int | None = None):
    """A ``StableDiffusionPipeline`` of ``base_model`` (``tiny``, a diffusers model id or a local pipeline directory) on ``device``.

    Args:
        seed: draws the ``tiny`` preset's weights (required for it, unused otherwise).

    The safety checker is not loaded: its false positives turn images black, which an anomaly detector would read
    as defects.
    """
    from diffusers import StableDiffusionPipeline

    if base_model == TINY:
        if seed is None:
            raise ValueError("the tiny base model is drawn from a seed: pass load_pipeline(..., seed=...)")
        pipeline = StableDiffusionPipeline(**tiny_components(seed), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        if dtype != torch.float32:  # built in fp32
            pipeline = pipeline.to(dtype=dtype)
    else:
        try:
            pipeline = StableDiffusionPipeline.from_pretrained(
                base_model, torch_dtype=dtype, safety_checker=None, feature_extractor=None, requires_safety_checker=False
            )
        except (OSError, ValueError) as err:
            raise BaseModelUnavailableError(f"base model {base_model!r} cannot be loaded ({err}). {_how_to_provide(base_model)}") from err
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def save_base_model(base_model: str, seed: int, target: str | Path) -> Path:
    """Write ``base_model`` (drawn from ``seed`` when ``tiny``) in fp32 as a diffusers pipeline directory at ``target``, atomically."""
    pipeline = load_pipeline(base_model, "cpu", torch.float32, seed)
    with atomic_directory(target) as tmp:
        pipeline.save_pretrained(tmp, safe_serialization=True)
    return Path(target)


def read_model_info(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a fine-tuned model directory (no {INFO_FILE}); rerun its dreambooth job")
    return json.loads(path.read_text())


def load_finetuned(model_dir: str | Path, device: torch.device | str, dtype: torch.dtype):
    """The pipeline saved in ``model_dir`` (``from_pretrained``), its LoRA layers loaded and fused when it holds them."""
    model_dir = Path(model_dir)
    read_model_info(model_dir)
    try:
        pipeline = load_pipeline(str(model_dir), device, dtype)
    except BaseModelUnavailableError as err:
        raise FileNotFoundError(
            f"{model_dir}: not a loadable pipeline ({err.__cause__}); its unchanged components link to the generator's "
            f"base_model directory: rerun its base_model and dreambooth jobs"
        ) from err
    if (model_dir / LORA_FILE).is_file():
        pipeline.load_lora_weights(str(model_dir), weight_name=LORA_FILE)
        pipeline.fuse_lora()
    return pipeline


def _link_components(base_dir: Path, tmp: Path, target: Path, names: list[str]) -> None:
    """Relative links ``tmp/name -> base_dir/name``, relative to ``target``, which ``tmp`` (its sibling) becomes."""
    for name in names:
        source = base_dir / name
        if not source.is_dir():
            raise FileNotFoundError(f"{base_dir}: no component directory {name!r}; rerun the generator's base_model job")
        os.symlink(os.path.relpath(source.resolve(), target.parent.resolve() / target.name), tmp / name, target_is_directory=True)


def base_components(base_dir: str | Path) -> list[str]:
    """The components (subdirectories) a pipeline directory's ``model_index.json`` lists, the absent ones (null) left out."""
    index = json.loads((Path(base_dir) / PIPELINE_INDEX).read_text())
    return sorted(name for name, value in index.items() if not name.startswith("_") and isinstance(value, list) and value[0] is not None)


def save_finetuned(unet: Any, lora: bool, info: dict[str, Any], base_dir: str | Path, target: str | Path) -> Path:
    """Write a fine-tuned pipeline directory at ``target`` atomically: the trained UNet (full) or its LoRA layers,
    ``info`` as ``dreambooth.json``, ``base_dir``'s ``model_index.json`` and links to its unchanged components."""
    base_dir, target = Path(base_dir), Path(target)
    with atomic_directory(target) as tmp:
        if lora:
            from diffusers import StableDiffusionPipeline
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft.utils import get_peft_model_state_dict

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
            StableDiffusionPipeline.save_lora_weights(str(tmp), unet_lora_layers=layers, weight_name=LORA_FILE, safe_serialization=True)
            unchanged = base_components(base_dir)
        else:
            unet.save_pretrained(tmp / UNET_DIR, safe_serialization=True)
            unchanged = [name for name in base_components(base_dir) if name != UNET_DIR]
        _link_components(base_dir, tmp, target, unchanged)
        shutil.copyfile(base_dir / PIPELINE_INDEX, tmp / PIPELINE_INDEX)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return target
