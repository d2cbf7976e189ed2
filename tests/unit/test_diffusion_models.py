"""The tiny preset, the real loading path (a saved pipeline read back with from_pretrained), and atomic model writes."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from fsad.diffusion.models import DTYPES, INFO_FILE, atomic_directory, load_finetuned, load_pipeline, save_finetuned
from fsad.diffusion.tiny import clip_tokenizer

from .diffusion_fixtures import one_thread  # noqa: F401

PROMPTS = ["a photo of normal metal nut without flaw", "A bright photo of the Carpet, with damage!", "pcb1"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_offline_tokenizer_gives_open_clips_token_ids(prompt):
    ids = clip_tokenizer()(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    reference = open_clip.tokenize([prompt])[0].tolist()
    end = reference.index(49407) + 1  # open_clip pads with 0, Stable Diffusion's tokenizer with <|endoftext|>
    assert ids[:end] == reference[:end]
    assert ids[end:] == [49407] * (77 - end)


def _unet_output(pipeline, seed=0):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 8, 8, generator=gen)
    states = torch.randn(2, 77, pipeline.text_encoder.config.hidden_size, generator=gen)
    with torch.no_grad():
        return pipeline.unet(latents, torch.tensor([10, 500]), states).sample


def test_the_tiny_base_model_is_the_same_in_every_job_and_differs_by_seed():
    torch.testing.assert_close(_unet_output(load_pipeline("tiny", "cpu", torch.float32, 3)), _unet_output(load_pipeline("tiny", "cpu", torch.float32, 3)))
    assert not torch.allclose(_unet_output(load_pipeline("tiny", "cpu", torch.float32, 3)), _unet_output(load_pipeline("tiny", "cpu", torch.float32, 4)))


def test_a_saved_pipeline_loads_through_the_from_pretrained_path_with_the_same_weights(tmp_path):
    tiny = load_pipeline("tiny", "cpu", torch.float32, 0)
    tiny.save_pretrained(tmp_path / "base")  # a local directory in diffusers' layout, as a downloaded model id is
    assert (tmp_path / "base/unet/diffusion_pytorch_model.safetensors").is_file()
    loaded = load_pipeline(str(tmp_path / "base"), "cpu", torch.float32, seed=99)  # the seed only draws tiny weights
    torch.testing.assert_close(_unet_output(loaded), _unet_output(tiny))
    prompt = PROMPTS[0]
    assert loaded.tokenizer(prompt).input_ids == tiny.tokenizer(prompt).input_ids
    assert loaded.safety_checker is None


def test_an_unavailable_base_model_names_how_to_provide_it(tmp_path):
    with pytest.raises(RuntimeError, match="cannot be loaded.*hf download"):
        load_pipeline(str(tmp_path / "no-such-model"), "cpu", torch.float32, 0)


def test_cpu_inference_stays_in_float32_whatever_the_precision():
    from fsad.diffusion.models import inference_dtype

    assert inference_dtype("bf16", torch.device("cpu")) == torch.float32
    assert inference_dtype("bf16", torch.device("cuda")) == DTYPES["bf16"]


@pytest.mark.parametrize("lora", [False, True])
def test_a_finetuned_model_saves_in_diffusers_format_and_loads_back(tmp_path, lora):
    pipeline = load_pipeline("tiny", "cpu", torch.float32, 0)
    unet = pipeline.unet
    if lora:
        from peft import LoraConfig

        unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        with torch.no_grad():  # gaussian init leaves lora_B at zero: give the adapter an effect to carry over
            for name, parameter in unet.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.5)
    else:
        with torch.no_grad():
            unet.conv_in.weight.add_(1.0)
    expected = _unet_output(pipeline)
    save_finetuned(unet, lora, {"base_model": "tiny", "base_seed": 0}, tmp_path / "model")
    files = {p.name for p in (tmp_path / "model").rglob("*")}
    assert INFO_FILE in files and ("pytorch_lora_weights.safetensors" in files) == lora and ("diffusion_pytorch_model.safetensors" in files) != lora
    loaded = load_finetuned(tmp_path / "model", "cpu", torch.float32)
    # a loaded adapter sums its low-rank product in another order than the trained one: float32 rounding, ~1e-5
    torch.testing.assert_close(_unet_output(loaded), expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(_unet_output(load_pipeline("tiny", "cpu", torch.float32, 0)), expected)


def test_a_write_that_fails_leaves_neither_the_target_nor_a_temporary_directory(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target) as tmp:
            (tmp / "half.json").write_text(json.dumps({}))
            raise KeyboardInterrupt  # a job killed while writing
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".model.abcd_123").mkdir()  # what a SIGKILLed writer leaves (mkdtemp's name), cleaned by the next write
    with atomic_directory(target) as tmp:
        (tmp / "done").write_text("1")
    assert (target / "done").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["model"]
