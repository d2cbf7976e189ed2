"""The named prompt sets of the img2img stages (paper figure 5, table 5, the appendix's prompt study) and their counts."""

from __future__ import annotations

import pytest

from fsad.diffusion.config import generator_params, stage_params, stage_prompts
from fsad.diffusion.prompt_sets import PHYSICAL, prompt_templates


def test_the_physical_set_is_figure_5s_ten_templates_in_order():
    assert len(PHYSICAL) == 10 and len(set(PHYSICAL)) == 10
    assert PHYSICAL[0] == "a photo of a small normal {}." and PHYSICAL[-1] == "a low resolution photo of a normal {}."
    assert [t.split(" photo")[0] for t in PHYSICAL] == ["a", "a", "a bright", "a dark", "a blurry", "a bad", "a good", "a cropped", "a close-up", "a low resolution"]


def test_a_prompt_count_keeps_the_first_prompts_of_the_set():
    assert prompt_templates("physical", 1, "x {}") == ["a photo of a small normal {}."]
    assert prompt_templates("physical", 5, "x {}") == list(PHYSICAL[:5])
    assert prompt_templates(["a {}", "b {}", "c {}"], 2, "x {}") == ["a {}", "b {}"]
    assert prompt_templates("state", None, "x {}") == [f"a photo of normal {{}} without {s}" for s in ("flaw", "defect", "damage")]


def test_the_two_readings_of_without_text():
    assert prompt_templates("empty", None, "a photo of normal {}") == [""]
    assert prompt_templates("instance", None, "a photo of normal {}") == ["a photo of normal {}"]


def test_a_count_above_the_set_or_an_unknown_set_fails_at_config_time():
    with pytest.raises(ValueError, match=r"generators.g.personalization: prompt_count 4 exceeds the 3 prompts"):
        generator_params({"personalization": {"prompts": "state", "prompt_count": 4}}, "generators.g")
    with pytest.raises(ValueError, match="unknown prompt set"):
        prompt_templates("fancy", None, "{}")


def test_the_pool_defaults_to_the_personalization_process_with_the_state_prompts():
    params = generator_params({}, "generators.g")
    assert params["pool"]["image_to_image_process"] == "personalization" and params["pool"]["candidates_per_prompt"] == 1
    assert stage_prompts(params, "pool") == stage_prompts(params, "personalization")
    # the pool job sees its prompt set; a changed personalization prompt set is not among the pool's params
    changed = generator_params({"personalization": {"prompts": "physical"}}, "generators.g")
    assert stage_params(changed, "pool") == stage_params(params, "pool") and stage_params(changed, "personalization") != stage_params(params, "personalization")
