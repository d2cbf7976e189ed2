"""Every generator parameter (fsad/diffusion/schema.yaml) reaches its maths: the five job scripts
(workflow_scripts/{base_model,class_images,dreambooth,generate_pool,personalize}.py) run on the tiny preset with every value
non-default, their params built as the rules build them (``stage_params``, then ``job_params``), while spies record
what reaches the library calls: the diffusers pipelines' arguments and denoising steps (UNet forwards), the
DreamBooth loss, optimiser, gradient clipping and augmentation, and the images each stage reads.

Neighbours get values that differ from each other and from their defaults (strength 0.45 / 0.65, steps 10 / 6 / 3,
guidance 5.5 / 2.5 / 3.5, learning rate 3e-4 / weight decay 0.03, ...), so a swap shows as a wrong value.

The last section calls the stage functions directly with stand-ins for the generation calls (the arguments each
stage passes on), and the DreamBooth loop at another resolution with spies on its library calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import runpy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from fsad.diffusion import dreambooth as dreambooth_module
from fsad.diffusion import generation, models, stages
from fsad.diffusion.augment import augment_references
from fsad.diffusion.config import RUN_SETTINGS, generator_params, stage_params
from fsad.diffusion.image_sets import read_image_set
from fsad.diffusion.models import LORA_FILE, UNET_DIR, inference_dtype, load_pipeline
from fsad.diffusion.personalize import ssim

from .diffusion_fixtures import one_thread, write_tiny_run  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
CATEGORY = "metal_nut"  # verbatim "metal_nut", readable "metal nut"
BASE_MODEL = "local/tiny-copy"  # a name the spies map to the tiny preset: a constant in its place shows
SEED = 3
AUGMENT = {"hflip": False, "vflip": True, "rotation_degrees": 7, "crop_scale": 0.6}
ENTRY = {
    # models_from wires jobs (rules/common.smk), no stage job receives it: the stages here run as without it
    "models_from": "source",
    "base_model": BASE_MODEL, "resolution": 16, "precision": "fp16", "instance_prompt": "a flawless photo of {}", "class_name_mode": "verbatim",
    "class_images": {"count": 3, "prompt": "a picture of {}", "steps": 3, "guidance_scale": 3.5, "batch_size": 2},
    "dreambooth": {"steps": 3, "learning_rate": 3e-4, "lora_learning_rate": 7e-4, "prior_loss_weight": 0.25, "batch_size": 2, "training": "lora", "lora_rank": 3,
                   "gradient_checkpointing": True, "max_grad_norm": 0.05, "adam_weight_decay": 0.03, "log_every": 2, "augment": AUGMENT},
    # the single-prompt img2img (the ablation) here; the personalization process's keys have their own tests below
    "pool": {"text_to_image": 3, "image_to_image": 2, "strength": 0.45, "steps": 10, "guidance_scale": 5.5, "batch_size": 2,
             "image_to_image_process": "single_prompt", "prompts": "physical", "prompt_count": 2, "candidates_per_prompt": 2, "selection": "least_similar"},
    "personalization": {"prompts": ["a clean {} shot", "an intact {} shot"], "prompt_count": 2, "fixed_prompt": "a plain {} shot", "strength": 0.65,
                        "steps": 6, "guidance_scale": 2.5, "selection": "least_similar"},
}

COVERED: dict[str, str] = {
    "generator.models_from": "test_models_from_names_an_equal_generator_and_reaches_no_stage_job",
    "generator.base_model": "test_the_base_model_is_the_pipeline_every_stage_loads",
    "generator.resolution": "test_the_resolution_sizes_every_image_generated_trained_on_and_personalized",
    "generator.precision": "test_the_precision_reaches_the_dtype_of_every_stage",
    "generator.instance_prompt": "test_the_prompts_reach_their_stages_with_the_class_name_mode",
    "generator.class_name_mode": "test_the_prompts_reach_their_stages_with_the_class_name_mode",
    "generator.class_images.count": "test_the_class_image_settings_reach_the_text_to_image_calls",
    "generator.class_images.prompt": "test_the_prompts_reach_their_stages_with_the_class_name_mode",
    "generator.class_images.steps": "test_the_class_image_settings_reach_the_text_to_image_calls",
    "generator.class_images.guidance_scale": "test_the_class_image_settings_reach_the_text_to_image_calls",
    "generator.class_images.batch_size": "test_the_batch_sizes_set_the_images_per_pipeline_call_and_only_the_rounding",
    "generator.dreambooth.steps": "test_the_step_count_and_batch_size_shape_the_dreambooth_loop",
    "generator.dreambooth.learning_rate": "test_the_learning_rate_and_weight_decay_reach_the_optimiser",
    "generator.dreambooth.lora_learning_rate": "test_the_learning_rate_and_weight_decay_reach_the_optimiser",
    "generator.dreambooth.prior_loss_weight": "test_the_prior_loss_weight_weighs_the_class_half_of_the_loss",
    "generator.dreambooth.batch_size": "test_the_step_count_and_batch_size_shape_the_dreambooth_loop",
    "generator.dreambooth.training": "test_lora_training_saves_adapters_of_the_configured_rank",
    "generator.dreambooth.lora_rank": "test_lora_training_saves_adapters_of_the_configured_rank",
    "generator.dreambooth.gradient_checkpointing": "test_gradient_checkpointing_reaches_the_unet_and_changes_no_number",
    "generator.dreambooth.max_grad_norm": "test_the_max_grad_norm_clips_every_step",
    "generator.dreambooth.adam_weight_decay": "test_the_learning_rate_and_weight_decay_reach_the_optimiser",
    "generator.dreambooth.log_every": "test_log_every_spaces_the_progress_lines_of_the_job_log",
    "generator.dreambooth.augment.hflip": "test_the_augment_settings_reach_the_training_batches",
    "generator.dreambooth.augment.vflip": "test_the_augment_settings_reach_the_training_batches",
    "generator.dreambooth.augment.rotation_degrees": "test_the_augment_settings_reach_the_training_batches",
    "generator.dreambooth.augment.crop_scale": "test_the_augment_settings_reach_the_training_batches",
    "generator.pool.text_to_image": "test_the_pool_counts_strength_steps_and_guidance_reach_their_pipeline_calls",
    "generator.pool.image_to_image": "test_the_pool_counts_strength_steps_and_guidance_reach_their_pipeline_calls",
    "generator.pool.strength": "test_the_pool_counts_strength_steps_and_guidance_reach_their_pipeline_calls",
    "generator.pool.steps": "test_the_pool_counts_strength_steps_and_guidance_reach_their_pipeline_calls",
    "generator.pool.guidance_scale": "test_the_pool_counts_strength_steps_and_guidance_reach_their_pipeline_calls",
    "generator.pool.batch_size": "test_the_batch_sizes_set_the_images_per_pipeline_call_and_only_the_rounding",
    "generator.pool.image_to_image_process": "test_the_pool_personalization_process_keeps_the_ssim_choice_among_candidates_per_prompt",
    "generator.pool.prompts": "test_the_pool_personalization_process_keeps_the_ssim_choice_among_candidates_per_prompt",
    "generator.pool.prompt_count": "test_the_pool_personalization_process_keeps_the_ssim_choice_among_candidates_per_prompt",
    "generator.pool.candidates_per_prompt": "test_the_pool_personalization_process_keeps_the_ssim_choice_among_candidates_per_prompt",
    "generator.pool.selection": "test_the_pool_personalization_process_keeps_the_ssim_choice_among_candidates_per_prompt",
    "generator.personalization.prompt_count": "test_named_prompt_sets_and_prompt_counts_reach_the_personalize_call",
    "generator.personalization.prompts": "test_the_personalization_settings_reach_the_img2img_call_of_each_test_image",
    "generator.personalization.fixed_prompt": "test_the_personalization_settings_reach_the_img2img_call_of_each_test_image",
    "generator.personalization.strength": "test_the_personalization_settings_reach_the_img2img_call_of_each_test_image",
    "generator.personalization.steps": "test_the_personalization_settings_reach_the_img2img_call_of_each_test_image",
    "generator.personalization.guidance_scale": "test_the_personalization_settings_reach_the_img2img_call_of_each_test_image",
    "generator.personalization.selection": "test_the_selection_keeps_the_least_similar_candidate_when_asked",
}


def test_every_parameter_of_the_run_has_a_non_default_value():
    """A parameter the code replaced by a constant equal to its default would pass every test run at defaults."""
    run, defaults = generator_params(ENTRY, "generators.g"), _defaults()
    for name in COVERED:
        keys = name.removeprefix("generator.").split(".")
        assert _value_of(run, keys) != _value_of(defaults, keys), name


def _defaults() -> dict:
    return generator_params({}, "generators.defaults")


def _value_of(tree: dict, keys: list[str]) -> Any:
    for key in keys:
        tree = tree[key]
    return tree


# --- the run: the four job scripts under spies ---------------------------------------------------


class Namespace(dict):
    """Snakemake's named lists: attributes and ``get``."""

    __getattr__ = dict.__getitem__


