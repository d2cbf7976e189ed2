"""DreamBooth fine-tuning with class-specific prior preservation (paper section 3.2, eq. 1), as diffusers'
``examples/dreambooth/train_dreambooth.py`` trains it:

- frozen VAE and text encoder; the UNet (or LoRA layers on its attention projections) is trained;
- each step draws ``batch_size`` instance images (the run's normal references, augmented) under the instance prompt
  and as many class images (the base model's own images of the class prompt) under the class prompt, in one batch;
- latents ``z0 = vae.encode(x).sample() * scaling_factor``, a uniform timestep per image, ``zt = add_noise(z0, eps, t)``;
  the loss is the MSE between the UNet's prediction and ``eps`` (or the velocity for v-prediction models) on the
  instance half, plus ``prior_loss_weight`` times the same MSE on the class half; a scheduler that predicts
  anything else is refused;
- AdamW (betas 0.9, 0.999, eps 1e-8, weight decay 1e-2), constant learning rate (``learning_rate`` for full
  fine-tuning, ``lora_learning_rate`` for LoRA, as diffusers' two scripts differ), gradients clipped to norm 1.

Pure torch over diffusers components: no files, no config (the glue is :mod:`fsad.diffusion.stages`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from fsad.diffusion.augment import augment_references

log = logging.getLogger(__name__)
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class Batch:
    """One training batch: ``pixels`` ``(B, 3, S, S)`` in [-1, 1], the first ``n_instance`` rows instance images,
    the rest class images; ``prompt_embeds`` ``(B, 77, D)`` their prompts' text-encoder states, row for row."""

    pixels: torch.Tensor
    prompt_embeds: torch.Tensor
    n_instance: int


class CyclicSampler:
    """Indices ``0..n-1`` in a fresh random order each pass (a shuffled data loader over a cycled dataset)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator, self.order = n, generator, []

    def take(self, k: int) -> list[int]:
        picked = []
        while len(picked) < k:
            if not self.order:
                self.order = torch.randperm(self.n, generator=self.generator).tolist()
            picked.append(self.order.pop())
        return picked


def prior_preservation_batch(
    instance_pixels: torch.Tensor,
    class_pixels: torch.Tensor | None,
    instance_embeds: torch.Tensor,
    class_embeds: torch.Tensor | None,
    batch_size: int,
    samplers: tuple[CyclicSampler, CyclicSampler | None],
    augment: dict[str, Any],
    generator: torch.Generator,
) -> Batch:
    """``batch_size`` augmented instance images and, with prior preservation, ``batch_size`` class images.

    Args:
        instance_pixels: ``(N_i, 3, S, S)`` the normal references in [-1, 1].
        class_pixels: ``(N_c, 3, S, S)`` the class images, or None without prior preservation.
        instance_embeds, class_embeds: ``(1, 77, D)`` text-encoder states of the instance and class prompts.
    """
    instance_sampler, class_sampler = samplers
    instances = augment_references(instance_pixels[instance_sampler.take(batch_size)], augment, generator)
    pixels, embeds = [instances], [instance_embeds.expand(batch_size, -1, -1)]
    if class_pixels is not None:
        pixels.append(class_pixels[class_sampler.take(batch_size)])
        embeds.append(class_embeds.expand(batch_size, -1, -1))
    return Batch(torch.cat(pixels), torch.cat(embeds), batch_size)


def dreambooth_loss(prediction: torch.Tensor, target: torch.Tensor, n_instance: int, prior_loss_weight: float) -> tuple[torch.Tensor, float, float]:
    """``(total, instance_loss, prior_loss)``: MSE on the first ``n_instance`` rows plus ``prior_loss_weight`` times
    the MSE on the others (0 when there are none). ``prediction``, ``target``: ``(B, C, h, w)``."""
    instance = F.mse_loss(prediction[:n_instance].float(), target[:n_instance].float())
    if prediction.shape[0] == n_instance:
        return instance, instance.item(), 0.0
    prior = F.mse_loss(prediction[n_instance:].float(), target[n_instance:].float())
    return instance + prior_loss_weight * prior, instance.item(), prior.item()


@torch.no_grad()
def encode_prompt(tokenizer: Any, text_encoder: Any, prompt: str, device: torch.device) -> torch.Tensor:
    """``(1, 77, D)`` text-encoder states of ``prompt``, padded to the tokenizer's length as Stable Diffusion's pipeline does."""
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(device))[0]


@dataclass
class TrainingLog:
    """Loss of every step, the seconds spent, and what was trained."""

    losses: list[float] = field(default_factory=list)
    instance_losses: list[float] = field(default_factory=list)
    prior_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    trainable_parameters: int = 0


def checked_prediction_type(scheduler_config: Any) -> str:
    """The scheduler's ``prediction_type`` if DreamBooth can train it (``epsilon``: the noise, ``v_prediction``: the
    velocity), else a ValueError that names the value and the fix."""
    prediction_type = scheduler_config.prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"the base model's scheduler has prediction_type {prediction_type!r}; DreamBooth trains {' or '.join(PREDICTION_TYPES)} "
            f"models only. Use a base model whose scheduler/scheduler_config.json sets prediction_type to one of them "
            f"(Stable Diffusion 1.x: epsilon; 2.x at 768 px: v_prediction)."
        )
    return prediction_type


def dreambooth_learning_rate(params: dict[str, Any]) -> float:
    """The constant learning rate of the section's training mode: ``lora_learning_rate`` for LoRA, else ``learning_rate``."""
    return params["lora_learning_rate"] if params["training"] == "lora" else params["learning_rate"]


