"""Generator entries: defaults from fsad/diffusion/schema.yaml, per-stage params, and the checks of scorers that read them."""

from __future__ import annotations

import copy

import pytest

from fsad.config import ConfigError
from fsad.diffusion.config import STAGES, WIRING_KEYS, generator_params, job_params, stage_params

from .test_config import check_config as _checked, default_config


def test_defaults_are_the_papers_and_diffusers_dreambooth_recipe():
    params = generator_params({}, "generators.sd15")
    assert params["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5" and params["resolution"] == 512
    assert params["instance_prompt"] == "a photo of normal {}"
    assert params["dreambooth"]["learning_rate"] == 5e-6 and params["dreambooth"]["steps"] == 800
    assert params["class_images"]["count"] == 200 and params["dreambooth"]["prior_loss_weight"] == 1.0
    personalization = params["personalization"]
    assert personalization["strength"] == 0.3 and personalization["steps"] == 50 and int(50 * 0.3) == 15
    assert personalization["prompts"] == [f"a photo of normal {{}} without {s}" for s in ("flaw", "defect", "damage")]
    assert personalization["selection"] == "most_similar"
    assert params["pool"]["text_to_image"] + params["pool"]["image_to_image"] == 30


def test_a_stage_receives_the_shared_keys_and_its_own_section_only():
    params = generator_params({"base_model": "tiny"}, "generators.tiny")
    pool = stage_params(params, "pool")
    assert set(pool) == {"base_model", "resolution", "precision", "instance_prompt", "class_name_mode", "pool"}
    assert not set(pool) & (set(STAGES) - {"pool"})


def test_a_misspelt_generator_key_and_an_empty_pool_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"generators\.g\.pool.*text_to_imag"):
        generator_params({"pool": {"text_to_imag": 3}}, "generators.g")
    with pytest.raises(ValueError, match=r"generators\.g\.pool generates no image"):
        generator_params({"pool": {"text_to_image": 0, "image_to_image": 0}}, "generators.g")


def test_the_default_one_to_normal_instance_passes_the_checks():
    _checked(default_config())


def test_a_scorer_reading_an_unknown_generator_or_running_zero_shot_is_refused():
    config = default_config()
    config["scorers"]["one_to_normal"]["generator"] = "sd15"
    with pytest.raises(ConfigError, match=r"scorers\.one_to_normal\.generator is 'sd15'.*\['tiny'\]"):
        _checked(config)
    config = default_config()
    config["scorers"]["winclip"]["generator"] = "tiny"  # winclip runs zs too: no references to fine-tune on
    with pytest.raises(ConfigError, match="setting 'zs' has none"):
        _checked(config)
    config["scorers"]["winclip"]["settings"] = ["k1"]
    _checked(config)


def test_a_generator_named_like_a_scorer_instance_is_refused():
    config = default_config()
    config["generators"]["winclip"] = copy.deepcopy(config["generators"]["tiny"])
    config["scorers"]["one_to_normal"]["generator"] = "winclip"
    with pytest.raises(ConfigError, match="name of a scorer instance"):
        _checked(config)


def test_a_transfer_pair_must_name_a_scorer_that_reads_the_generator():
    config = default_config()
    config["scorers"]["winclip_pool"] = {"method": "winclip", "backbone": "vitb16plus", "settings": ["k1"]}
    config["scorers"]["one_to_normal"]["transfer"] = [{"without": "winclip", "with": "winclip_pool"}]
    with pytest.raises(ConfigError, match="does not read generator 'tiny'"):
        _checked(config)
    config["scorers"]["winclip_pool"]["generator"] = "tiny"
    _checked(config)


def test_run_settings_reach_no_stage_params_but_reach_the_job_from_the_config():
    entry = {"base_model": "tiny", "class_images": {"batch_size": 3}, "pool": {"batch_size": 5, "steps": 7},
             "dreambooth": {"log_every": 2, "gradient_checkpointing": True, "batch_size": 2}}
    params = generator_params(entry, "generators.tiny")
    # what numbers depend on stays in: DreamBooth's batch size is images per training step, not per call
    assert stage_params(params, "dreambooth")["dreambooth"]["batch_size"] == 2
    assert stage_params(params, "pool")["pool"]["steps"] == 7
    faster = generator_params({**entry, "class_images": {"batch_size": 64}, "pool": {"batch_size": 1, "steps": 7},
                               "dreambooth": {"log_every": 9, "gradient_checkpointing": False, "batch_size": 2}}, "generators.tiny")
    for stage in STAGES:
        assert stage_params(params, stage) == stage_params(faster, stage), stage  # equal params: nothing reruns
        job = job_params(stage_params(params, stage), {"generators": {"tiny": entry}}, "tiny", stage)
        expected = {key: value for key, value in params.items() if key not in set(STAGES) - {stage} and key not in WIRING_KEYS}
        if stage == "dreambooth":  # a full fine-tune's job gets no LoRA key (OTHER_MODE_KEYS)
            expected["dreambooth"] = {key: value for key, value in params["dreambooth"].items() if key not in ("lora_learning_rate", "lora_rank")}
        assert job == expected, stage
    assert "batch_size" not in params["personalization"]  # one pipeline call per test image: nothing to set