def _script(name: str, stage: str | None, entry: dict, inputs: dict, outputs: dict, log: Path) -> None:
    """Run a job script as Snakemake does: rule params from ``stage_params`` of the config's entry (as rules/common.smk),
    or, for the base model's job (``stage`` None), the entry's base_model."""
    from fsad.config import canonical

    params = {"base_model": entry["base_model"]} if stage is None else {"generator": canonical(stage_params(generator_params(entry, "generators.g"), stage))}
    smk = Namespace(
        params=Namespace(**params, seed=SEED),
        config={"generators": {"g": entry}},
        wildcards=Namespace(generator="g", dataset="d", category=CATEGORY, setting="k2", run="0"),
        input=Namespace({k: str(v) for k, v in inputs.items()}),
        output=Namespace({k: str(v) for k, v in outputs.items()}),
        log=[str(log)],
    )
    runpy.run_path(str(ROOT / "workflow_scripts" / f"{name}.py"), init_globals={"snakemake": smk}, run_name="__main__")


@contextlib.contextmanager
def _on_cpu():
    yield "cpu"


class Spies:
    """What reached the library calls, by stage."""

    def __init__(self):
        self.stage = ""
        self.loads: list[dict] = []
        self.precisions: list[tuple[str, str]] = []
        self.calls: list[dict] = []  # pipeline calls
        self.active: dict | None = None
        self.training_rows: list[int] = []
        self.losses: list[dict] = []
        self.optimisers: list[torch.optim.Optimizer] = []
        self.clips: list[dict] = []
        self.augments: list[dict] = []
        self.trainings: list[dict] = []
        self.checkpointing: list[str] = []

    def install(self, mp: pytest.MonkeyPatch) -> None:
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline, UNet2DConditionModel

        spies = self
        real_load = models.load_pipeline

        def load(base_model, device, dtype, seed=None):
            spies.loads.append({"stage": spies.stage, "base_model": base_model, "dtype": dtype, "seed": seed})
            return real_load("tiny" if base_model == BASE_MODEL else base_model, device, dtype, seed)

        mp.setattr(models, "load_pipeline", load)
        mp.setattr(stages, "load_pipeline", load)
        mp.setattr(stages, "inference_dtype", lambda precision, device: spies.precisions.append((spies.stage, precision)) or inference_dtype(precision, device))

        for kind, cls in (("text_to_image", StableDiffusionPipeline), ("image_to_image", StableDiffusionImg2ImgPipeline)):
            original = cls.__call__

            def call(pipeline, prompt, *args, _original=original, _kind=kind, **kwargs):
                record = {"stage": spies.stage, "kind": _kind, "prompts": list(prompt), "unet_calls": 0,
                          "images": [np.asarray(i) for i in kwargs.get("image", [])], **{k: v for k, v in kwargs.items() if k not in ("image", "generator")}}
                spies.active = record
                try:
                    out = _original(pipeline, prompt, *args, **kwargs)
                finally:
                    spies.active = None
                record["outputs"] = [np.asarray(i) for i in out.images]
                spies.calls.append(record)
                return out

            mp.setattr(cls, "__call__", call)

        forward = UNet2DConditionModel.forward

        def counting(unet, sample, *args, **kwargs):
            if spies.active is not None:
                spies.active["unet_calls"] += 1
            else:
                spies.training_rows.append(sample.shape[0])
            return forward(unet, sample, *args, **kwargs)

        mp.setattr(UNet2DConditionModel, "forward", counting)
        enable = UNet2DConditionModel.enable_gradient_checkpointing
        mp.setattr(UNet2DConditionModel, "enable_gradient_checkpointing", lambda unet, *a, **k: spies.checkpointing.append(spies.stage) or enable(unet, *a, **k))

        loss = dreambooth_module.dreambooth_loss

        def loss_spy(prediction, target, n_instance, prior_loss_weight):
            out = loss(prediction, target, n_instance, prior_loss_weight)
            spies.losses.append({"rows": prediction.shape[0], "n_instance": n_instance, "weight": prior_loss_weight, "total": out[0].item(),
                                 "instance": out[1], "prior": out[2]})
            return out

        mp.setattr(dreambooth_module, "dreambooth_loss", loss_spy)
        augment = dreambooth_module.augment_references
        mp.setattr(dreambooth_module, "augment_references", lambda images, params, gen: spies.augments.append({"params": dict(params), "n": len(images)}) or augment(images, params, gen))

        class RecordingAdamW(torch.optim.AdamW):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                spies.optimisers.append(self)

        mp.setattr(torch.optim, "AdamW", RecordingAdamW)
        clip = torch.nn.utils.clip_grad_norm_

        def clip_spy(parameters, max_norm, *args, **kwargs):
            parameters = list(parameters)
            before = clip(parameters, max_norm, *args, **kwargs)
            after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in parameters if p.grad is not None]))
            spies.clips.append({"max_norm": max_norm, "before": float(before), "after": float(after)})
            return before

        mp.setattr(torch.nn.utils, "clip_grad_norm_", clip_spy)
        train = dreambooth_module.train_dreambooth

        def train_spy(pipeline, instance_pixels, class_pixels, instance_prompt, class_prompt, params, seed, autocast_dtype=None):
            spies.trainings.append({"instance_pixels": instance_pixels.clone(), "class_pixels": None if class_pixels is None else class_pixels.clone(),
                                    "instance_prompt": instance_prompt, "class_prompt": class_prompt, "params": params, "autocast": autocast_dtype})
            return train(pipeline, instance_pixels, class_pixels, instance_prompt, class_prompt, params, seed, autocast_dtype)

        mp.setattr(dreambooth_module, "train_dreambooth", train_spy)
        mp.setattr("fsad.devices.claim_device", _on_cpu)

    def of(self, stage: str, kind: str | None = None) -> list[dict]:
        return [c for c in self.calls if c["stage"] == stage and kind in (None, c["kind"])]


