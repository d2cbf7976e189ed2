"""The models the diffusion stages save load with diffusers' API alone, and generate what fsad generates.

The loading side runs in a fresh interpreter that imports torch, numpy and diffusers only (it checks that no fsad
module is loaded): a diffusers user's ``DiffusionPipeline.from_pretrained(dir)`` on the tiny base model's
directory, a full fine-tune's and a LoRA fine-tune's (then ``load_lora_weights(dir)`` and ``fuse_lora()``). Each
generates one image with a seeded CPU generator; fsad's own stage code generates the same image.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fsad.diffusion import stages
from fsad.diffusion.config import generator_params
from fsad.diffusion.generation import text_to_image
from fsad.diffusion.models import load_finetuned, load_pipeline

from .diffusion_fixtures import one_thread, write_tiny_run  # noqa: F401

PROMPT, SEED, STEPS, GUIDANCE, RESOLUTION = "a photo of normal wood", 1234, 4, 7.5, 32
CONFIG_SEED = 7

DIFFUSERS_ONLY = r"""
import json, sys
import numpy as np
import torch
from diffusers import DiffusionPipeline

torch.set_num_threads(1)
models, prompt, seed, steps, guidance, resolution, out = json.loads(sys.argv[1])
images = {}
for name, directory, lora in models:
    pipe = DiffusionPipeline.from_pretrained(directory)
    if lora:
        pipe.load_lora_weights(directory)
        pipe.fuse_lora()
    pipe.set_progress_bar_config(disable=True)
    result = pipe(prompt, height=resolution, width=resolution, num_inference_steps=steps, guidance_scale=guidance,
                  generator=torch.Generator().manual_seed(seed))
    images[name] = np.asarray(result.images[0])
    images[name + "_class"] = np.array(type(pipe).__name__)
assert not [m for m in sys.modules if m == "fsad" or m.startswith("fsad.")], "the diffusers-only side imported fsad"
np.savez(out, **images)
"""


def _params(training: str) -> dict:
    return generator_params(
        {"base_model": "tiny", "resolution": RESOLUTION, "precision": "fp32",
         # a large step so that three steps move the images visibly away from the base model's
         "dreambooth": {"steps": 3, "learning_rate": 3e-2, "lora_learning_rate": 3e-1, "prior_loss_weight": 0.0, "training": training,
                        "augment": {"hflip": False, "vflip": False, "rotation_degrees": 0, "crop_scale": 1.0}}},
        f"generators.{training}",
    )


def _fsad_image(pipeline) -> np.ndarray:
    (image,) = text_to_image(pipeline, [PROMPT], [SEED], STEPS, GUIDANCE, RESOLUTION, 1)
    return np.asarray(image)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("diffusers_loading")
    split, manifest = write_tiny_run(root / "run", size=RESOLUTION)
    base = stages.base_model("tiny", CONFIG_SEED, root / "models/g/base_model")
    dirs = {"base": base}
    for training in ("full", "lora"):
        dirs[training] = root / f"models/g/d/wood/k2/run0_{training}"
        stages.dreambooth(_params(training), base, split, manifest, None, CONFIG_SEED, "cpu", dirs[training])
    fsad = {
        # the tiny preset as fsad builds it in memory, and the fine-tunes as the pool and personalization jobs load them
        "base": _fsad_image(load_pipeline("tiny", "cpu", torch.float32, stages.base_seed(CONFIG_SEED))),
        **{training: _fsad_image(load_finetuned(dirs[training], "cpu", torch.float32)) for training in ("full", "lora")},
    }
    out = root / "diffusers.npz"
    models = [[name, str(directory), name == "lora"] for name, directory in dirs.items()]
    subprocess.run([sys.executable, "-c", DIFFUSERS_ONLY, json.dumps([models, PROMPT, SEED, STEPS, GUIDANCE, RESOLUTION, str(out)])], check=True, cwd=root)
    with np.load(out) as loaded:
        return {"dirs": dirs, "fsad": fsad, "diffusers": {key: loaded[key] for key in loaded.files}}


@pytest.mark.parametrize("model", ["base", "full", "lora"])
def test_diffusers_alone_loads_the_saved_model_and_generates_fsads_image(saved, model):
    ours, theirs = saved["fsad"][model], saved["diffusers"][model]
    assert theirs.shape == ours.shape == (RESOLUTION, RESOLUTION, 3) and theirs.dtype == np.uint8
    assert str(saved["diffusers"][model + "_class"]) == "StableDiffusionPipeline"
    np.testing.assert_array_equal(theirs, ours)  # the same 8-bit values, pixel for pixel


def test_the_fine_tunes_generate_other_images_than_the_base_model(saved):
    images = saved["fsad"]
    for a, b in (("base", "full"), ("base", "lora"), ("full", "lora")):
        assert np.abs(images[a].astype(int) - images[b].astype(int)).mean() > 1.0, (a, b)


def test_a_fine_tune_costs_its_trained_weights_only(saved):
    def size(directory: Path) -> int:  # the bytes stored in the directory itself, links not followed
        return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and not any(q.is_symlink() for q in [p, *p.parents]))

    base, full, lora = (size(saved["dirs"][name]) for name in ("base", "full", "lora"))
    unet = (saved["dirs"]["full"] / "unet/diffusion_pytorch_model.safetensors").stat().st_size
    assert unet < full < unet + 20_000  # the UNet, its config, model_index.json and dreambooth.json
    assert lora < 50_000 < base
