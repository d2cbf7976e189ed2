"""DreamBooth: prior-preservation batches, the loss against a hand computation, augmentation, and a loop that learns."""

from __future__ import annotations

import math

import pytest
import torch

from fsad.diffusion.augment import augment_references
from fsad.diffusion.dreambooth import CyclicSampler, dreambooth_loss, encode_prompt, prior_preservation_batch, train_dreambooth
from fsad.diffusion.models import load_pipeline

from .diffusion_fixtures import one_thread  # noqa: F401

NO_AUGMENT = {"hflip": False, "vflip": False, "rotation_degrees": 0, "crop_scale": 1.0}
PARAMS = {
    "steps": 40, "learning_rate": 2e-3, "lora_learning_rate": 2e-3, "prior_loss_weight": 1.0, "batch_size": 2, "training": "full", "lora_rank": 4,
    "gradient_checkpointing": False, "max_grad_norm": 1.0, "adam_weight_decay": 1e-2, "log_every": 10, "augment": NO_AUGMENT,
}


def test_a_prior_preservation_batch_holds_instance_images_then_class_images_with_their_prompts():
    gen = torch.Generator().manual_seed(0)
    instances = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 3, 4, 4)  # image i is filled with i
    classes = 10 + torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 4, 4)
    instance_embeds, class_embeds = torch.zeros(1, 77, 2), torch.ones(1, 77, 2)
    samplers = (CyclicSampler(3, gen), CyclicSampler(5, gen))
    seen_instances, seen_classes = [], []
    for _ in range(3):
        batch = prior_preservation_batch(instances, classes, instance_embeds, class_embeds, 2, samplers, NO_AUGMENT, gen)
        assert batch.n_instance == 2 and batch.pixels.shape == (4, 3, 4, 4) and batch.prompt_embeds.shape == (4, 77, 2)
        assert (batch.pixels[:2] < 10).all() and (batch.pixels[2:] >= 10).all()
        assert (batch.prompt_embeds[:2] == 0).all() and (batch.prompt_embeds[2:] == 1).all()
        seen_instances += batch.pixels[:2, 0, 0, 0].tolist()
        seen_classes += (batch.pixels[2:, 0, 0, 0] - 10).tolist()
    # each pass over the images is a permutation: 6 draws of 3 instances show each twice, 6 of 5 classes each at least once
    assert sorted(seen_instances) == [0, 0, 1, 1, 2, 2]
    assert set(seen_classes) == {0, 1, 2, 3, 4}


def test_without_prior_preservation_a_batch_holds_instance_images_only():
    gen = torch.Generator().manual_seed(0)
    batch = prior_preservation_batch(torch.zeros(2, 3, 4, 4), None, torch.zeros(1, 77, 2), None, 1, (CyclicSampler(2, gen), None), NO_AUGMENT, gen)
    assert batch.pixels.shape[0] == 1 and batch.n_instance == 1


def test_the_loss_is_the_instance_mse_plus_the_weighted_prior_mse():
    prediction = torch.zeros(4, 1, 1, 2)
    target = torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 4.0]).view(4, 1, 1, 2)
    total, instance, prior = dreambooth_loss(prediction, target, 2, 0.5)
    # instance rows: squares 1,1,1,1 -> 1; class rows: 4,4,0,16 -> 6
    assert instance == pytest.approx(1.0) and prior == pytest.approx(6.0) and total.item() == pytest.approx(1.0 + 0.5 * 6.0)
    alone, _, no_prior = dreambooth_loss(prediction[:2], target[:2], 2, 0.5)
    assert alone.item() == pytest.approx(1.0) and no_prior == 0.0


def test_augmentation_off_is_the_identity_and_flips_are_exact():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16, generator=gen)
    torch.testing.assert_close(augment_references(images, NO_AUGMENT, gen), images)
    flipped = augment_references(images, {**NO_AUGMENT, "hflip": True}, gen)
    for image, out in zip(images, flipped):
        assert torch.equal(out, image) or torch.equal(out, image.flip(-1))


def test_rotations_mirror_the_image_into_the_corners_they_uncover():
    gen = torch.Generator().manual_seed(1)
    image = torch.full((1, 3, 32, 32), 0.7)  # a black corner would show as 0
    rotated = augment_references(image, {**NO_AUGMENT, "rotation_degrees": 30}, gen)
    torch.testing.assert_close(rotated, image)
    cropped = augment_references(torch.rand(1, 3, 32, 32, generator=gen), {**NO_AUGMENT, "crop_scale": 0.5}, gen)
    assert cropped.shape == (1, 3, 32, 32)


