"""FAPrompt / AnomalyCLIP prompts on the tiny CLIP: CAP's shared tokens and K prompts, AnomalyCLIP's own tokens,
deep prompts per text block, DAP's bias, and the text forward through open_clip's frozen blocks."""

from __future__ import annotations

import open_clip
import pytest
import torch

from fsad.backbones.loading import load_backbone
from fsad.scorers.faprompt.prompt_learner import PromptConfig, PromptLearner, TextTower

SPEC = {"arch": "fsad-tiny", "pretrained": "none", "image_size": 112}


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(SPEC, "cpu")


@pytest.fixture(scope="module")
def tower(backbone):
    return TextTower(backbone.model, backbone.tokenizer)


def learner(tower, seed=0, **config):
    torch.manual_seed(seed)
    return PromptLearner(PromptConfig(**config), tower)


def word_embeddings(backbone, text: str) -> torch.Tensor:
    """Embeddings of ``text``'s tokens and the end-of-text token (no start token), from the tokenizer directly."""
    tokens = backbone.tokenizer([text])[0]
    end = int(tokens.argmax())
    return backbone.model.token_embedding(tokens[1 : end + 1]).detach()


def test_cap_abnormal_prompts_are_k_prompts_on_the_normal_prompts_own_tokens(backbone, tower):
    prompts = learner(tower)
    width = backbone.model.token_embedding.embedding_dim
    normal, abnormal = prompts.normal_prompt(), prompts.abnormal_prompts()
    assert normal.shape == (1, 77, width) and abnormal.shape == (10, 77, width)
    sos = backbone.model.token_embedding(torch.tensor([49406])).detach()[0]
    torch.testing.assert_close(normal[0, 0], sos)
    torch.testing.assert_close(normal[0, 1:6], prompts.normal_context)
    words = word_embeddings(backbone, "object.")
    torch.testing.assert_close(normal[0, 6 : 6 + len(words)], words)
    damaged = word_embeddings(backbone, "damaged object.")
    for k in range(10):
        torch.testing.assert_close(abnormal[k, 0], sos)
        torch.testing.assert_close(abnormal[k, 1:6], prompts.normal_context)  # the same tensor in every prompt
        torch.testing.assert_close(abnormal[k, 6:8], prompts.abnormal_context[k])
        torch.testing.assert_close(abnormal[k, 8 : 8 + len(damaged)], damaged)
    assert prompts.abnormal_context.shape == (10, 2, width)
    assert not torch.allclose(prompts.abnormal_context[0], prompts.abnormal_context[1])
    assert int(prompts.normal_eot) == 5 + 1 + 2 and int(prompts.abnormal_eot) == 7 + 1 + 3


def test_the_shared_normal_tokens_learn_from_the_abnormal_prompts_too(tower):
    prompts = learner(tower)
    prompts.encode_abnormal().sum().backward()
    assert prompts.normal_context.grad is not None and prompts.normal_context.grad.abs().sum() > 0
    assert prompts.abnormal_context.grad.abs().sum() > 0


def test_without_cap_the_abnormal_prompt_has_its_own_tokens_as_anomalyclip(tower):
    prompts = learner(tower, compound=False, normal_tokens=12, prior=False)
    abnormal = prompts.abnormal_prompts()
    assert abnormal.shape[0] == 1 and prompts.abnormal_context.shape == (1, 12, tower.width)
    torch.testing.assert_close(abnormal[0, 1:13], prompts.abnormal_context[0])
    assert not torch.allclose(abnormal[0, 1:13], prompts.normal_context)
    assert prompts.prior_net is None
    prompts.encode_abnormal().sum().backward()
    assert prompts.normal_context.grad is None  # nothing shared


def test_dap_bias_is_added_to_every_abnormal_token_of_each_image_and_nothing_else(tower):
    prompts = learner(tower)
    bias = torch.randn(3, tower.width)
    adapted, static = prompts.abnormal_prompts(bias), prompts.abnormal_prompts()
    assert adapted.shape == (3, 10, 77, tower.width)
    for b in range(3):
        torch.testing.assert_close(adapted[b, :, 6:8], static[:, 6:8] + bias[b])
        torch.testing.assert_close(adapted[b, :, :6], static[:, :6])
        torch.testing.assert_close(adapted[b, :, 8:], static[:, 8:])
    assert prompts.encode_abnormal(bias).shape == (3, 10, tower.embed_dim)


def test_dap_prior_network_maps_k_patch_tokens_to_a_token_sized_bias(tower):
    prompts = learner(tower, prior_patches=10)
    layers = [m for m in prompts.prior_net if isinstance(m, torch.nn.Linear)]
    # FAPrompt's patch_meta_net: k*D -> k*D/16 -> W (7680 -> 480 -> 768 on ViT-L-14); here D = 32, W = 64
    assert [(m.in_features, m.out_features) for m in layers] == [(320, 20), (20, 64)]
    assert prompts.prior(torch.randn(4, 10, 32)).shape == (4, 64)


def tiny_clip(text_layers: int) -> torch.nn.Module:
    return open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": text_layers},
    )


@pytest.mark.parametrize(("text_layers", "depth", "expected"), [(2, 9, 1), (12, 9, 8), (12, 20, 11), (12, 1, 0)])
def test_deep_prompts_one_per_text_block_from_the_second_up_to_the_depth(backbone, text_layers, depth, expected):
    prompts = learner(TextTower(tiny_clip(text_layers), backbone.tokenizer), deep_depth=depth, deep_tokens=4)
    if expected == 0:
        assert prompts.deep_prompts is None and "deep_prompts" not in prompts.state_dict()
    else:
        assert prompts.deep_prompts.shape == (expected, 4, 64)


def reference_forward(model, embeddings, eot, deep):
    """The text forward written out: all 77 positions, block i >= 1 takes deep[i - 1] at positions 1..t first."""
    x = embeddings + model.positional_embedding
    for index, block in enumerate(model.transformer.resblocks):
        if 1 <= index <= len(deep):
            x = x.clone()
            x[:, 1 : 1 + deep.shape[1]] = deep[index - 1]
        x = block(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    return x[torch.arange(len(x)), eot] @ model.text_projection


def test_the_text_forward_matches_open_clip_without_and_a_written_out_loop_with_deep_prompts(backbone):
    model = tiny_clip(4).eval()
    tower = TextTower(model, backbone.tokenizer)
    tokens = backbone.tokenizer(["a photo of a damaged object.", "X X X X X object."])
    embeddings = model.token_embedding(tokens).detach()
    eot = tokens.argmax(dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(tower.encode(embeddings, eot), model.encode_text(tokens), rtol=1e-5, atol=1e-5)
        deep = torch.randn(3, 4, 64)
        torch.testing.assert_close(tower.encode(embeddings, eot, deep), reference_forward(model, embeddings, eot, deep), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(tower.encode(embeddings, eot, deep), tower.encode(embeddings, eot, torch.randn_like(deep)))


def test_learned_prompts_are_reproducible_from_the_seed(tower):
    first, again, other = learner(tower, seed=3), learner(tower, seed=3), learner(tower, seed=4)
    for name, value in first.state_dict().items():
        torch.testing.assert_close(value, again.state_dict()[name])
    assert not torch.allclose(first.normal_context, other.normal_context)
    assert abs(float(first.normal_context.detach().std()) - 0.02) < 0.01  # N(0, 0.02) as both codes