def _tiny_run(root: Path) -> tuple[Path, Path]:
    """write_tiny_run's k2 run (references img0, img1; tests img2-img4), its category renamed ``metal_nut``."""
    split, manifest = write_tiny_run(root)
    frame = pd.read_csv(manifest)
    frame["category"] = CATEGORY
    frame.to_csv(manifest, index=False)
    split.write_text(json.dumps({**json.loads(split.read_text()), "category": CATEGORY}))
    return split, manifest


def _run_stages(root: Path, entry: dict, spies: Spies, stages_to_run=("class_images", "dreambooth", "generate_pool", "personalize")) -> dict[str, Path]:
    split, manifest = _tiny_run(root)
    out = {"base": root / "base_model", "class_images": root / "class_images", "model": root / "model", "pool": root / "pool", "personalized": root / "personalized",
           "split": split, "manifest": manifest, "logs": root / "logs"}
    level = logging.getLogger().level
    try:
        with pytest.MonkeyPatch.context() as mp:
            spies.install(mp)
            run = {"split": split, "manifest": manifest}
            spies.stage = "base_model"
            _script("base_model", None, entry, {}, {"base": out["base"]}, out["logs"] / "base_model.log")
            if "class_images" in stages_to_run:
                spies.stage = "class_images"
                _script("class_images", "class_images", entry, {"base": out["base"]}, {"images": out["class_images"]}, out["logs"] / "class_images.log")
            spies.stage = "dreambooth"
            inputs = run | {"base": out["base"]} | ({"class_images": out["class_images"]} if entry["dreambooth"].get("prior_loss_weight", 1.0) > 0 else {})
            _script("dreambooth", "dreambooth", entry, inputs, {"model": out["model"]}, out["logs"] / "dreambooth.log")
            if "generate_pool" in stages_to_run:
                spies.stage = "pool"
                _script("generate_pool", "pool", entry, run | {"model": out["model"]}, {"pool": out["pool"]}, out["logs"] / "pool.log")
            if "personalize" in stages_to_run:
                spies.stage = "personalization"
                _script("personalize", "personalization", entry, run | {"model": out["model"]}, {"personalized": out["personalized"]}, out["logs"] / "personalize.log")
    finally:
        logging.getLogger().setLevel(level)  # job_logging's, for the tests that follow
        logging.captureWarnings(False)
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[dict[str, Path], Spies]:
    spies = Spies()
    return _run_stages(tmp_path_factory.mktemp("generator_params"), ENTRY, spies), spies


