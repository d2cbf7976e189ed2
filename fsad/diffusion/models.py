"""Load base and fine-tuned Stable Diffusion pipelines; save a fine-tuned model atomically in diffusers' format.

A fine-tuned model directory (``models/{generator}/{dataset}/{category}/{setting}/run{run}/``) holds only what
DreamBooth trained, in diffusers' own layout and safetensors: ``unet/`` (``config.json`` +
``diffusion_pytorch_model.safetensors``) after full fine-tuning, or ``pytorch_lora_weights.safetensors`` (the
UNet's LoRA layers, as ``train_dreambooth_lora.py`` saves them) after LoRA training, plus ``dreambooth.json``.
The frozen VAE, text encoder, tokenizer and scheduler come from the base model named in ``dreambooth.json``, so
a run's model costs one UNet (3.4 GB fp32 for SD1.5) instead of a whole pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from fsad.diffusion.tiny import TINY, tiny_components

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
UNET_DIR = "unet"
LORA_FILE = "pytorch_lora_weights.safetensors"
INFO_FILE = "dreambooth.json"


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


def load_pipeline(base_model: str, device: torch.device | str, dtype: torch.dtype, seed: int, unet: Any = None):
    """A ``StableDiffusionPipeline`` of ``base_model`` (``tiny``, a diffusers model id or a local directory) on ``device``.

    Args:
        seed: draws the ``tiny`` preset's weights (ignored for real models).
        unet: a UNet to use instead of the base model's (a fine-tuned one).

    The safety checker is not loaded: its false positives turn images black, which an anomaly detector would read
    as defects.
    """
    from diffusers import StableDiffusionPipeline

    if base_model == TINY:
        components = tiny_components(seed)
        if unet is not None:
            components["unet"] = unet
        pipeline = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        if dtype != torch.float32:  # built in fp32
            pipeline = pipeline.to(dtype=dtype)
    else:
        extra = {"unet": unet} if unet is not None else {}
        try:
            pipeline = StableDiffusionPipeline.from_pretrained(
                base_model, torch_dtype=dtype, safety_checker=None, feature_extractor=None, requires_safety_checker=False, **extra
            )
        except (OSError, ValueError) as err:
            raise BaseModelUnavailableError(f"base model {base_model!r} cannot be loaded ({err}). {_how_to_provide(base_model)}") from err
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def read_model_info(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a fine-tuned model directory (no {INFO_FILE}); rerun its dreambooth job")
    return json.loads(path.read_text())


def load_finetuned(model_dir: str | Path, device: torch.device | str, dtype: torch.dtype):
    """The base pipeline named in ``model_dir``'s ``dreambooth.json`` with the UNet or LoRA weights trained there."""
    from diffusers import UNet2DConditionModel

    model_dir = Path(model_dir)
    info = read_model_info(model_dir)
    if (model_dir / UNET_DIR).is_dir():
        unet = UNet2DConditionModel.from_pretrained(model_dir / UNET_DIR, torch_dtype=dtype)
        return load_pipeline(info["base_model"], device, dtype, info["base_seed"], unet=unet)
    if not (model_dir / LORA_FILE).is_file():
        raise FileNotFoundError(f"{model_dir}: holds neither {UNET_DIR}/ nor {LORA_FILE}; rerun its dreambooth job")
    pipeline = load_pipeline(info["base_model"], device, dtype, info["base_seed"])
    pipeline.load_lora_weights(str(model_dir), weight_name=LORA_FILE)
    pipeline.fuse_lora()
    return pipeline


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty directory beside ``target``; it replaces ``target`` when the block succeeds, else it is removed.

    A killed job leaves at worst a hidden ``.{name}.*`` directory, never a half-written ``target``; the next write of
    ``target`` (one job writes it) removes what killed ones left.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stale = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}")  # tempfile.mkdtemp's names for this prefix
    for leftover in [p for p in target.parent.iterdir() if p.is_dir() and stale.fullmatch(p.name)]:
        log.warning("removing %s, left by a job writing %s that was killed", leftover, target.name)
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_finetuned(unet: Any, lora: bool, info: dict[str, Any], target: str | Path) -> Path:
    """Write the trained UNet (full) or its LoRA layers with ``info`` as ``dreambooth.json`` into ``target`` atomically."""
    with atomic_directory(target) as tmp:
        if lora:
            from diffusers import StableDiffusionPipeline
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft.utils import get_peft_model_state_dict

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
            StableDiffusionPipeline.save_lora_weights(str(tmp), unet_lora_layers=layers, weight_name=LORA_FILE, safe_serialization=True)
        else:
            unet.save_pretrained(tmp / UNET_DIR, safe_serialization=True)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return Path(target)
