"""Speed of One-to-Normal's diffusion stages: DreamBooth steps, text-to-image and img2img (personalization) images/s.

The components are built from configs with random weights, so nothing is downloaded: ``--preset sd15`` has Stable
Diffusion 1.5's sizes (UNet 860 M parameters, VAE 84 M, CLIP ViT-L/14 text encoder 123 M; their published
``config.json`` values), ``--preset tiny`` is the pipeline's CPU test preset. Timed with this project's code paths
(``fsad.diffusion.dreambooth.train_dreambooth``, ``fsad.diffusion.generation``, ``fsad.diffusion.personalize``) on
random pixels: speed does not depend on the weights.

    python bench/bench_diffusion.py --preset tiny --out bench/results_diffusion_tiny.md            # CPU smoke (seconds)
    python bench/bench_diffusion.py --preset sd15 --device cuda --precision bf16 --out bench/results_diffusion_cuda.md

Reported per stage: seconds (after one warm-up call), images/s or seconds per DreamBooth step, peak CUDA memory; and
the projection of one category's DreamBooth with the generator's defaults (class images + 800 steps).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch
from PIL import Image

from fsad.diffusion.dreambooth import train_dreambooth
from fsad.diffusion.generation import image_to_image, text_to_image
from fsad.diffusion.models import DTYPES, inference_dtype, load_pipeline
from fsad.diffusion.personalize import personalize
from fsad.io import write_text

PROMPTS = ["a photo of normal screw without flaw", "a photo of normal screw without defect", "a photo of normal screw without damage"]


def sd15_pipeline(device: str, dtype: torch.dtype, seed: int = 0):
    """A StableDiffusionPipeline with SD1.5's component sizes and random weights (the tiny preset's tokenizer: CLIP's BPE)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from fsad.diffusion.tiny import SD15_SCHEDULE, clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, layers_per_block=2, sample_size=512,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                                max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406,
                                                eos_token_id=49407, pad_token_id=49407))
    pipeline = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), scheduler=DDIMScheduler(**SD15_SCHEDULE),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline = pipeline.to(device=device, dtype=dtype)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(run: Callable[[], object], device: str) -> tuple[float, float | None]:
    """Seconds of ``run`` after one warm-up call, and the peak CUDA memory (GiB) of the timed call."""
    run()
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    run()
    _sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return seconds, peak


def dreambooth_rows(pipeline, args, resolution: int, device: str, t2i_rate: float) -> list[tuple]:
    """Seconds per DreamBooth step (full UNet, 1 instance + 1 class image) and the projection of one category."""
    pixels = torch.rand(2, 3, resolution, resolution) * 2 - 1
    params = {"steps": args.dreambooth_steps, "learning_rate": 5e-6, "prior_loss_weight": 1.0, "batch_size": 1, "training": "full", "lora_rank": 4,
              "gradient_checkpointing": args.gradient_checkpointing, "max_grad_norm": 1.0, "adam_weight_decay": 1e-2, "log_every": 10**6,
              "augment": {"hflip": True, "vflip": False, "rotation_degrees": 10, "crop_scale": 0.8}}
    pipeline.unet.to(torch.float32)
    autocast = DTYPES[args.precision] if device.startswith("cuda") and args.precision != "fp32" else None
    seconds, peak = timed(lambda: train_dreambooth(pipeline, pixels[:1], pixels[1:], PROMPTS[0], "a photo of screw", params, 0, autocast), device)
    per_step = seconds / args.dreambooth_steps
    name = f"DreamBooth step, full UNet, 1 instance + 1 class image{', checkpointing' if args.gradient_checkpointing else ''}"
    category = 200 / t2i_rate + 800 * per_step
    return [(name, seconds, f"{per_step:.3f} s/step", peak), ("one category's DreamBooth: 200 class images + 800 steps (projected)", category, f"{category / 60:.1f} min", None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--resolution", type=int, help="default: 512 (sd15), 64 (tiny)")
    parser.add_argument("--batch", type=int, default=32, help="images per text-to-image and img2img call (personalization: one call per query)")
    parser.add_argument("--images", type=int, default=32, help="images generated and personalized per timed call")
    parser.add_argument("--steps", type=int, default=50, help="scheduler steps (img2img runs 0.3 of them); fewer for a smoke run")
    parser.add_argument("--dreambooth-steps", type=int, default=10, help="timed DreamBooth steps; 0 skips DreamBooth")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", help="Markdown file for the table (also printed)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, resolution = args.device, args.resolution or (512 if args.preset == "sd15" else 64)
    dtype = inference_dtype(args.precision, torch.device(device))
    pipeline = sd15_pipeline(device, dtype) if args.preset == "sd15" else load_pipeline("tiny", device, dtype, 0)
    n, batch = args.images, args.batch
    seeds = list(range(n))
    queries = [Image.new("RGB", (resolution, resolution), (120, 110, 100 + i % 50)) for i in range(n)]
    rows = []

    steps = args.steps
    seconds, peak = timed(lambda: text_to_image(pipeline, [PROMPTS[0]] * n, seeds, steps, 7.5, resolution, batch), device)
    rows.append((f"text-to-image, {steps} steps, guidance 7.5 (class images, pool)", seconds, f"{n / seconds:.2f} images/s", peak))
    t2i_rate = n / seconds
    seconds, peak = timed(lambda: image_to_image(pipeline, queries, [PROMPTS[0]] * n, seeds, 0.3, steps, 7.5, batch), device)
    rows.append((f"img2img, strength 0.3 ({int(steps * 0.3)} of {steps} steps), guidance 7.5", seconds, f"{n / seconds:.2f} images/s", peak))
    per_query = max(1, n // 3)
    seconds, peak = timed(lambda: personalize(pipeline, queries[:per_query], seeds[:per_query], PROMPTS, None, 0.3, steps, 7.5, "most_similar"), device)
    rows.append((f"personalization, 3 prompts + SSIM ({per_query} queries, one call each)", seconds, f"{per_query / seconds:.2f} queries/s ({3 * per_query / seconds:.2f} images/s)", peak))

    if args.dreambooth_steps:
        rows += dreambooth_rows(pipeline, args, resolution, device, t2i_rate)

    device_name = torch.cuda.get_device_name() if device.startswith("cuda") else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    lines = [
        f"# One-to-Normal diffusion stages: preset {args.preset}, {resolution} px, {args.precision if device.startswith('cuda') else 'fp32'} on {device_name}",
        "",
        f"Batch {batch} images per call, {n} images per timed call (after one warm-up call); torch {torch.__version__}.",
        "",
        "| stage | seconds | rate | peak CUDA memory (GiB) |",
        "|:--|--:|--:|--:|",
        *(f"| {name} | {s:.2f} | {rate} | {'' if p is None else f'{p:.1f}'} |" for name, s, rate, p in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