def _squared(path: str | Path, resolution: int = 16) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC))


def _manifest(paths: dict[str, Path]) -> pd.Series:
    return pd.read_csv(paths["manifest"]).set_index("image_id")["image_path"]


def _split(paths: dict[str, Path]) -> dict:
    return json.loads(paths["split"].read_text())


def _info(paths: dict[str, Path]) -> dict:
    return json.loads((paths["model"] / "dreambooth.json").read_text())


# --- shared keys ---------------------------------------------------------------------------------


def test_the_base_model_is_the_pipeline_every_stage_loads(generated):
    paths, spies = generated
    loaded = {load["stage"]: load["base_model"] for load in spies.loads}
    assert len(spies.loads) == len(loaded) == 5  # one load per job
    # the base model's job loads the named model (the tiny preset drawn from the config seed) and saves its directory;
    # class images and DreamBooth load that directory, the pool and personalization the fine-tune that links to it
    assert loaded == {"base_model": BASE_MODEL, "class_images": str(paths["base"]), "dreambooth": str(paths["base"]),
                      "pool": str(paths["model"]), "personalization": str(paths["model"])}
    assert spies.loads[0]["seed"] == stages.base_seed(SEED)
    assert all((paths["model"] / name).resolve() == (paths["base"] / name).resolve() for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"))
    assert _info(paths)["base_model"] == BASE_MODEL


def test_the_precision_reaches_the_dtype_of_every_stage(generated):
    _, spies = generated
    assert spies.precisions == [(stage, "fp16") for stage in ("class_images", "dreambooth", "pool", "personalization")]
    # the CPU always computes in fp32 (and trains without autocast); on CUDA the precision is the weights' dtype
    assert {load["dtype"] for load in spies.loads} == {torch.float32} and spies.trainings[0]["autocast"] is None
    assert [inference_dtype(p, torch.device("cuda")) for p in ("fp16", "bf16", "fp32")] == [torch.float16, torch.bfloat16, torch.float32]


def test_the_resolution_sizes_every_image_generated_trained_on_and_personalized(generated):
    paths, spies = generated
    for call in spies.calls:
        assert all(image.shape == (16, 16, 3) for image in call["outputs"] + call["images"]), call["stage"]
        if call["kind"] == "text_to_image":
            assert (call["height"], call["width"]) == (16, 16)
    (training,) = spies.trainings
    assert training["instance_pixels"].shape == (2, 3, 16, 16) and training["class_pixels"].shape == (3, 3, 16, 16)
    for directory in ("class_images", "pool", "personalized"):
        files = [f for column in ("file", "fixed_file") for f in read_image_set(paths[directory]).get(column, []) if f]
        assert files and all(Image.open(f).size == (16, 16) for f in files)


def test_the_prompts_reach_their_stages_with_the_class_name_mode(generated):
    paths, spies = generated
    instance = "a flawless photo of metal_nut"  # verbatim: the category as is
    assert {p for c in spies.of("class_images") for p in c["prompts"]} == {"a picture of metal_nut"}
    (training,) = spies.trainings
    assert (training["instance_prompt"], training["class_prompt"]) == (instance, "a picture of metal_nut")
    assert {p for c in spies.of("pool") for p in c["prompts"]} == {instance}
    assert set(read_image_set(paths["pool"]).query("kind != 'reference'")["prompt"]) == {instance}
    assert {tuple(c["prompts"]) for c in spies.of("personalization")} == {("a clean metal_nut shot", "an intact metal_nut shot", "a plain metal_nut shot")}
    assert stages.prompt_text("a flawless photo of {}", CATEGORY, "readable") == "a flawless photo of metal nut"  # the default mode


# --- class images ---------------------------------------------------------------------------------


def test_the_class_image_settings_reach_the_text_to_image_calls(generated):
    paths, spies = generated
    calls = spies.of("class_images")
    assert all(c["kind"] == "text_to_image" for c in calls)
    assert sum(len(c["prompts"]) for c in calls) == 3 and len(read_image_set(paths["class_images"])) == 3
    # steps 3: the scheduler runs 3 denoising steps (UNet forwards); guidance 3.5 reaches the pipeline as given
    assert [(c["num_inference_steps"], c["unet_calls"], c["guidance_scale"]) for c in calls] == [(3, 3, 3.5)] * len(calls)
    # DreamBooth trains on these class images, not on others
    class_files = read_image_set(paths["class_images"])["file"]
    expected = np.stack([_squared(f) for f in class_files]).astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(spies.trainings[0]["class_pixels"].permute(0, 2, 3, 1).numpy(), expected, atol=1e-6)


def test_the_batch_sizes_set_the_images_per_pipeline_call_and_only_the_rounding(generated):
    _, spies = generated
    assert [len(c["prompts"]) for c in spies.of("class_images")] == [2, 1]  # 3 images, 2 a call
    assert [len(c["prompts"]) for c in spies.of("pool", "text_to_image")] == [2, 1]
    assert [len(c["prompts"]) for c in spies.of("pool", "image_to_image")] == [2]
    assert set(RUN_SETTINGS["class_images"]) == set(RUN_SETTINGS["pool"]) == {"batch_size"}
    # a run setting: another batch size changes a saved image by at most one 8-bit level (batched kernels' rounding)
    pipeline = load_pipeline("tiny", "cpu", torch.float32, 0)
    prompts, seeds = ["a picture of metal_nut"] * 3, [1, 2, 3]
    one = generation.text_to_image(pipeline, prompts, seeds, 2, 3.5, 16, 1)
    three = generation.text_to_image(pipeline, prompts, seeds, 2, 3.5, 16, 3)
    assert max(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() for a, b in zip(one, three)) <= 1


# --- DreamBooth --------------------------------------------------------------------------------------


def test_the_step_count_and_batch_size_shape_the_dreambooth_loop(generated):
    paths, spies = generated
    info = _info(paths)
    assert len(info["loss_per_step"]) == 3 and len(spies.losses) == 3 and len(spies.clips) == 3
    # each step: 2 augmented references, then 2 class images, in one UNet batch
    assert spies.training_rows == [4, 4, 4] and {(l["rows"], l["n_instance"]) for l in spies.losses} == {(4, 2)}
    assert [a["n"] for a in spies.augments] == [2, 2, 2]
    # the references of the run's split are trained on, never its test images
    split, manifest = _split(paths), _manifest(paths)
    expected = np.stack([_squared(manifest[i]) for i in split["normal_refs"]]).astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(spies.trainings[0]["instance_pixels"].permute(0, 2, 3, 1).numpy(), expected, atol=1e-6)
    assert info["normal_refs"] == split["normal_refs"]


def test_the_learning_rate_and_weight_decay_reach_the_optimiser(generated):
    _, spies = generated
    (optimiser,) = spies.optimisers
    group = optimiser.param_groups[0]
    # training: lora steps at lora_learning_rate (the full fine-tune's learning_rate does not reach the job)
    assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (7e-4, 0.03, (0.9, 0.999), 1e-8)
    assert all(state["step"] == 3 for state in optimiser.state.values())
    assert "learning_rate" not in spies.trainings[0]["params"]


def test_the_prior_loss_weight_weighs_the_class_half_of_the_loss(generated, tmp_path):
    paths, spies = generated
    info = _info(paths)
    assert {l["weight"] for l in spies.losses} == {0.25}
    for total, instance, prior in zip(info["loss_per_step"], info["instance_loss_per_step"], info["prior_loss_per_step"]):
        assert prior > 0 and total == pytest.approx(instance + 0.25 * prior, abs=2e-6)
    # weight 0: the job gets no class images (rules/common.smk dreambooth_inputs), the prior term vanishes
    off = {**ENTRY, "dreambooth": {**ENTRY["dreambooth"], "prior_loss_weight": 0.0, "steps": 1, "training": "full"}}
    without = Spies()
    zero = _run_stages(tmp_path, off, without, stages_to_run=())
    (training,) = without.trainings
    assert training["class_pixels"] is None and training["class_prompt"] is None and without.training_rows == [2]
    (loss,) = without.losses
    assert (loss["rows"], loss["prior"]) == (2, 0.0) and loss["total"] == pytest.approx(loss["instance"])
    assert _info(zero)["class_images"] == 0 and (zero["model"] / UNET_DIR).is_dir()  # and full training saves the UNet
    (optimiser,) = without.optimisers  # and steps at learning_rate (test_the_learning_rate_and_weight_decay_reach_the_optimiser)
    assert optimiser.param_groups[0]["lr"] == 3e-4 and "lora_learning_rate" not in training["params"]


def test_lora_training_saves_adapters_of_the_configured_rank(generated):
    paths, _ = generated
    # the adapters, and no UNet of its own: unet/ links to the base model's, which LoRA leaves unchanged
    assert (paths["model"] / LORA_FILE).is_file() and (paths["model"] / UNET_DIR).is_symlink()
    assert (paths["model"] / UNET_DIR).resolve() == (paths["base"] / UNET_DIR).resolve()
    tensors = load_file(str(paths["model"] / LORA_FILE))
    down = {k: v for k, v in tensors.items() if "lora_A" in k or "lora.down" in k}
    up = {k: v for k, v in tensors.items() if "lora_B" in k or "lora.up" in k}
    assert down and len(down) == len(up)
    assert {v.shape[0] for v in down.values()} == {3} and {v.shape[1] for v in up.values()} == {3}
    targets = {k.split(".lora")[0].rsplit(".", 1)[-1] if not k.split(".lora")[0].endswith("to_out.0") else "to_out.0" for k in down}
    assert targets == {"to_k", "to_q", "to_v", "to_out.0"}
    assert 0 < _info(paths)["trainable_parameters"] < 10_000


def test_the_max_grad_norm_clips_every_step(generated):
    _, spies = generated
    assert {c["max_norm"] for c in spies.clips} == {0.05}
    assert all(c["after"] <= 0.05 * (1 + 1e-4) for c in spies.clips)
    assert all(c["before"] > 0.05 for c in spies.clips)  # the value bites: gradients were larger before clipping


def test_log_every_spaces_the_progress_lines_of_the_job_log(generated):
    paths, _ = generated
    lines = [line for line in (paths["logs"] / "dreambooth.log").read_text().splitlines() if "dreambooth step" in line]
    assert [line.split("dreambooth step ")[1].split(" ")[0] for line in lines] == ["2/3", "3/3"]  # every 2nd step and the last


def test_gradient_checkpointing_reaches_the_unet_and_changes_no_number(generated):
    _, spies = generated
    assert spies.checkpointing == ["dreambooth"]
    assert "gradient_checkpointing" in RUN_SETTINGS["dreambooth"]
    params = {**ENTRY["dreambooth"], "training": "full", "steps": 2, "augment": {**AUGMENT, "rotation_degrees": 0, "crop_scale": 1.0}}
    gen = torch.Generator().manual_seed(0)
    pixels, classes = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1, torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    runs = {}
    for flag in (True, False):
        pipeline = load_pipeline("tiny", "cpu", torch.float32, 0)
        log = dreambooth_module.train_dreambooth(pipeline, pixels, classes, "a", "b", {**params, "gradient_checkpointing": flag}, seed=1)
        runs[flag] = (log.losses, {k: v.detach().clone() for k, v in pipeline.unet.state_dict().items()}, pipeline.unet.is_gradient_checkpointing)
    assert runs[True][2] and not runs[False][2]
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-6)
    for name, value in runs[True][1].items():
        torch.testing.assert_close(value, runs[False][1][name], rtol=1e-5, atol=1e-7)


