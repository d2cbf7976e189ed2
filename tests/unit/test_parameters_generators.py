"""Every generator parameter reaches the diffusers call or the training loop it names.

The stages of :mod:`fsad.diffusion.stages` run with every parameter at a non-default value, each distinct from its
neighbours (so a swap shows), while spies stand in for the library calls they make and record the arguments.
DreamBooth's loop runs for real on the tiny preset with spies on the loss, the clipping, the optimizer and the
augmentation.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from fsad.diffusion import dreambooth as dreambooth_module
from fsad.diffusion import stages
from fsad.diffusion.config import generator_params
from fsad.diffusion.models import load_pipeline

from .diffusion_fixtures import one_thread, write_tiny_run  # noqa: F401

SPEC = {
    "base_model": "tiny", "resolution": 48, "precision": "fp32", "instance_prompt": "a clean {}", "class_name_mode": "verbatim",
    "class_images": {"count": 3, "prompt": "some {}", "steps": 7, "guidance_scale": 2.5, "batch_size": 2},
    "dreambooth": {"steps": 3, "learning_rate": 2.0e-4, "prior_loss_weight": 0.4, "batch_size": 2, "training": "full", "lora_rank": 3,
                   "gradient_checkpointing": True, "max_grad_norm": 0.25, "adam_weight_decay": 0.03, "log_every": 1,
                   "augment": {"hflip": False, "vflip": True, "rotation_degrees": 4.0, "crop_scale": 0.9}},
    "pool": {"text_to_image": 2, "image_to_image": 3, "strength": 0.45, "steps": 9, "guidance_scale": 3.5, "batch_size": 2},
    "personalization": {"prompts": ["a {} without flaw", "a {} without dent"], "fixed_prompt": "a plain {}", "strength": 0.35, "steps": 11,
                        "guidance_scale": 4.5, "selection": "least_similar"},
}
COVERED: dict[str, str] = {
    **{f"generator.{k}": "test_shared_keys_reach_the_pipeline_loader_and_every_prompt" for k in ("base_model", "precision", "instance_prompt", "class_name_mode")},
    "generator.resolution": "test_pool_sections_reach_text_to_image_and_image_to_image",
    **{f"generator.class_images.{k}": "test_class_image_keys_reach_text_to_image" for k in ("count", "prompt", "steps", "guidance_scale", "batch_size")},
    **{f"generator.dreambooth.{k}": "test_dreambooth_keys_reach_the_optimizer_the_loss_and_the_clipping"
       for k in ("steps", "learning_rate", "prior_loss_weight", "batch_size", "max_grad_norm", "adam_weight_decay", "gradient_checkpointing")},
    **{f"generator.dreambooth.augment.{k}": "test_dreambooth_keys_reach_the_optimizer_the_loss_and_the_clipping"
       for k in ("hflip", "vflip", "rotation_degrees", "crop_scale")},
    "generator.dreambooth.training": "test_lora_training_gets_the_configured_rank",
    "generator.dreambooth.lora_rank": "test_lora_training_gets_the_configured_rank",
    "generator.dreambooth.log_every": "exempt: how often the loop logs its loss; changes no tensor (a logging interval)",
    **{f"generator.pool.{k}": "test_pool_sections_reach_text_to_image_and_image_to_image"
       for k in ("text_to_image", "image_to_image", "strength", "steps", "guidance_scale", "batch_size")},
    **{f"generator.personalization.{k}": "test_personalization_keys_reach_the_personalize_call"
       for k in ("prompts", "fixed_prompt", "strength", "steps", "guidance_scale", "selection")},
}


@pytest.fixture(scope="module")
def params():
    return generator_params(json.loads(json.dumps(SPEC)), "generators.test")


class Recorder:
    """Stands in for a library call: records its arguments, returns blank images of the requested count."""

    def __init__(self, count_from):
        self.calls, self.count_from = [], count_from

    def __call__(self, *args, **kwargs):
        from PIL import Image

        self.calls.append((args, kwargs))
        return [Image.new("RGB", (48, 48)) for _ in range(self.count_from(args))]


def test_shared_keys_reach_the_pipeline_loader_and_every_prompt(params, tmp_path, monkeypatch):
    loads, dtypes = [], []
    monkeypatch.setattr(stages, "load_pipeline", lambda name, device, dtype, seed: loads.append(name) or object())
    monkeypatch.setattr(stages, "inference_dtype", lambda precision, device: dtypes.append(precision) or torch.float32)
    t2i = Recorder(lambda a: len(a[1]))
    monkeypatch.setattr(stages, "text_to_image", t2i)
    stages.class_images(params, "d", "metal_nut", 0, "cpu", tmp_path / "class")
    assert loads == ["tiny"] and dtypes == ["fp32"]
    assert t2i.calls[0][0][1] == ["some metal_nut"] * 3  # verbatim class name, the section's prompt
    changed = generator_params({**json.loads(json.dumps(SPEC)), "precision": "bf16", "base_model": "other/model"}, "g")
    stages.class_images(changed, "d", "metal_nut", 0, "cpu", tmp_path / "class2")
    assert loads[-1] == "other/model" and dtypes[-1] == "bf16"
    split, manifest = write_tiny_run(tmp_path / "run")
    monkeypatch.setattr(stages, "load_finetuned", lambda *a: object())
    monkeypatch.setattr(stages, "image_to_image", Recorder(lambda a: len(a[1])))
    stages.pool(params, split, manifest, tmp_path / "model", 0, "cpu", tmp_path / "pool")
    assert t2i.calls[-1][0][1] == ["a clean wood"] * 2  # the instance prompt, verbatim name


def test_class_image_keys_reach_text_to_image(params, tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "load_pipeline", lambda *a: object())
    t2i = Recorder(lambda a: len(a[1]))
    monkeypatch.setattr(stages, "text_to_image", t2i)
    index = stages.class_images(params, "d", "wood", 0, "cpu", tmp_path / "class")
    (args, _), = t2i.calls
    _, prompts, seeds, steps, guidance, resolution, batch = args
    assert (len(prompts), len(seeds), steps, guidance, resolution, batch) == (3, 3, 7, 2.5, 48, 2) and len(index) == 3


def test_pool_sections_reach_text_to_image_and_image_to_image(params, tmp_path, monkeypatch):
    split, manifest = write_tiny_run(tmp_path / "run")
    monkeypatch.setattr(stages, "load_finetuned", lambda *a: object())
    t2i, i2i = Recorder(lambda a: len(a[1])), Recorder(lambda a: len(a[1]))
    monkeypatch.setattr(stages, "text_to_image", t2i)
    monkeypatch.setattr(stages, "image_to_image", i2i)
    index = stages.pool(params, split, manifest, tmp_path / "model", 0, "cpu", tmp_path / "pool")
    (t2i_args, _), = t2i.calls
    assert (len(t2i_args[1]), t2i_args[3], t2i_args[4], t2i_args[5], t2i_args[6]) == (2, 9, 3.5, 48, 2)
    (i2i_args, _), = i2i.calls
    _, images, prompts, seeds, strength, steps, guidance, batch = i2i_args
    assert (len(images), strength, steps, guidance, batch) == (3, 0.45, 9, 3.5, 2)
    assert all(image.size == (48, 48) for image in images)  # the references, squared to the resolution
    assert sorted(index["kind"].value_counts().items())[-2:] and len(index) == 2 + 2 + 3  # 2 refs, 2 t2i, 3 i2i


def test_personalization_keys_reach_the_personalize_call(params, tmp_path, monkeypatch):
    split, manifest = write_tiny_run(tmp_path / "run")
    monkeypatch.setattr(stages, "load_finetuned", lambda *a: object())
    calls = []

    def personalize(pipeline, queries, seeds, prompts, fixed, strength, steps, guidance, selection):
        calls.append((len(queries), prompts, fixed, strength, steps, guidance, selection, queries[0].size))
        raise RuntimeError("recorded")

    monkeypatch.setattr(stages, "personalize", personalize)
    with pytest.raises(RuntimeError, match="recorded"):
        stages.personalization(params, split, manifest, tmp_path / "model", 0, "cpu", tmp_path / "out")
    assert calls == [(3, ["a wood without flaw", "a wood without dent"], "a plain wood", 0.35, 11, 4.5, "least_similar", (48, 48))]


@pytest.fixture(scope="module")
def dreambooth_run(params):
    """Three real steps of the tiny DreamBooth loop with spies on the loss, the clipping, AdamW and the augmentation."""
    seen = {"loss": [], "clip": [], "augment": [], "adam": [], "checkpointing": []}
    loss, clip, augment, adam = dreambooth_module.dreambooth_loss, torch.nn.utils.clip_grad_norm_, dreambooth_module.augment_references, torch.optim.AdamW
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dreambooth_module, "dreambooth_loss", lambda p, t, n, w: seen["loss"].append((len(p), n, w)) or loss(p, t, n, w))
        patch.setattr(torch.nn.utils, "clip_grad_norm_", lambda ps, norm: seen["clip"].append(norm) or clip(ps, norm))
        patch.setattr(dreambooth_module, "augment_references", lambda x, a, g: seen["augment"].append(dict(a)) or augment(x, a, g))
        patch.setattr(torch.optim, "AdamW", lambda ps, **kw: seen["adam"].append(kw) or adam(ps, **kw))
        pipeline = load_pipeline("tiny", "cpu", torch.float32, 0)
        patch.setattr(type(pipeline.unet), "enable_gradient_checkpointing", lambda self: seen["checkpointing"].append(True))
        section = params["dreambooth"]
        pixels = torch.rand(2, 3, 48, 48) * 2 - 1
        result = dreambooth_module.train_dreambooth(pipeline, pixels, pixels.flip(0), "a clean wood", "a wood", section, 1)
    return seen, result


def test_dreambooth_keys_reach_the_optimizer_the_loss_and_the_clipping(dreambooth_run):
    seen, result = dreambooth_run
    assert len(result.losses) == 3  # steps
    assert seen["adam"] == [{"lr": 2.0e-4, "betas": (0.9, 0.999), "weight_decay": 0.03, "eps": 1e-8}]
    assert seen["loss"] == [(4, 2, 0.4)] * 3  # batch 2 instance + 2 class images, prior weight 0.4
    assert seen["clip"] == [0.25] * 3 and seen["checkpointing"] == [True]
    assert seen["augment"] == [{"hflip": False, "vflip": True, "rotation_degrees": 4.0, "crop_scale": 0.9}] * 3


def test_lora_training_gets_the_configured_rank(params, monkeypatch):
    ranks = []
    import peft

    original = peft.LoraConfig
    monkeypatch.setattr(peft, "LoraConfig", lambda **kw: ranks.append((kw["r"], kw["lora_alpha"])) or original(**kw))
    pipeline = load_pipeline("tiny", "cpu", torch.float32, 0)
    section = {**params["dreambooth"], "training": "lora", "gradient_checkpointing": False}
    trainable = dreambooth_module._trainable_unet(pipeline.unet, section)
    assert ranks == [(3, 3)]
    assert sum(p.numel() for p in trainable) < sum(p.numel() for p in pipeline.unet.parameters()) / 2
    full = dreambooth_module._trainable_unet(load_pipeline("tiny", "cpu", torch.float32, 0).unet, {**section, "training": "full"})
    assert sum(p.numel() for p in full) > sum(p.numel() for p in trainable)


def test_the_pool_index_lists_what_was_generated(params, tmp_path, monkeypatch):
    split, manifest = write_tiny_run(tmp_path / "run")
    monkeypatch.setattr(stages, "load_finetuned", lambda *a: object())
    monkeypatch.setattr(stages, "text_to_image", Recorder(lambda a: len(a[1])))
    monkeypatch.setattr(stages, "image_to_image", Recorder(lambda a: len(a[1])))
    index = stages.pool(params, split, manifest, tmp_path / "model", 0, "cpu", tmp_path / "pool")
    assert isinstance(index, pd.DataFrame) and list(index["kind"]).count("text_to_image") + list(index["kind"]).count("image_to_image") == 5
