"""The ``tiny`` base model: a Stable Diffusion pipeline with small random components built from configs.

It runs every diffusion stage on the CPU in seconds (tests, the embedded default) through the same code as
Stable Diffusion 1.5: the same pipeline classes, the same training loop, the same save and load calls. The
weights are drawn from a seed, so every job builds the same base model.

The tokenizer is a real ``CLIPTokenizer`` whose ``vocab.json`` and ``merges.txt`` are written from the BPE
merges open_clip ships (``bpe_simple_vocab_16e6.txt.gz``): the same 49408-token vocabulary as OpenAI's CLIP,
built the way open_clip's ``SimpleTokenizer`` builds it, so nothing is downloaded.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from functools import cache
from pathlib import Path

import torch

TINY = "tiny"
CONTEXT_LENGTH = 77
# Text width = UNet cross-attention width; small enough that a DreamBooth step takes a fraction of a second on one core.
TEXT_WIDTH = 32
# SD1.5's noise schedule (its scheduler_config.json), so training and sampling see the same timesteps as the real model.
SD15_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def clip_bpe_files(directory: str | Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` of CLIP's BPE tokenizer into ``directory`` from open_clip's merges."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]  # the slice open_clip's SimpleTokenizer takes
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab_file, merges_file


@cache
def clip_tokenizer():
    """A ``CLIPTokenizer`` with OpenAI CLIP's vocabulary, padded to 77 tokens with ``<|endoftext|>`` as SD1.5's."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="fsad-clip-bpe-") as tmp:
        vocab_file, merges_file = clip_bpe_files(tmp)
        return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=CONTEXT_LENGTH, pad_token="<|endoftext|>")


def tiny_components(seed: int) -> dict:
    """UNet, VAE, text encoder, tokenizer and scheduler of the tiny preset, random weights drawn from ``seed``.

    UNet: 2 levels (16, 32 channels), cross-attention at the lower one; VAE: 3 levels (downsampling 4x, 4 latent
    channels); text encoder: 2 layers of width 32 over CLIP's vocabulary. About 0.25 M, 0.24 M and 1.6 M parameters;
    a UNet call on 64 latents of 16x16 takes about 0.2 s on one CPU core.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_WIDTH,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=64,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=TEXT_WIDTH,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=CONTEXT_LENGTH,
                projection_dim=TEXT_WIDTH,
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407,
            )
        )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": clip_tokenizer(),
        "scheduler": DDIMScheduler(**SD15_SCHEDULE),
    }