def _trainable_unet(unet: Any, params: dict[str, Any]) -> list[torch.nn.Parameter]:
    if params["training"] == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=params["lora_rank"], lora_alpha=params["lora_rank"], init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    else:
        unet.requires_grad_(True)
    if params["gradient_checkpointing"]:
        unet.enable_gradient_checkpointing()
    unet.train()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    for parameter in trainable:  # master weights in fp32, as accelerate's mixed precision keeps them
        parameter.data = parameter.data.float()
    return trainable


def train_dreambooth(
    pipeline: Any,
    instance_pixels: torch.Tensor,
    class_pixels: torch.Tensor | None,
    instance_prompt: str,
    class_prompt: str | None,
    params: dict[str, Any],
    seed: int,
    autocast_dtype: torch.dtype | None = None,
) -> TrainingLog:
    """Fine-tune ``pipeline.unet`` in place (full or LoRA) and return the losses.

    Args:
        pipeline: a ``StableDiffusionPipeline`` on its device; its VAE and text encoder stay frozen.
        instance_pixels: ``(N_i, 3, S, S)`` normal references in [-1, 1].
        class_pixels: ``(N_c, 3, S, S)`` class images in [-1, 1], or None (no prior preservation).
        params: the generator's ``dreambooth`` section (``steps, learning_rate, lora_learning_rate, prior_loss_weight,
            batch_size, training, lora_rank, gradient_checkpointing, max_grad_norm, adam_weight_decay, log_every, augment``).
        seed: seeds the augmentation, the sampling of images, noise and timesteps.
        autocast_dtype: bf16/fp16 autocast of the forward pass on CUDA, None for fp32.
    """
    from diffusers import DDPMScheduler

    device = pipeline.unet.device
    vae, text_encoder, unet = pipeline.vae, pipeline.text_encoder, pipeline.unet
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    prediction_type = checked_prediction_type(noise_scheduler.config)
    trainable = _trainable_unet(unet, params)
    optimizer = torch.optim.AdamW(trainable, lr=dreambooth_learning_rate(params), betas=(0.9, 0.999), weight_decay=params["adam_weight_decay"], eps=1e-8)

    generator = torch.Generator().manual_seed(seed)
    with_prior = class_pixels is not None and class_prompt is not None
    instance_embeds = encode_prompt(pipeline.tokenizer, text_encoder, instance_prompt, device)
    class_embeds = encode_prompt(pipeline.tokenizer, text_encoder, class_prompt, device) if with_prior else None
    samplers = (CyclicSampler(len(instance_pixels), generator), CyclicSampler(len(class_pixels), generator) if with_prior else None)
    scaling = vae.config.scaling_factor
    result = TrainingLog(trainable_parameters=sum(p.numel() for p in trainable))
    started = time.perf_counter()
    for step in range(1, params["steps"] + 1):
        batch = prior_preservation_batch(
            instance_pixels, class_pixels if with_prior else None, instance_embeds, class_embeds, params["batch_size"], samplers, params["augment"], generator
        )
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            with torch.no_grad():
                latents = vae.encode(batch.pixels.to(device, vae.dtype)).latent_dist.sample(generator=generator) * scaling
            noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator).to(device)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            prediction = unet(noisy, timesteps, batch.prompt_embeds.to(device)).sample
        target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
        loss, instance_loss, prior_loss = dreambooth_loss(prediction, target, batch.n_instance, params["prior_loss_weight"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, params["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result.losses.append(loss.item())
        result.instance_losses.append(instance_loss)
        result.prior_losses.append(prior_loss)
        if step % params["log_every"] == 0 or step == params["steps"]:
            window = result.losses[-params["log_every"] :]
            log.info("dreambooth step %d/%d loss %.5f (mean of the last %d: %.5f)", step, params["steps"], loss.item(), len(window), sum(window) / len(window))
    unet.eval()
    result.seconds = time.perf_counter() - started
    return result
