"""Prompt ensembles: the paper's and anomalib's lists, and how prompt embeddings are averaged."""

import pytest
import torch

from fsad.text.class_names import class_name
from fsad.text.prompt_ensembles import PRESETS, average_embeddings, prompt_ensemble, text_embeddings
from fsad.text.prompt_params import class_text_embeddings, prompt_temperature


def test_paper_preset_has_7_normal_and_4_anomalous_states_times_22_distinct_templates():
    normal, anomalous = prompt_ensemble("bottle", "paper")
    assert len(normal) == 7 * 22 and len(anomalous) == 4 * 22
    assert len(set(PRESETS["paper"].templates)) == 22
    assert "a cropped photo of a flawless bottle." in normal
    assert "a photo of the bottle with defect for anomaly detection." in anomalous


def test_anomalib_preset_is_anomalibs_prompt_list_in_its_order():
    from anomalib.models.image.winclip.prompting import create_prompt_ensemble

    assert prompt_ensemble("metal_nut", "anomalib") == tuple(map(list, create_prompt_ensemble("metal_nut")))
    templates = PRESETS["anomalib"].templates
    assert len(templates) == 21 and templates.count("a jpeg corrupted photo of the {}.") == 2
    assert "a cropped photo of a {}." not in templates


def test_raw_mean_averages_unnormalised_and_normalised_mean_renormalises():
    embeddings = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    assert torch.equal(average_embeddings(embeddings, "raw_mean"), torch.tensor([1.5, 0.5]))
    normalised = average_embeddings(embeddings, "normalised_mean")
    assert torch.allclose(normalised, torch.tensor([1.0, 1.0]) / 2**0.5)
    with pytest.raises(ValueError, match="text_normalisation"):
        average_embeddings(embeddings, "median")


def test_text_embeddings_are_normal_then_anomalous_and_follow_the_preset_averaging():
    seen = []

    def encode(prompts):
        seen.append(list(prompts))
        # embedding norm grows with the prompt length, so raw and normalised means differ
        return torch.tensor([[float(len(p)), 1.0 if "damage" in p or "flaw" in p else 0.0] for p in prompts])

    raw = text_embeddings(encode, "screw", "anomalib")
    assert raw.shape == (2, 2)
    assert seen == list(prompt_ensemble("screw", "anomalib"))
    assert torch.allclose(raw[0], encode(seen[0]).mean(0))
    paper = text_embeddings(encode, "screw", "paper")
    assert torch.allclose(paper.norm(dim=-1), torch.ones(2))
    assert torch.allclose(text_embeddings(encode, "screw", "paper", "raw_mean")[1], encode(seen[-1]).mean(0))


def test_the_prompt_parameters_give_the_presets_class_embeddings_and_temperature():
    encode = lambda prompts: torch.tensor([[float(len(p)), float("flaw" in p)] for p in prompts])  # noqa: E731
    params = {"prompt_preset": "anomalib", "temperature": None, "text_normalisation": "normalised_mean"}
    assert torch.equal(class_text_embeddings(params, encode, "screw", torch.device("cpu")), text_embeddings(encode, "screw", "anomalib", "normalised_mean"))
    assert prompt_temperature(params) == 0.07 and prompt_temperature({**params, "prompt_preset": "paper"}) == 0.01
    assert prompt_temperature({**params, "temperature": 0.5}) == 0.5


def test_unknown_preset_names_the_parameter():
    with pytest.raises(ValueError, match="prompt_preset"):
        prompt_ensemble("bottle", "winclip-v2")


@pytest.mark.parametrize(
    "category, readable",
    [
        ("metal_nut", "metal nut"),
        ("pcb1", "printed circuit board"),
        ("pcb4", "printed circuit board"),
        ("macaroni2", "macaroni"),
        ("pipe_fryum", "pipe fryum"),
        ("chewinggum", "chewing gum"),
        ("bottle", "bottle"),
        ("bracket_black", "bracket black"),
    ],
)
def test_readable_class_names_follow_promptad_then_underscores_to_spaces(category, readable):
    assert class_name(category) == readable


def test_verbatim_class_name_keeps_the_category_as_anomalib_does():
    assert class_name("metal_nut", "verbatim") == "metal_nut"
    with pytest.raises(ValueError, match="class_name_mode"):
        class_name("metal_nut", "fancy")