def _smooth(n: int = 6, side: int = 32) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    return torch.stack([torch.stack([torch.sin(3 * x + k) * torch.cos(2 * y + k), x * y, x - y]) for k in range(n)])


def _deviation(params: dict, seed: int = 0) -> float:
    images = _smooth()
    return (augment_references(images, params, torch.Generator().manual_seed(seed)) - images).abs().mean().item()


def test_the_augment_settings_reach_the_training_batches(generated):
    _, spies = generated
    assert [a["params"] for a in spies.augments] == [AUGMENT] * 3
    off = {"hflip": False, "vflip": False, "rotation_degrees": 0, "crop_scale": 1.0}
    images = _smooth(8)
    assert _deviation(off) == 0.0
    # each flip flips its own axis only, for about half of the images
    for key, axis in (("hflip", -1), ("vflip", -2)):
        out = augment_references(images, {**off, key: True}, torch.Generator().manual_seed(0))
        flipped = [torch.equal(o, i.flip(axis)) for o, i in zip(out, images)]
        assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, images)) and 0 < sum(flipped) < len(images), key
    # the same draws scaled by the setting: larger rotations, smaller crops move the images further
    assert 0 < _deviation({**off, "rotation_degrees": 3}) < _deviation({**off, "rotation_degrees": 7}) < _deviation({**off, "rotation_degrees": 30})
    assert 0 < _deviation({**off, "crop_scale": 0.9}) < _deviation({**off, "crop_scale": 0.6}) < _deviation({**off, "crop_scale": 0.3})


