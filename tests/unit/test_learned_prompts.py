"""fsad.text.learned_prompts: the text forward from token embeddings on every open_clip text-tower layout, its deep
prompts, the pooled positions, and the learned tensors' initial values."""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip.transformer import Transformer

from fsad.text.learned_prompts import (
    INIT_STD,
    PLACEHOLDER,
    check_text_tower,
    encode_shared_prefix,
    encode_token_embeddings,
    learned_tensor,
    pooled_positions,
    tokenize_with_placeholders,
)

WIDTH, LAYERS = 64, 3
TOKENIZER = open_clip.get_tokenizer("ViT-B-32")
PROMPTS = ["a photo of a damaged object.", "X X X X X object.", "X X normal metal nut."]


def clip(seq_first: bool = False, **text_cfg) -> torch.nn.Module:
    """A small random open_clip CLIP; ``seq_first`` swaps in a sequence-first text transformer with the same weights."""
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": WIDTH, "heads": 2, "layers": LAYERS, **text_cfg},
    ).eval()
    if seq_first:
        transformer = Transformer(WIDTH, LAYERS, 2, batch_first=False)
        transformer.load_state_dict(model.transformer.state_dict())
        model.transformer = transformer.eval()
    return model.requires_grad_(False)


TOWERS = {
    "argmax": {},
    "sequence_first": {"seq_first": True},
    "eos": {"pool_type": "eos", "eos_id": 49407},
    "last_without_causal_mask": {"pool_type": "last", "no_causal_mask": True},
}


@pytest.mark.parametrize("tower", TOWERS.values(), ids=TOWERS.keys())
def test_the_forward_from_token_embeddings_equals_open_clips_encode_text(tower):
    model = clip(**tower)
    tokens = TOKENIZER(PROMPTS)
    with torch.no_grad():
        ours = encode_token_embeddings(model, model.token_embedding(tokens), pooled_positions(model, tokens))
        torch.testing.assert_close(ours, model.encode_text(tokens), rtol=1e-5, atol=1e-5)


def _prompts_with_context(model: torch.nn.Module, contexts: torch.Tensor, assignment: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """PromptAD-like prompts: the start token, then context set ``assignment[i]`` (4 learned rows), then the text."""
    texts = ["X X X X damaged object.", "X X X X object with a long scratch on it.", "X X X X normal metal nut.", "X X X X flaw."]
    tokens = TOKENIZER([texts[i % len(texts)] for i in range(len(assignment))])
    embedded = model.token_embedding(tokens)
    embedded = torch.cat([embedded[:, :1], contexts[assignment], embedded[:, 5:]], dim=1)
    return embedded, tokens


@pytest.mark.parametrize("tower", [TOWERS["argmax"], TOWERS["sequence_first"]], ids=["batch_first", "sequence_first"])
def test_shared_prefixes_give_the_padded_forward_and_its_gradients(tower):
    model = clip(**tower)
    contexts = torch.randn(2, 4, WIDTH, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    # two context sets, interleaved: a prompt given another set's prefix would differ from the padded forward
    assignment = [0, 0, 1, 0, 1, 1, 0]
    embedded, tokens = _prompts_with_context(model, contexts, assignment)
    padded = encode_token_embeddings(model, embedded, pooled_positions(model, tokens))
    weights = torch.randn(padded.shape, generator=torch.Generator().manual_seed(3))
    (padded * weights).sum().backward()
    expected_grad, contexts.grad = contexts.grad.clone(), None
    embedded, tokens = _prompts_with_context(model, contexts, assignment)
    shared = encode_shared_prefix(model, embedded, pooled_positions(model, tokens), prefix_length=5)
    (shared * weights).sum().backward()
    torch.testing.assert_close(shared, padded, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(contexts.grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_a_pooled_position_inside_the_shared_prefix_is_refused():
    model = clip()
    tokens = TOKENIZER(["X X X X damaged object."])
    with pytest.raises(ValueError, match="after the shared prefix of 12 tokens"):
        encode_shared_prefix(model, model.token_embedding(tokens), pooled_positions(model, tokens), prefix_length=12)


def test_deep_prompts_give_the_same_text_embeddings_batch_first_and_sequence_first():
    tokens = TOKENIZER(PROMPTS)
    deep = torch.randn(LAYERS - 1, 4, WIDTH, generator=torch.Generator().manual_seed(1))
    encoded = []
    for model in (clip(), clip(seq_first=True)):
        with torch.no_grad():
            encoded.append(encode_token_embeddings(model, model.token_embedding(tokens), tokens.argmax(-1), deep))
    torch.testing.assert_close(encoded[0], encoded[1], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model = clip()
        assert not torch.allclose(encoded[0], encode_token_embeddings(model, model.token_embedding(tokens), tokens.argmax(-1)))


def test_pooled_positions_follow_the_towers_pooling():
    tokens = TOKENIZER(PROMPTS)
    end = tokens.argmax(-1)
    assert torch.equal(pooled_positions(clip(), tokens), end)
    assert torch.equal(pooled_positions(clip(pool_type="eos", eos_id=49407), tokens), end)
    assert pooled_positions(clip(pool_type="last", no_causal_mask=True), tokens).tolist() == [76, 76, 76]
    model = clip()
    model.text_pool_type = "none"
    with pytest.raises(RuntimeError, match="pools one token"):
        pooled_positions(model, tokens)


def test_a_model_without_a_clip_text_transformer_is_refused_by_name():
    with pytest.raises(RuntimeError, match="no 'token_embedding'"):
        check_text_tower(torch.nn.Linear(2, 2))


def test_placeholders_are_one_token_each_where_the_learner_puts_its_tensors():
    tokens = tokenize_with_placeholders(TOKENIZER, ["X X X normal bottle."], [(PLACEHOLDER, 1, 3)])
    assert tokens.shape == (1, 77) and len(set(tokens[0, 1:4].tolist())) == 1
    with pytest.raises(ValueError, match="one token per word at positions 1..3"):
        tokenize_with_placeholders(TOKENIZER, ["X X normal bottle."], [(PLACEHOLDER, 1, 3)])


def test_learned_tensors_are_seeded_draws_of_n_0_init_std():
    first = learned_tensor(4, 2, 768, generator=torch.Generator().manual_seed(3))
    assert isinstance(first, torch.nn.Parameter) and first.shape == (4, 2, 768)
    assert torch.equal(first, learned_tensor(4, 2, 768, generator=torch.Generator().manual_seed(3)))
    assert abs(float(first.detach().std()) - INIT_STD) < 0.002
    torch.manual_seed(5)
    from_global = learned_tensor(10, 64)
    torch.manual_seed(5)
    assert torch.equal(from_global, torch.nn.init.normal_(torch.empty(10, 64), std=INIT_STD))  # AnomalyCLIP / FAPrompt


@pytest.mark.parametrize("shape", [(1, 4, 64), (4, 1, 64), (1, 4, 640), (2, 3, 768), (4, 1, 1024)])
def test_learned_tensors_are_promptads_context_vectors_to_the_bit(shape):
    # PromptAD draws torch.randn(...) * 0.02; for tensors of 16 elements or more torch's normal_ kernel gives the same bits
    # (every context tensor spans a text width), which keeps DevPrompt's seeded fits as they were.
    expected = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * INIT_STD
    assert torch.equal(learned_tensor(*shape, generator=torch.Generator().manual_seed(0)), expected)
