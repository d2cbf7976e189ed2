"""The tiny preset, the real loading path (a saved pipeline read back with from_pretrained), fine-tuned pipeline
directories that link to their base, and atomic model writes."""

from __future__ import annotations

import json
import os

import open_clip
import pytest
import torch

from fsad.diffusion.models import DTYPES, INFO_FILE, LORA_FILE, PIPELINE_INDEX, load_finetuned, load_pipeline, save_base_model, save_finetuned
from fsad.io import atomic_directory
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


def test_a_base_model_is_saved_as_a_pipeline_directory_with_the_tiny_weights_of_its_seed(tmp_path):
    base = save_base_model("tiny", 5, tmp_path / "base")
    index = json.loads((base / PIPELINE_INDEX).read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["safety_checker"] == [None, None]
    torch.testing.assert_close(_unet_output(load_pipeline(str(base), "cpu", torch.float32)), _unet_output(load_pipeline("tiny", "cpu", torch.float32, 5)), rtol=0, atol=0)


def test_the_tiny_preset_needs_its_seed():
    with pytest.raises(ValueError, match="seed"):
        load_pipeline("tiny", "cpu", torch.float32)


@pytest.mark.parametrize("lora", [False, True])
def test_a_finetuned_model_saves_as_a_pipeline_linking_its_unchanged_components_to_the_base(tmp_path, lora):
    base = save_base_model("tiny", 0, tmp_path / "base")
    pipeline = load_pipeline(str(base), "cpu", torch.float32)
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
    model = save_finetuned(unet, lora, {"base_model": "tiny", "base_seed": 0}, base, tmp_path / "runs" / "model")
    entries = {p.name: p for p in model.iterdir()}
    links = {name for name, p in entries.items() if p.is_symlink()}
    assert links == ({"unet", "vae", "text_encoder", "tokenizer", "scheduler"} if lora else {"vae", "text_encoder", "tokenizer", "scheduler"})
    for name in links:  # relative links to the base's own component directories
        assert not os.path.isabs(os.readlink(entries[name])) and entries[name].resolve() == (base / name).resolve()
    written = set(entries) - links
    assert written == ({INFO_FILE, PIPELINE_INDEX, LORA_FILE} if lora else {INFO_FILE, PIPELINE_INDEX, "unet"})
    if not lora:
        assert sorted(p.name for p in (model / "unet").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert (model / PIPELINE_INDEX).read_bytes() == (base / PIPELINE_INDEX).read_bytes()
    moved = tmp_path / "elsewhere"  # the results directory moved as a whole: the relative links still resolve
    os.rename(tmp_path / "runs", moved)
    os.rename(base, tmp_path / "base_moved")
    os.symlink("base_moved", tmp_path / "base")
    loaded = load_finetuned(moved / "model", "cpu", torch.float32)
    # a loaded adapter sums its low-rank product in another order than the trained one: float32 rounding, ~1e-5
    torch.testing.assert_close(_unet_output(loaded), expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(_unet_output(load_pipeline("tiny", "cpu", torch.float32, 0)), expected)


def test_a_finetuned_model_whose_base_is_gone_says_which_jobs_to_rerun(tmp_path):
    import shutil

    base = save_base_model("tiny", 0, tmp_path / "base")
    model = save_finetuned(load_pipeline(str(base), "cpu", torch.float32).unet, False, {"base_model": "tiny"}, base, tmp_path / "model")
    shutil.rmtree(base)
    with pytest.raises(FileNotFoundError, match="rerun its base_model and dreambooth jobs"):
        load_finetuned(model, "cpu", torch.float32)


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