# --- the pool and personalization ----------------------------------------------------------------------


def test_the_pool_counts_strength_steps_and_guidance_reach_their_pipeline_calls(generated):
    paths, spies = generated
    t2i, i2i = spies.of("pool", "text_to_image"), spies.of("pool", "image_to_image")
    assert sum(len(c["prompts"]) for c in t2i) == 3 and sum(len(c["prompts"]) for c in i2i) == 2
    index = read_image_set(paths["pool"])
    assert list(index["kind"]).count("text_to_image") == 3 and list(index["kind"]).count("image_to_image") == 2
    assert [(c["num_inference_steps"], c["guidance_scale"], c["unet_calls"]) for c in t2i] == [(10, 5.5, 10)] * len(t2i)
    # img2img runs int(steps * strength) = int(4.5) = 4 of its 10 steps
    assert [(c["strength"], c["num_inference_steps"], c["guidance_scale"], c["unet_calls"]) for c in i2i] == [(0.45, 10, 5.5, 4)] * len(i2i)
    # img2img starts from the run's references in turn, never from its test images
    split, manifest = _split(paths), _manifest(paths)
    inputs = [image for c in i2i for image in c["images"]]
    assert len(inputs) == 2 and all(np.array_equal(image, _squared(manifest[r])) for image, r in zip(inputs, split["normal_refs"]))


def test_the_personalization_settings_reach_the_img2img_call_of_each_test_image(generated):
    paths, spies = generated
    calls = spies.of("personalization")
    split, manifest = _split(paths), _manifest(paths)
    assert len(calls) == len(split["test"]) and {c["kind"] for c in calls} == {"image_to_image"}
    # strength 0.65 of 6 steps: int(3.9) = 3 denoising steps
    assert [(c["strength"], c["num_inference_steps"], c["guidance_scale"], c["unet_calls"]) for c in calls] == [(0.65, 6, 2.5, 3)] * 3
    # each call holds one test image (of the split's test list, in order) under the 2 prompts and the fixed one
    for call, image_id in zip(calls, split["test"]):
        assert len(call["images"]) == 3 and all(np.array_equal(image, _squared(manifest[image_id])) for image in call["images"])
    index = read_image_set(paths["personalized"])
    assert list(index["image_id"]) == split["test"]
    for call, row in zip(calls, index.itertuples()):
        assert np.array_equal(np.asarray(Image.open(row.fixed_file).convert("RGB")), call["outputs"][2])  # the fixed prompt's candidate
        assert len(row.candidate_ssims.split(";")) == 2  # the prompt set's candidates only