def _fixed_batch_loss(pipeline, pixels, prompt, seed=123):
    """The denoising loss on a fixed draw of noise and timesteps (the training loss without its sampling noise)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        latents = pipeline.vae.encode(pixels).latent_dist.mean * pipeline.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        timesteps = torch.linspace(50, 950, latents.shape[0]).long()
        noisy = pipeline.scheduler.add_noise(latents, noise, timesteps)
        states = encode_prompt(pipeline.tokenizer, pipeline.text_encoder, prompt, "cpu").expand(len(pixels), -1, -1)
        return torch.nn.functional.mse_loss(pipeline.unet(noisy, timesteps, states).sample, noise).item()


def test_the_dreambooth_loop_lowers_the_denoising_loss_of_its_instance_images():
    gen = torch.Generator().manual_seed(0)
    # smooth "normal" images: a horizontal gradient in each channel
    ramp = torch.linspace(-1, 1, 32)
    instances = torch.stack([ramp.view(1, 1, 32).expand(3, 32, 32) * s for s in (0.8, 1.0)])
    classes = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
    pipeline = load_pipeline("tiny", "cpu", torch.float32, 0)
    prompt = "a photo of normal textile"
    before = _fixed_batch_loss(pipeline, instances, prompt)
    log = train_dreambooth(pipeline, instances, classes, prompt, "a photo of textile", PARAMS, seed=0)
    after = _fixed_batch_loss(pipeline, instances, prompt)
    assert after < 0.8 * before, (before, after)
    assert len(log.losses) == PARAMS["steps"] and all(math.isfinite(v) for v in log.losses)
    assert all(p > 0 for p in log.prior_losses)  # every step had class images
    assert sum(log.losses[-10:]) < sum(log.losses[:10])


def test_lora_training_trains_only_the_adapter():
    pipeline = load_pipeline("tiny", "cpu", torch.float32, 0)
    base = {name: p.detach().clone() for name, p in pipeline.unet.named_parameters()}
    log = train_dreambooth(pipeline, torch.zeros(1, 3, 32, 32), None, "a photo of normal wood", None, {**PARAMS, "steps": 2, "training": "lora"}, seed=0)
    changed = {name for name, p in pipeline.unet.named_parameters() if name in base and not torch.equal(p, base[name])}
    assert changed == set() and 0 < log.trainable_parameters < sum(p.numel() for p in base.values()) / 5
    assert all(p == 0.0 for p in log.prior_losses)


def test_lora_has_its_own_learning_rate_default_of_diffusers_order():
    from fsad.diffusion.config import generator_params, stage_params
    from fsad.diffusion.dreambooth import dreambooth_learning_rate

    defaults = generator_params({}, "generators.g")["dreambooth"]
    assert (defaults["learning_rate"], defaults["lora_learning_rate"]) == (5e-6, 1e-4)  # train_dreambooth.py, train_dreambooth_lora.py READMEs
    assert dreambooth_learning_rate({**defaults, "training": "lora"}) == 1e-4 and dreambooth_learning_rate(defaults) == 5e-6
    # a job receives its training mode's keys only: the other mode's never rerun it
    full = stage_params(generator_params({}, "generators.g"), "dreambooth")["dreambooth"]
    lora = stage_params(generator_params({"dreambooth": {"training": "lora"}}, "generators.g"), "dreambooth")["dreambooth"]
    assert "learning_rate" in full and not {"lora_learning_rate", "lora_rank"} & set(full)
    assert {"lora_learning_rate", "lora_rank"} <= set(lora) and "learning_rate" not in lora


@pytest.mark.parametrize("training, rate", [("lora", 3e-3), ("full", 2e-3)])
def test_the_optimiser_steps_at_the_learning_rate_of_the_training_mode(monkeypatch, training, rate):
    rates = []
    adam = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, **kw: rates.append(kw["lr"]) or adam(params, **kw))
    pipeline = load_pipeline("tiny", "cpu", torch.float32, 0)
    params = {**PARAMS, "steps": 1, "training": training, "learning_rate": 2e-3, "lora_learning_rate": 3e-3}
    train_dreambooth(pipeline, torch.zeros(1, 3, 32, 32), None, "a photo of normal wood", None, params, seed=0)
    assert rates == [rate]


def test_a_scheduler_that_predicts_neither_noise_nor_velocity_is_refused_with_the_fix():
    from diffusers import DDIMScheduler

    from fsad.diffusion.dreambooth import checked_prediction_type

    pipeline = load_pipeline("tiny", "cpu", torch.float32, 0)
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config, prediction_type="sample")
    before = {name: p.detach().clone() for name, p in pipeline.unet.named_parameters()}
    with pytest.raises(ValueError, match=r"prediction_type 'sample'.*epsilon or v_prediction.*scheduler/scheduler_config.json"):
        train_dreambooth(pipeline, torch.zeros(1, 3, 32, 32), None, "a photo of normal wood", None, {**PARAMS, "steps": 1}, seed=0)
    assert all(torch.equal(p, before[name]) for name, p in pipeline.unet.named_parameters())  # refused before any step
    for accepted in ("epsilon", "v_prediction"):
        assert checked_prediction_type(DDIMScheduler.from_config(pipeline.scheduler.config, prediction_type=accepted).config) == accepted
