"""DevPrompt's prompt learner on the tiny open_clip model, its text-tower forward, and PromptAD's losses by hand."""

import math

import pytest
import torch

from fsad.backbones.loading import load_backbone
from fsad.scorers.devprompt.losses import abnormal_alignment_loss, anchor, triplet_loss, visual_to_text_loss
from fsad.scorers.devprompt.prompt_learner import PromptLearner
from fsad.scorers.devprompt.prompt_texts import CLASS_ABNORMAL_STATES, abnormal_states, prompt_texts
from fsad.scorers.devprompt.torch_model import textual_anomaly
from fsad.text.learned_prompts import encode_token_embeddings, pooled_positions, tokenize_with_placeholders

TINY = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}


@pytest.fixture(scope="module")
def tiny():
    backbone = load_backbone(TINY, "cpu")
    backbone.model.requires_grad_(False)
    return backbone


def _learner(tiny, n_prompts=2, n_learned=3):
    texts = prompt_texts("metal nut", ["normal {}"], ["damaged {}", "{} with flaw"], 4, n_prompts, 1, n_learned)
    tokens = [tokenize_with_placeholders(tiny.tokenizer, t, [("X", 1, 4)]) for t in (texts.normal, texts.handcrafted)]
    learned = tokenize_with_placeholders(tiny.tokenizer, texts.learned, [("X", 1, 4), ("Y", 5, 1)])
    return texts, PromptLearner(tiny.model.token_embedding, *tokens, learned, 4, n_prompts, 1, n_learned, torch.Generator().manual_seed(0))


def test_prompt_groups_pair_every_state_with_every_context_set():
    texts = prompt_texts("bottle", ["normal {}"], ["damaged {}", "{} with flaw"], 2, 2, 1, 3)
    assert texts.normal == ["X X normal bottle."] * 2
    assert texts.handcrafted == ["X X damaged bottle."] * 2 + ["X X bottle with flaw."] * 2
    assert texts.learned == ["X X Y bottle."] * 6
    assert abnormal_states(["defective {}"], "bottle", True) == ["defective {}", *CLASS_ABNORMAL_STATES["bottle"]]
    assert abnormal_states(["defective {}"], "textile", True) == abnormal_states(["defective {}"], "bottle", False) == ["defective {}"]


def test_token_embedding_forward_equals_open_clips_encode_text(tiny):
    tokens = tiny.tokenizer(["X X X X normal metal nut.", "a photo of a damaged metal nut with a long scratch."])
    ours = encode_token_embeddings(tiny.model, tiny.model.token_embedding(tokens), pooled_positions(tiny.model, tokens))
    torch.testing.assert_close(ours, tiny.model.encode_text(tokens), rtol=1e-5, atol=1e-6)


def test_the_learner_puts_the_shared_context_at_the_placeholders_and_pairs_learned_prompts(tiny):
    texts, learner = _learner(tiny)
    out = learner()
    embedded = {name: tiny.model.token_embedding(getattr(learner, f"{name}_tokens")) for name in ("normal", "handcrafted", "learned")}
    for p in range(2):  # prompt i of a state-major group uses context set i % n_prompts
        torch.testing.assert_close(out.normal[p, 1:5], learner.normal_ctx[p])
        torch.testing.assert_close(out.handcrafted[2 + p, 1:5], learner.normal_ctx[p])
    for a in range(3):  # learned prompt a * n_prompts + p: abnormal context a after normal context p
        for p in range(2):
            torch.testing.assert_close(out.learned[a * 2 + p, 1:5], learner.normal_ctx[p])
            torch.testing.assert_close(out.learned[a * 2 + p, 5], learner.abnormal_ctx[a, 0])
    torch.testing.assert_close(out.normal[:, 5:], embedded["normal"][:, 5:])  # suffix and padding untouched
    torch.testing.assert_close(out.learned[:, :1], embedded["learned"][:, :1])  # start token untouched
    torch.testing.assert_close(out.learned[:, 6:], embedded["learned"][:, 6:])


def test_gradients_reach_the_context_vectors_and_never_the_frozen_model(tiny):
    _, learner = _learner(tiny)
    out = learner()
    encode_token_embeddings(tiny.model, out.learned, pooled_positions(tiny.model, out.learned_tokens)).sum().backward()
    assert learner.normal_ctx.grad.abs().sum() > 0 and learner.abnormal_ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.model.parameters())


def test_placeholders_that_are_not_one_token_each_are_refused(tiny):
    with pytest.raises(ValueError, match="one token per word"):
        tokenize_with_placeholders(tiny.tokenizer, ["X X X normal bottle."], [("X", 1, 4)])


def test_promptad_losses_by_hand():
    patch = torch.tensor([[[1.0, 0.0]]])  # one image, one patch
    normal, abnormal = torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 1.0]])
    # logits [1, 0] * 2, target normal: -log(e^2 / (e^2 + 1)) = log(1 + e^-2)
    assert float(visual_to_text_loss(patch, normal, abnormal, 2.0)) == pytest.approx(math.log(1 + math.exp(-2)))
    # |z - positive|^2 = 2, |z - negative|^2 = 0: relu(2 - 0 + 0) = 2 (distance over channels, per patch)
    assert float(triplet_loss(patch, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))) == pytest.approx(2.0)
    assert float(triplet_loss(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))) == pytest.approx(1.0)
    # normalised handcrafted (1, 0), (0, 1) average (0.5, 0.5); learned (0, 1): |(0.5, -0.5)|^2 = 0.5
    assert float(abnormal_alignment_loss(torch.tensor([[2.0, 0.0], [0.0, 3.0]]), torch.tensor([[0.0, 5.0]]))) == pytest.approx(0.5)
    # anchors: the mean of un-normalised embeddings, then normalised
    torch.testing.assert_close(anchor(torch.tensor([[3.0, 0.0], [0.0, 1.0]])), torch.tensor([3.0, 1.0]) / math.sqrt(10))


def test_promptad_textual_score_is_the_softmax_of_the_abnormal_prompt():
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cosines (0.6, 0.8) scaled by 3: softmax -> e^2.4 / (e^1.8 + e^2.4)
    expected = math.exp(2.4) / (math.exp(1.8) + math.exp(2.4))
    assert float(textual_anomaly(torch.tensor([6.0, 8.0]), prototypes, 3.0)) == pytest.approx(expected)


def test_the_default_promptad_instance_is_promptad_in_full_with_its_own_prompts():
    """PromptAD's prompt texts (ad_prompts.py: normal "{}", state_anomaly), its V-V tokens through all 12 blocks of
    ViT-B-16-plus-240, the memory of the states inside blocks 4 and 9 and the n_pro 3 image-level model."""
    from pathlib import Path

    import yaml

    from fsad.scorers.devprompt.prompt_texts import PROMPTAD_ABNORMAL_STATES

    root = Path(__file__).resolve().parents[2]
    for path in (root / "config" / "config.yaml", root / "config" / "benchmarks" / "devprompt.yaml"):
        promptad = yaml.safe_load(path.read_text())["scorers"]["promptad"]
        assert promptad["normal_states"] == ["{}"] and promptad["abnormal_states"] == list(PROMPTAD_ABNORMAL_STATES), path
        assert promptad.get("class_states", True) and promptad["deviation_loss"] is False, path
        assert (promptad["vv_block"], promptad["memory_blocks"], promptad["cls_prompts"]) == (12, [4, 9], 3), path