def test_the_selection_keeps_the_least_similar_candidate_when_asked(generated):
    paths, spies = generated
    split, manifest = _split(paths), _manifest(paths)
    index = read_image_set(paths["personalized"])
    prompts = ["a clean metal_nut shot", "an intact metal_nut shot"]
    for call, row, image_id in zip(spies.of("personalization"), index.itertuples(), split["test"]):
        query = Image.fromarray(_squared(manifest[image_id]))
        similarities = [ssim(query, Image.fromarray(candidate)) for candidate in call["outputs"][:2]]
        assert similarities[0] != similarities[1]
        kept = int(np.argmin(similarities))  # least_similar: eq. 2 taken literally
        assert np.array_equal(np.asarray(Image.open(row.file).convert("RGB")), call["outputs"][kept])
        assert row.prompt == prompts[kept] and row.ssim == pytest.approx(min(similarities), abs=1e-6)


# --- the stages' own arguments, with stand-ins for the library calls (one section: DreamBooth's loop runs for real) ---

SPEC = {
    "base_model": "tiny", "resolution": 48, "precision": "fp32", "instance_prompt": "a clean {}", "class_name_mode": "verbatim",
    "class_images": {"count": 3, "prompt": "some {}", "steps": 7, "guidance_scale": 2.5, "batch_size": 2},
    "dreambooth": {"steps": 3, "learning_rate": 2.0e-4, "prior_loss_weight": 0.4, "batch_size": 2, "training": "full", "lora_rank": 3,
                   "gradient_checkpointing": True, "max_grad_norm": 0.25, "adam_weight_decay": 0.03, "log_every": 1,
                   "augment": {"hflip": False, "vflip": True, "rotation_degrees": 4.0, "crop_scale": 0.9}},
    "pool": {"text_to_image": 2, "image_to_image": 3, "strength": 0.45, "steps": 9, "guidance_scale": 3.5, "batch_size": 2, "image_to_image_process": "single_prompt"},
    "personalization": {"prompts": ["a {} without flaw", "a {} without dent"], "fixed_prompt": "a plain {}", "strength": 0.35, "steps": 11,
                        "guidance_scale": 4.5, "selection": "least_similar"},
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
    monkeypatch.setattr(stages, "load_pipeline", lambda name, device, dtype, seed=None: loads.append(name) or object())
    monkeypatch.setattr(stages, "inference_dtype", lambda precision, device: dtypes.append(precision) or torch.float32)
    saves = []
    monkeypatch.setattr(stages, "save_base_model", lambda name, seed, out: saves.append((name, seed, out)) or Path(out))
    stages.base_model("other/model", 5, tmp_path / "base")
    assert saves == [("other/model", stages.base_seed(5), tmp_path / "base")]
    t2i = Recorder(lambda a: len(a[1]))
    monkeypatch.setattr(stages, "text_to_image", t2i)
    stages.class_images(params, tmp_path / "base", "d", "metal_nut", 0, "cpu", tmp_path / "class")
    assert loads == [str(tmp_path / "base")] and dtypes == ["fp32"]
    assert t2i.calls[0][0][1] == ["some metal_nut"] * 3  # verbatim class name, the section's prompt
    changed = generator_params({**json.loads(json.dumps(SPEC)), "precision": "bf16"}, "g")
    stages.class_images(changed, tmp_path / "base", "d", "metal_nut", 0, "cpu", tmp_path / "class2")
    assert dtypes[-1] == "bf16"
    split, manifest = write_tiny_run(tmp_path / "run")
    monkeypatch.setattr(stages, "load_finetuned", lambda *a: object())
    monkeypatch.setattr(stages, "image_to_image", Recorder(lambda a: len(a[1])))
    stages.pool(params, split, manifest, tmp_path / "model", 0, "cpu", tmp_path / "pool")
    assert t2i.calls[-1][0][1] == ["a clean wood"] * 2  # the instance prompt, verbatim name


def test_class_image_keys_reach_text_to_image(params, tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "load_pipeline", lambda *a: object())
    t2i = Recorder(lambda a: len(a[1]))
    monkeypatch.setattr(stages, "text_to_image", t2i)
    index = stages.class_images(params, tmp_path / "base", "d", "wood", 0, "cpu", tmp_path / "class")
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


def _noisy(image: Image.Image, amplitude: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    noise = np.random.default_rng(int(amplitude)).normal(0, amplitude, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("selection, kept", [("most_similar", 1), ("least_similar", 2)])
def test_the_pool_personalization_process_keeps_the_ssim_choice_among_candidates_per_prompt(params, tmp_path, monkeypatch, selection, kept):
    """Each img2img image: one call of 2 prompts x 2 seeds against its reference; candidates (noisy, the reference itself,
    its negative, slightly noisy) make the SSIM choice known by hand: the reference itself is the most similar (SSIM 1),
    the negative the least."""
    from fsad.diffusion import personalize as personalize_module
    from fsad.diffusion.image_sets import IMAGE_TO_IMAGE
    from fsad.seeding import derive_seed

    split, manifest = write_tiny_run(tmp_path / "run")
    entry = json.loads(json.dumps(SPEC))
    entry["pool"] |= {"image_to_image_process": "personalization", "prompts": "physical", "prompt_count": 2, "candidates_per_prompt": 2, "selection": selection}
    run_params = generator_params(entry, "g")
    monkeypatch.setattr(stages, "load_finetuned", lambda *a: object())
    monkeypatch.setattr(stages, "text_to_image", Recorder(lambda a: len(a[1])))
    single = Recorder(lambda a: len(a[1]))
    monkeypatch.setattr(stages, "image_to_image", single)  # the single-prompt path: never called here
    calls = []

    def candidates(pipeline, images, prompts, seeds, strength, steps, guidance, batch):
        calls.append({"images": [np.asarray(i) for i in images], "prompts": list(prompts), "seeds": list(seeds), "rest": (strength, steps, guidance, batch)})
        target = images[0]
        return [_noisy(target, 40), target.copy(), Image.fromarray(255 - np.asarray(target)), _noisy(target, 10)]

    monkeypatch.setattr(personalize_module, "image_to_image", candidates)
    stages.pool(run_params, split, manifest, tmp_path / "model", 0, "cpu", tmp_path / "pool")
    index = read_image_set(tmp_path / "pool")
    assert not single.calls and len(calls) == 3  # one call per img2img image
    small, large = "a photo of a small normal wood.", "a photo of a large normal wood."  # figure 5's first two, verbatim name
    refs = json.loads(split.read_text())["normal_refs"]
    label = stages.read_split(split).label
    rows = index[index["kind"] == "image_to_image"].reset_index(drop=True)
    reference_images = {r: np.asarray(Image.open(pd.read_csv(manifest).set_index("image_id").at[r, "image_path"]).convert("RGB").resize((48, 48), Image.Resampling.BICUBIC)) for r in refs}
    for i, (call, row) in enumerate(zip(calls, rows.itertuples())):
        s0 = derive_seed(0, "pool", label, IMAGE_TO_IMAGE, i)  # single_prompt's seed of this image
        s1 = derive_seed(0, "pool", label, IMAGE_TO_IMAGE, i, 1)
        assert call["prompts"] == [small, large, small, large] and call["seeds"] == [s0, s0, s1, s1]
        assert call["rest"] == (0.45, 9, 3.5, 4)  # the pool's strength, steps, guidance; the 4 candidates in one call
        assert all(np.array_equal(image, reference_images[refs[i % 2]]) for image in call["images"]) and row.source == refs[i % 2]
        similarities = [float(v) for v in row.candidate_ssims.split(";")]
        assert similarities[1] == pytest.approx(1.0) and similarities[2] == min(similarities) and len(similarities) == 4
        assert row.prompt == [small, large][kept % 2] and int(row.seed) == [s0, s1][kept // 2]
        assert float(row.ssim) == pytest.approx(similarities[kept], abs=1e-6)
        written = np.asarray(Image.open(row.file).convert("RGB"))
        assert np.array_equal(written, reference_images[row.source]) == (kept == 1)
        if kept == 2:
            assert np.array_equal(written, 255 - reference_images[row.source])


# figure 5(b)'s ten physical-level templates, [c] the normal object, written out for category wood
PHYSICAL_WOOD = [
    "a photo of a small normal wood.", "a photo of a large normal wood.", "a bright photo of a normal wood.", "a dark photo of a normal wood.",
    "a blurry photo of a normal wood.", "a bad photo of a normal wood.", "a good photo of a normal wood.", "a cropped photo of a normal wood.",
    "a close-up photo of a normal wood.", "a low resolution photo of a normal wood.",
]


@pytest.mark.parametrize(
    "prompts, count, expected",
    [
        ("physical", 3, ["a photo of a small normal wood.", "a photo of a large normal wood.", "a bright photo of a normal wood."]),
        ("physical", None, PHYSICAL_WOOD),
        ("state", 1, ["a photo of normal wood without flaw"]),
        ("empty", None, [""]),  # table 5's w/o text as no text
        ("instance", None, ["a clean wood"]),  # table 5's w/o text as the one generic prompt (SPEC's instance prompt)
    ],
)
def test_named_prompt_sets_and_prompt_counts_reach_the_personalize_call(tmp_path, monkeypatch, prompts, count, expected):
    split, manifest = write_tiny_run(tmp_path / "run")
    entry = json.loads(json.dumps(SPEC))
    entry["personalization"] |= {"prompts": prompts, "prompt_count": count}
    monkeypatch.setattr(stages, "load_finetuned", lambda *a: object())
    calls = []

    def personalize(pipeline, queries, seeds, prompts, fixed, strength, steps, guidance, selection):
        calls.append(prompts)
        raise RuntimeError("recorded")

    monkeypatch.setattr(stages, "personalize", personalize)
    with pytest.raises(RuntimeError, match="recorded"):
        stages.personalization(generator_params(entry, "g"), split, manifest, tmp_path / "model", 0, "cpu", tmp_path / "out")
    assert calls == [expected]


def test_models_from_names_an_equal_generator_and_reaches_no_stage_job():
    from fsad.diffusion.config import check_models_from, models_owner

    source = generator_params({"base_model": "tiny"}, "generators.a")
    reader = generator_params({"base_model": "tiny", "models_from": "a", "personalization": {"prompts": "physical"}}, "generators.b")
    generators = {"a": source, "b": reader}
    check_models_from(generators)  # personalization alone differs
    assert (models_owner(generators, "b"), models_owner(generators, "a")) == ("a", "a")
    assert all(stage_params(reader, stage) == stage_params(source, stage) for stage in ("class_images", "dreambooth", "pool"))
    assert "models_from" not in stage_params(reader, "personalization")
    other_pool = generator_params({"base_model": "tiny", "models_from": "a", "pool": {"steps": 9}}, "generators.c")
    with pytest.raises(ValueError, match=r"generators.c.models_from: 'c' and 'a' differ in \['pool'\]"):
        check_models_from({**generators, "c": other_pool})
    with pytest.raises(ValueError, match="name another generator"):
        check_models_from({"b": reader})
    chained = generator_params({"base_model": "tiny", "models_from": "b"}, "generators.d")
    with pytest.raises(ValueError, match="reads another's models itself; name 'a'"):
        check_models_from({**generators, "d": chained})
