"""Prompt embeddings are encoded once per backbone identity and prompt list."""

import torch

from fsad.text.cache import cached_text_encoder


def counting_encoder(calls):
    def encode(prompts):
        calls.append(list(prompts))
        return torch.arange(len(prompts) * 3, dtype=torch.float32).reshape(len(prompts), 3)

    return encode


def test_the_same_prompts_on_the_same_backbone_are_encoded_once(tmp_path):
    calls = []
    first = cached_text_encoder(counting_encoder(calls), tmp_path, ["spec", "random"])(["a", "b"])
    again = cached_text_encoder(counting_encoder(calls), tmp_path, ["spec", "random"])(["a", "b"])
    assert calls == [["a", "b"]]
    assert torch.equal(first, again)


def test_other_weights_or_prompts_are_encoded_anew(tmp_path):
    calls = []
    cached_text_encoder(counting_encoder(calls), tmp_path, ["spec", "random"])(["a"])
    cached_text_encoder(counting_encoder(calls), tmp_path, ["spec", "laion400m_e31"])(["a"])
    cached_text_encoder(counting_encoder(calls), tmp_path, ["spec", "random"])(["a", "b"])
    assert len(calls) == 3
